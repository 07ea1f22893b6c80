"""Package environment builds as the tag status shows them, with a local package index (no
network): a wheel of a small package, held back until the test lets it go, and one of the
cloudpickle the environments need, made from the installed copy."""

from __future__ import annotations

import base64
import hashlib
import http.server
import re
import threading
import zipfile
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Server, submit, wait_for

PROBE = "hmq-probe"


class Wheelhouse:
    """A find-links page over HTTP serving wheels from a directory; the probe package's wheel
    is sent only once :meth:`release` is called, so its environment's build lasts until then."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.gate = threading.Event()
        wheels = sorted(p.name for p in directory.glob("*.whl"))
        page = "".join(f'<a href="{name}">{name}</a><br>' for name in wheels).encode()
        gate, root = self.gate, directory

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/")
                if name and name not in wheels:
                    self.send_error(404)
                    return
                if name.startswith("hmq_probe-"):
                    gate.wait(timeout=300)
                body = page if not name else (root / name).read_bytes()
                self.send_response(200)
                self.send_header("content-type", "text/html" if not name else "application/octet-stream")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def _wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> None:
    """A pure-Python wheel of ``files`` (path in site-packages -> content)."""
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hmq-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)


def _installed_cloudpickle(directory: Path) -> None:
    dist = distribution("cloudpickle")
    files = {
        str(f): Path(str(f.locate())).read_bytes()
        for f in dist.files or []
        if not str(f).startswith(("..", "cloudpickle-")) and "__pycache__" not in str(f) and str(f).endswith(".py")
    }
    _wheel(directory, "cloudpickle", dist.version, files)


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Iterator[Wheelhouse]:
    directory = tmp_path / "wheelhouse"
    directory.mkdir()
    _wheel(directory, PROBE, "1.0", {"hmq_probe/__init__.py": b"VALUE = 42\n"})
    _installed_cloudpickle(directory)
    house = Wheelhouse(directory)
    yield house
    house.close()


def probe(seconds):
    import time

    import hmq_probe

    time.sleep(seconds)
    return hmq_probe.VALUE


def _registered(proc: Any) -> None:
    wait_for(lambda: "registered as" in proc.log_path.read_text(), what="the worker to register")


def _pull(tag: Any) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=180, interval=0.2, what=f"tag {tag.name} to finish")


@pytest.mark.slow
def test_the_tag_status_names_the_environment_a_worker_builds_for_it(
    server: Server, tmp_path: Path, wheelhouse: Wheelhouse
) -> None:
    user = server.user()
    index = ("--pip-arg=--no-index", f"--pip-arg=--find-links={wheelhouse.url}")
    _registered(server.start_worker(tmp_path, extra=index))
    tag = submit(user, probe, [(0,), (10,)], packages=[PROBE])
    building = wait_for(
        lambda: user.get_tag_status(tag.name)["warnings"], timeout=120, what="the build to show in the tag status"
    )
    assert len(building) == 1 and re.fullmatch(rf"building {PROBE} env on 1 worker \(for \d+ s\)", building[0])
    status = user.get_tag_status(tag.name)  # one reading: a task may be claimed between two
    assert status["pending"] + status["running"] == 2
    other = submit(user, probe, [(0,)])  # no packages: nothing is said about the build
    assert user.get_tag_status(other.name)["warnings"] == []

    wheelhouse.release()
    wait_for(lambda: user.get_tag_status(tag.name)["completed"] == 1, timeout=120, what="the first call")
    status = wait_for(lambda: (s := user.get_tag_status(tag.name))["warnings"] == [] and s, what="the build to end")
    assert status["completed"] + status["running"] + status["pending"] == 2  # the second call still runs
    _pull(tag)
    assert list(tag.results) == [42, 42]
    _pull(other)


@pytest.mark.slow
def test_a_failed_build_fails_its_tasks_with_the_pip_error(
    server: Server, tmp_path: Path, wheelhouse: Wheelhouse
) -> None:
    user = server.user()
    server.start_worker(tmp_path, extra=("--pip-arg=--no-index", f"--pip-arg=--find-links={wheelhouse.url}"))
    tag = submit(user, probe, [(0,)], packages=["hmq-absent==1.0"])
    _pull(tag)
    (error,) = list(tag.errors)
    assert "installing hmq-absent==1.0 failed on the worker (exit 1)" in error
    assert "No matching distribution found for hmq-absent==1.0" in error
    status = user.get_tag_status(tag.name)
    assert (status["failed"], status["warnings"]) == (1, [])
