"""The sandbox around executors, tried as a hostile user would, on real workers against a real API.

Tasks report what they saw over loopback to a ledger in the test (a sandboxed task cannot write
into the test's files); the test checks the host side itself (files, /proc).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import pytest

import hmq
from tests.helpers import Ledger, Server, stop_process, submit, tell, wait_for

BWRAP = ("--isolation", "bwrap")


@pytest.fixture
def bwrap() -> str:
    """bubblewrap on PATH; skipped without it unless HMQ_REQUIRE_BWRAP=1 (then it fails)."""
    path = shutil.which("bwrap")
    if path is None:
        if os.environ.get("HMQ_REQUIRE_BWRAP") == "1":
            pytest.fail("HMQ_REQUIRE_BWRAP=1 but bubblewrap (bwrap) is not on PATH")
        pytest.skip("bubblewrap (bwrap) is not installed")
    return path


def _pull(tag: hmq.Tag, timeout: float = 60) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=timeout, interval=0.1, what=f"tag {tag.name} to finish")


def _processes_with(marker: str) -> list[int]:
    """Live processes on the host with ``marker`` in their command line."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(name))
        except OSError:
            continue
    return found


def test_a_task_can_read_no_secret_and_write_no_environment(
    server: Server, tmp_path: Path, ledger: Ledger, bwrap: str
) -> None:
    def snoop(port, paths, targets):
        import errno
        import os

        found = []
        try:  # a hostile task looks for the credentials in its parent's command line
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as fh:
                found = [a.decode() for a in fh.read().split(b"\0") if a.endswith(b".json")]
        except OSError:
            pass
        attempts = {}
        for path in [*paths, *found]:
            try:
                with open(path, "rb") as fh:
                    attempts["read " + path] = "ok: " + fh.read(40).decode(errors="replace")
            except OSError as exc:
                attempts["read " + path] = errno.errorcode[exc.errno]
        for directory in [*targets, "."]:  # "." (its own scratch directory) must work
            try:
                with open(os.path.join(directory, "hmq-sandbox-probe.txt"), "w") as fh:
                    fh.write("written by a task")
                attempts["write " + directory] = "ok"
            except OSError as exc:
                attempts["write " + directory] = errno.errorcode[exc.errno]
        private = sorted(k for k in os.environ if k.startswith(("HMQ_", "AWS_")))
        tell(port, "snoop", attempts=attempts, found=found, private=private, home=os.environ.get("HOME"))

    home = tmp_path / "hmq-home"  # what $HMQ_HOME holds on a host that ran `hmq up`
    secrets = [home / "admin.key", home / "client.json", home / "server" / "settings.json", home / "index.db"]
    for path in secrets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"secret of {path.name}")
        path.chmod(0o644)  # readable by anyone: only the sandbox keeps them from the task
    if server.settings.database_url.startswith("sqlite:///"):
        secrets.append(Path(server.settings.database_url[len("sqlite:///") :]))  # the API's real index
    proc = server.start_worker(tmp_path, extra=BWRAP, env={"HMQ_HOME": str(home)})
    secrets.append(proc.credentials)
    assert all(p.read_bytes() for p in secrets)  # they exist and can be read outside the sandbox
    paths = sysconfig.get_paths()
    targets = sorted({paths["purelib"], paths["platlib"], paths["stdlib"], sys.prefix, sys.base_prefix})

    tag = submit(server.user(), snoop, [(ledger.port, [str(p) for p in secrets], targets)])
    _pull(tag)
    assert list(tag.errors) == [None]
    (report,) = ledger.wait("snoop")
    assert report["found"] == []  # the worker's command line is outside the sandbox
    reads = {a: v for a, v in report["attempts"].items() if a.startswith("read ")}
    assert reads == {"read " + str(p): "ENOENT" for p in secrets}  # not even there
    writes = {a: v for a, v in report["attempts"].items() if a.startswith("write ")}
    assert writes.pop("write .") == "ok"  # its own scratch directory is writable: the probe works
    assert writes == {"write " + d: "EROFS" for d in targets}
    assert not [d for d in targets if (Path(d) / "hmq-sandbox-probe.txt").exists()]
    assert report["private"] == []
    assert Path(report["home"]).parent == tmp_path / "cache" / "scratch" / str(proc.pid)  # HOME: its scratch


def test_a_task_that_kills_everything_it_sees_fails_alone(
    server: Server, tmp_path: Path, ledger: Ledger, bwrap: str
) -> None:
    def work(port, sentinel, x):
        import os
        import signal

        if x != "kill":
            return x * 2
        seen = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        outcome = {}
        for pid in [os.getppid(), sentinel, *(p for p in seen if p != os.getpid())]:
            try:
                os.kill(pid, signal.SIGKILL)
                outcome[str(pid)] = "sent"
            except OSError as exc:
                outcome[str(pid)] = type(exc).__name__
        tell(port, "killer", seen=seen, outcome=outcome, me=os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)

    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        proc = server.start_worker(tmp_path, extra=BWRAP)
        calls = [(ledger.port, sentinel.pid, x) for x in (1, 2, "kill", 3, 4)]
        tag = submit(server.user(), work, calls)
        _pull(tag)
        (report,) = ledger.wait("killer")
        assert report["seen"] == [1, report["me"]]  # its sandbox's init and itself, nothing else
        assert report["outcome"][str(sentinel.pid)] == "ProcessLookupError"
        assert proc.poll() is None and sentinel.poll() is None  # the worker and the host process live
        results, errors = list(tag.results), list(tag.errors)
        assert [results[i] for i in (0, 1, 3, 4)] == [2, 4, 6, 8]
        assert results[2] is None and "died (killed by signal 9" in errors[2]
    finally:
        sentinel.kill()
        sentinel.wait()


def test_processes_a_call_starts_end_with_it_setsid_or_not(
    server: Server, tmp_path: Path, ledger: Ledger, bwrap: str
) -> None:
    def spawn(port, marker, then):
        import os
        import subprocess
        import sys
        import time

        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        children = [subprocess.Popen([*sleeper, marker + "-setsid"], start_new_session=True, **quiet).pid]
        pid = os.fork()
        if pid == 0:  # a child holding every descriptor of the executor, the reply pipe included
            for fd in os.listdir("/proc/self/fd"):
                try:
                    os.set_inheritable(int(fd), True)
                except OSError:
                    pass
            os.execv(sys.executable, [*sleeper, marker + "-inherited"])
        children.append(pid)
        tell(port, "spawned", marker=marker, children=children)
        if then == "crash":
            os._exit(3)
        if then == "hold":
            time.sleep(600)
        return then

    proc = server.start_worker(tmp_path, extra=BWRAP)
    user = server.user()
    markers = {then: f"hmq-marker-{uuid.uuid4().hex}" for then in ("return", "crash", "hold")}

    returned = submit(user, spawn, [(ledger.port, markers["return"], "return")])
    _pull(returned)
    assert list(returned.results) == ["return"]
    wait_for(lambda: not _processes_with(markers["return"]), timeout=10, what="the call's processes to end")

    crashed = submit(user, spawn, [(ledger.port, markers["crash"], "crash")])
    _pull(crashed)  # the child holding the reply pipe does not keep the worker waiting
    assert "died (exit code 3)" in list(crashed.errors)[0]
    wait_for(lambda: not _processes_with(markers["crash"]), timeout=10, what="the crashed call's processes to end")

    held = submit(user, spawn, [(ledger.port, markers["hold"], "hold")])
    ledger.wait("spawned", 3)
    assert len(_processes_with(markers["hold"])) == 2  # the test does see them while the call runs
    stop_process(proc)
    assert proc.returncode == 0
    wait_for(lambda: not _processes_with(markers["hold"]), timeout=10, what="processes to end with the worker")
    assert user.get_tag_status(held.name)["pending"] == 1  # handed back, not lost


def test_each_call_starts_from_the_executors_own_state(server: Server, tmp_path: Path, bwrap: str) -> None:
    def mutate(step):
        import builtins
        import os
        import resource
        import signal
        import uuid

        if step == "soft":
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            os.environ["LEFT_BEHIND"] = "1"
            os.umask(0o077)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.chdir("/")
        if step == "hard":  # an unprivileged process cannot raise a hard limit again
            resource.setrlimit(resource.RLIMIT_CPU, (100_000, 100_000))
        umask = os.umask(0o022)
        os.umask(umask)
        return {
            "executor": builtins.__dict__.setdefault("hmq_executor", uuid.uuid4().hex),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "cpu": resource.getrlimit(resource.RLIMIT_CPU),
            "env": os.environ.get("LEFT_BEHIND"),
            "umask": umask,
            "sigterm": str(signal.getsignal(signal.SIGTERM)),
            "cwd": os.getcwd(),
        }

    server.start_worker(tmp_path, extra=BWRAP)  # one core: one executor for the user
    user = server.user()

    def run(*steps: str) -> list[dict[str, Any]]:
        tag = submit(user, mutate, [(s,) for s in steps])
        _pull(tag)
        assert list(tag.errors) == [None] * len(steps), list(tag.errors)
        return list(tag.results)

    (fresh,) = run("check")
    (changed,) = run("soft")
    assert changed["nofile"][0] == 64 and changed["env"] == "1" and changed["cwd"] == "/"
    assert {k: v for k, v in changed.items() if k not in ("nofile", "env", "umask", "sigterm", "cwd")} == {
        "executor": fresh["executor"],
        "cpu": fresh["cpu"],
    }
    (after,) = run("check")
    assert after == fresh  # the same executor, as it was before the call that changed it
    lowered, next_call = run("hard", "check")
    assert lowered["executor"] == fresh["executor"] and lowered["cpu"] == [100_000, 100_000]
    assert next_call == {**fresh, "executor": next_call["executor"], "cwd": next_call["cwd"]}  # a fresh executor
    assert next_call["executor"] != fresh["executor"]


def test_a_worker_that_cannot_isolate_refuses_to_start(server: Server, tmp_path: Path) -> None:
    no_bwrap = tmp_path / "bin-without-bwrap"
    no_bwrap.mkdir()
    proc = server.start_worker(tmp_path, env={"PATH": str(no_bwrap)})  # --isolation auto, no executor user
    assert proc.wait(timeout=60) != 0
    log = proc.log_path.read_text()
    assert "cannot isolate calls: bubblewrap (bwrap) is not on PATH" in log
    assert "apt-get install bubblewrap" in log and "--executor-user" in log and "--isolation none" in log


def test_isolation_none_runs_with_loud_warnings(server: Server, tmp_path: Path) -> None:
    def read(path):
        with open(path) as fh:
            return len(fh.read()) > 0

    proc = server.start_worker(tmp_path, env={"HMQ_ISOLATION": "none"})
    tag = submit(server.user(), read, [(str(proc.credentials),)])
    _pull(tag)
    assert list(tag.results) == [True]  # what "none" means: the task reads the worker's secrets
    log = proc.log_path.read_text()
    assert "ISOLATION IS OFF (--isolation none)" in log
    assert "starting an executor for" in log and "WITHOUT isolation" in log
