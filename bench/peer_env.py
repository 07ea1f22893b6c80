"""The peers' own environment: a virtual environment beside hmq's (``.bench-venv``) with RQ, the
Redis client and Lithops, and Debian's ``redis-server`` for RQ.

Nothing of it is hmq's: the peers never share hmq's ``.venv`` (nor its dependency versions), and
hmq is never installed in theirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".bench-venv"
REQUIREMENTS = ("rq>=2.0", "redis>=5.0", "lithops>=3.0")
"""What the peers' environment holds (RQ 3.0 when the index has it)."""


def peer_python(log: Path) -> tuple[Optional[str], str]:
    """The peers' interpreter, with :data:`REQUIREMENTS` installed (made or brought up to date
    here, pip's output appended to ``log``); ``(None, reason)`` when that fails."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python), ""
    try:
        if not python.exists():
            venv.create(VENV, with_pip=True)
        with open(log, "ab") as out:
            pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS]
            subprocess.run(pip, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"the peers' environment {VENV} could not be made ({exc}; see {log})"
    stamp.write_text(wanted)
    return str(python), ""


def redis_server() -> tuple[Optional[str], str]:
    """Debian's ``redis-server`` (installed with apt-get when missing and running as root);
    ``(None, reason)`` when there is none."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "no redis-server here (Debian's redis-server package; installed by make bench when run as root)"
    print("installing redis-server", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
    ):
        if subprocess.run(argv, env=env, capture_output=True).returncode != 0:
            return None, "redis-server is missing and apt-get could not install it"
    found = shutil.which("redis-server")
    return (found, "") if found else (None, "redis-server is missing after apt-get install")
