"""Package environments: one virtual environment per package set, built once and cached.

The key is the SHA-256 of the Python version and the sorted requirements, so every task with
the same ``packages=`` shares one environment, across workers on the same cache directory (a
file lock serialises the build). Requirements reach pip as separate arguments after ``--``,
never through a shell, and were validated as PEP 508 before. Builds run with the worker's
environment less its private variables (``HMQ_*``, ``AWS_*``: no credentials path, no cloud
keys) and, under bwrap isolation, in a sandbox where only the environment being built and a
private /tmp are writable (``Sandbox.build_command``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from hmq import defaults, wire
from hmq._errors import HmqError
from worker.sandbox import Isolation, Sandbox, scrubbed_env

log = logging.getLogger("hmq.worker")
READY = ".hmq-ready"
FAILURE_RETRY_SECONDS = 300.0


class PackageEnvError(HmqError):
    """A package environment could not be built (pip failed)."""


def env_key(packages: list[str]) -> str:
    spec = {"python": wire.PYTHON, "packages": sorted(packages)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _cloudpickle_requirement() -> str:
    try:
        from importlib.metadata import version

        return f"cloudpickle=={version('cloudpickle')}"
    except Exception:
        return "cloudpickle"


class EnvManager:
    """Finds or builds the interpreter for a package set."""

    def __init__(self, root: Path, pip_args: tuple[str, ...] = (), sandbox: Optional[Sandbox] = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pip_args = pip_args
        self.sandbox = sandbox or Sandbox(Isolation.NONE)
        self.sandbox.check_private(self.root)
        self._failures: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def python(self, packages: list[str]) -> str:
        """The interpreter to run tasks needing ``packages`` (built on first use)."""
        if not packages:
            return sys.executable
        packages = wire.normalise_packages(packages)
        key = env_key(packages)
        with self._lock:
            failed = self._failures.get(key)
            if failed and time.monotonic() - failed[0] < FAILURE_RETRY_SECONDS:
                raise PackageEnvError(failed[1])
        path = self.root / key
        python = path / "bin" / "python"
        if (path / READY).exists():
            return str(python)
        try:
            self._build(path, packages)
        except PackageEnvError as exc:
            with self._lock:
                self._failures[key] = (time.monotonic(), str(exc))
            raise
        return str(python)

    def _build(self, path: Path, packages: list[str]) -> None:
        lock_path = path.with_suffix(".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building the same set
            if (path / READY).exists():
                return
            if path.exists():
                shutil.rmtree(path)
            log.info("building environment %s for %s", path.name, " ".join(packages))
            started = time.monotonic()
            path.mkdir()
            self._run([sys.executable, "-m", "venv", str(path)], "creating the virtual environment", path)
            pip = [
                str(path / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                *self.pip_args,
                "--",
                _cloudpickle_requirement(),
                *packages,
            ]
            try:
                self._run(pip, f"installing {', '.join(packages)}", path)
            except PackageEnvError:
                shutil.rmtree(path, ignore_errors=True)
                raise
            (path / READY).write_text(json.dumps({"packages": packages, "seconds": time.monotonic() - started}))
            log.info("environment %s ready in %.1f s", path.name, time.monotonic() - started)

    def _run(self, argv: list[str], what: str, env_dir: Path) -> None:
        try:
            proc = subprocess.run(
                self.sandbox.build_command(argv, env_dir, self.pip_args),
                capture_output=True,
                text=True,
                timeout=defaults.PIP_INSTALL_TIMEOUT_SECONDS,
                env=scrubbed_env(),
                cwd=str(self.root),
            )
        except subprocess.TimeoutExpired:
            raise PackageEnvError(f"{what} timed out after {defaults.PIP_INSTALL_TIMEOUT_SECONDS:.0f} s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise PackageEnvError(f"{what} failed on the worker (exit {proc.returncode}):\n{tail}")

    def ready(self) -> dict[str, list[str]]:
        """Environments built so far: key -> packages."""
        out: dict[str, list[str]] = {}
        for marker in self.root.glob(f"*/{READY}"):
            try:
                out[marker.parent.name] = json.loads(marker.read_text())["packages"]
            except (ValueError, KeyError):
                continue
        return out
