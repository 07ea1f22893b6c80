"""Installing as users will: the wheel `make wheel` builds, and what a missing extra says."""

from __future__ import annotations

import email.parser
import os
import shlex
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from configparser import ConfigParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import hmq
from hmq.cli import SERVER_MODULES, SERVER_SPEEDUPS
from tests.helpers import REPO

# The server extra's modules cannot be imported; the client's can.
BLOCK_SERVER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('fastapi', 'sqlalchemy', 'boto3', 'botocore', 'uvicorn', 'mangum', 'alembic', 'starlette'):
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
"""
RUN_CLI = BLOCK_SERVER + "from hmq.cli import main\nmain(sys.argv[1:], prog_name='hmq')\n"
ORIGINAL = Version("25.7")  # the earlier hmq on the package index, which an upgrade must leave


def _env(home: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}, "HMQ_HOME": str(home)}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """HMQ_HOME for the command; a stack that `hmq up` started anyway is stopped."""
    yield tmp_path
    if (tmp_path / "stack.json").exists():
        subprocess.run([sys.executable, "-m", "hmq", "down"], env=_env(tmp_path), capture_output=True, timeout=120)


@pytest.mark.parametrize("command", ["up", "serve", "migrate"])
def test_server_commands_without_the_server_extra_say_which_extra_in_one_line(command: str, home: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUN_CLI, command],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(home),
        cwd=REPO,  # as from a checkout, whose hmq.egg-info hides the install record
    )
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        f"Error: hmq {command} needs the server extra (fastapi is not installed): "
        f"pip install -e {shlex.quote(f'{REPO}[server]')}"
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    make = ["make", "--no-print-directory", "wheel", f"WHEEL_DIR={out}", f"PYTHON={sys.executable}"]
    built = subprocess.run(make, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = out.glob("*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_is_this_hmq_newer_than_the_original_with_all_its_parts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(f"{info}/METADATA").decode())
        scripts = ConfigParser()
        scripts.read_string(z.read(f"{info}/entry_points.txt").decode())
    assert meta["Name"] == "hmq" and meta["Version"] == hmq.__version__
    assert Version(meta["Version"]) > ORIGINAL
    assert dict(scripts["console_scripts"]) == {"hmq": "hmq.cli:main"}
    assert {"server", "worker", "kubernetes", "dashboard"} <= set(meta.get_all("Provides-Extra", []))
    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist", [])]
    server = {canonicalize_name(r.name) for r in requirements if r.marker and r.marker.evaluate({"extra": "server"})}
    assert server == set(SERVER_MODULES) | set(SERVER_SPEEDUPS)  # what `hmq up` checks for, and what only speeds it
    assert meta["Requires-Python"] == ">=3.10" and meta["Keywords"] and meta.get_all("Classifier")

    assert {n.split("/")[0] for n in names} == {"hmq", "lambdas", "worker", info}  # no tests/, bench/, infra/
    sources = [p for d in ("hmq", "lambdas", "worker") for p in (REPO / d).rglob("*.py")]
    sources += (REPO / "lambdas/db/migrations").rglob("*.mako")
    sources += (REPO / "worker/autoscale").glob("*.sbatch")  # the autoscaler's default job script
    sources += [p for d in ("templates", "static") for p in (REPO / "hmq/dashboard" / d).iterdir()]  # the dashboard's
    missing = {str(p.relative_to(REPO)) for p in sources if "__pycache__" not in p.parts} - names
    assert missing == set()
    assert {"lambdas/db/migrations/env.py", "lambdas/db/migrations/versions/0001_initial_schema.py"} <= names
    assert {"hmq/dashboard/static/uPlot.iife.min.js", "hmq/dashboard/static/uPlot.LICENSE"} <= names
    assert all(wheel.name in (REPO / doc).read_text() for doc in ("README.md", "docs/user-guide.md"))


@pytest.mark.slow
def test_the_installed_wheel_says_how_to_add_the_server_extra_to_itself(wheel: Path, home: Path) -> None:
    env = home / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env], check=True, timeout=60)
    python = env / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*pip, wheel], check=True, capture_output=True, timeout=120)
    site = subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site_dir = Path(site.decode().strip())
    (site_dir / "_block_server.py").write_text(BLOCK_SERVER)
    # The client's dependencies come from the suite's environment, after the wheel's own hmq.
    (site_dir / "_deps.pth").write_text(f"{sysconfig.get_paths()['purelib']}\nimport _block_server\n")

    def hmq_command(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [env / "bin" / "hmq", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_env(home), cwd=home)

    assert hmq_command("--version").stdout == f"hmq, version {hmq.__version__}\n"
    out = hmq_command("up")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        "Error: hmq up needs the server extra (fastapi is not installed): "
        f"pip install {shlex.quote(f'hmq[server] @ {wheel.as_uri()}')}"
    ]
    used = subprocess.check_output([python, "-c", "import hmq; print(hmq.__file__)"], cwd=home)
    assert Path(used.decode().strip()).is_relative_to(site_dir)
