"""Package environments: one virtual environment per package set, built once and cached.

The key is the SHA-256 of the Python version and the sorted requirements, so every task with
the same ``packages=`` shares one environment, across workers on the same cache directory (a
file lock serialises the build). Requirements reach pip as separate arguments after ``--``,
never through a shell, and were checked before (``hmq.wire.check_requirement``: names from an
index only, no direct reference, path, URL or option). Builds run with the worker's environment
less its private variables (``HMQ_*``, ``AWS_*``: no credentials path, no cloud keys) and, under
bwrap isolation, in a sandbox where only the environment being built and a private /tmp are
writable (``Sandbox.build_command``).

While a build runs, :meth:`EnvManager.building` names it (package set, seconds so far); the
worker reports that in its heartbeats and claims, and tells the API at once when a build starts
and ends (``on_change``), so that the tag status of tasks waiting for it says so.

Under ``uid`` isolation the worker is root, and a build runs as the executor account instead:
pip and the packages' build code write the environment, owned by that account, with a private
HOME (a copy of the worker's own pip configuration in it). The worker then copies the tree into
new files of its own (directories 0755, files 0644 or 0755, symlinks as they are, never
following one, refusing anything but files of that account, directories and symlinks) and puts
the copy in the environment's place: tasks can read it and not write it, and no descriptor or
process of the account that built it reaches the copy. A marker the account could have planted
is not taken for a finished build: an environment counts only when it and its marker are the
worker's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from hmq import defaults, wire
from hmq._errors import HmqError
from worker.sandbox import Isolation, Sandbox, pip_config_files, scrubbed_env

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

    def __init__(
        self,
        root: Path,
        pip_args: tuple[str, ...] = (),
        sandbox: Optional[Sandbox] = None,
        on_change: Optional[Callable[[], None]] = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pip_args = pip_args
        self.sandbox = sandbox or Sandbox(Isolation.NONE)
        self.sandbox.check_private(self.root)
        uid_mode = self.sandbox.mode is Isolation.UID and self.sandbox.user is not None
        self.builder = pwd.getpwnam(self.sandbox.user) if uid_mode else None  # type: ignore[arg-type]
        """The account builds run as (the executor account, under ``uid``); None: the worker's."""
        self._failures: dict[str, tuple[float, str]] = {}
        self._building: dict[str, tuple[list[str], float]] = {}  # key -> packages, time.monotonic at start
        self._on_change = on_change
        """Called (from the building thread) when a build starts and when it ends: the worker
        tells the API at once, for the tag status."""
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
        if self._ready(path):
            return str(python)
        try:
            self._build(path, packages)
        except PackageEnvError as exc:
            with self._lock:
                self._failures[key] = (time.monotonic(), str(exc))
            raise
        return str(python)

    def _ready(self, path: Path) -> bool:
        """Built: its marker is there and, when an account builds, both the environment and the
        marker are the worker's (not a marker that account planted while it built)."""
        try:
            marker, top = (path / READY).lstat(), path.lstat()
        except OSError:
            return False
        if self.builder is None:
            return True
        mine = os.geteuid()
        return stat.S_ISREG(marker.st_mode) and stat.S_ISDIR(top.st_mode) and marker.st_uid == top.st_uid == mine

    def _build(self, path: Path, packages: list[str]) -> None:
        lock_path = path.with_suffix(".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building the same set
            if self._ready(path):
                return
            if path.exists():
                shutil.rmtree(path)
            who = f" as {self.builder.pw_name}" if self.builder is not None else ""
            log.info("building environment %s for %s%s", path.name, " ".join(packages), who)
            started = time.monotonic()
            self._announce(path.name, (packages, started))
            try:
                self._build_here(path, packages)
            finally:
                self._announce(path.name, None)
            (path / READY).write_text(json.dumps({"packages": packages, "seconds": time.monotonic() - started}))
            log.info("environment %s ready in %.1f s", path.name, time.monotonic() - started)

    def _build_here(self, path: Path, packages: list[str]) -> None:
        path.mkdir()
        home = self._builder_home(path)
        try:
            self._install(path, packages, home)
            if self.builder is not None:
                self._promote(path)
        except PackageEnvError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            if home is not None:
                shutil.rmtree(home, ignore_errors=True)

    def _announce(self, key: str, build: Optional[tuple[list[str], float]]) -> None:
        """Record that the build of ``key`` started (``build``: packages, start) or ended (None)."""
        with self._lock:
            if build is None:
                self._building.pop(key, None)
            else:
                self._building[key] = build
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # telling the API is a courtesy: never let it stop a build
                log.exception("could not report the environment build")

    def building(self) -> list[tuple[list[str], float]]:
        """The environments being built now: package set and seconds since the build started."""
        now = time.monotonic()
        with self._lock:
            return [(packages, now - started) for packages, started in self._building.values()]

    def _install(self, path: Path, packages: list[str], home: Optional[Path]) -> None:
        """Create the virtual environment at ``path`` and install ``packages`` into it."""
        self._run([sys.executable, "-m", "venv", str(path)], "creating the virtual environment", path, home)
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
        self._run(pip, f"installing {', '.join(packages)}", path, home)

    def _run(self, argv: list[str], what: str, env_dir: Path, home: Optional[Path] = None) -> None:
        """Run one build step (as the build account, in ``home``, when there is one)."""
        user = self.builder if home is not None else None
        try:
            proc = subprocess.run(
                self.sandbox.build_command(argv, env_dir, self.pip_args),
                capture_output=True,
                text=True,
                timeout=defaults.PIP_INSTALL_TIMEOUT_SECONDS,
                env=scrubbed_env() if user is None or home is None else _builder_env(user, home),
                cwd=str(self.root if home is None else home),
                user=None if user is None else user.pw_uid,
                group=None if user is None else user.pw_gid,
                extra_groups=None if user is None else [],
            )
        except subprocess.TimeoutExpired:
            raise PackageEnvError(f"{what} timed out after {defaults.PIP_INSTALL_TIMEOUT_SECONDS:.0f} s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise PackageEnvError(f"{what} failed on the worker (exit {proc.returncode}):\n{tail}")

    def _builder_home(self, path: Path) -> Optional[Path]:
        """When an account builds: give it ``path`` and a private HOME (and TMPDIR) holding a copy
        of the worker's own pip configuration files (those it could not read where they are)."""
        if self.builder is None:
            return None
        uid, gid = self.builder.pw_uid, self.builder.pw_gid
        os.chown(path, uid, gid)
        home = self.root / f".home-{path.name}-{uuid.uuid4().hex[:8]}"
        home.mkdir(mode=0o700)
        copies = [(src, home / dest) for src, dest in pip_config_files() if not os.path.isabs(dest)]
        if os.path.isfile(os.environ.get("PIP_CONFIG_FILE", "")):
            copies.append((os.environ["PIP_CONFIG_FILE"], home / PIP_CONFIG_COPY))
        for target in [home / "tmp", *(t.parent for _, t in copies)]:
            target.mkdir(parents=True, exist_ok=True)
        for src, target in copies:
            shutil.copyfile(src, target)
        for directory, dirs, files in os.walk(home):  # the worker made all of it: no link to follow
            for name in [".", *dirs, *files]:
                os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)
        return home

    def _promote(self, path: Path) -> None:
        """Put a copy owned by the worker in the place of the environment the build account wrote
        (see the module docstring)."""
        assert self.builder is not None
        staging, discard = path.with_name(f".{path.name}.promote"), path.with_name(f".{path.name}.discard")
        for stale in (staging, discard):
            if stale.exists():
                shutil.rmtree(stale)
        staging.mkdir(mode=0o700)
        try:
            copy_tree(path, staging, self.builder.pw_uid)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PackageEnvError(f"the built environment could not be copied into the cache: {exc}") from None
        except PackageEnvError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.rename(path, discard)
        os.rename(staging, path)
        path.chmod(0o755)
        shutil.rmtree(discard, ignore_errors=True)

    def ready(self) -> dict[str, list[str]]:
        """Environments built so far: key -> packages."""
        out: dict[str, list[str]] = {}
        for marker in self.root.glob(f"*/{READY}"):
            if not self._ready(marker.parent):
                continue
            try:
                out[marker.parent.name] = json.loads(marker.read_text())["packages"]
            except (ValueError, KeyError):
                continue
        return out


PIP_CONFIG_COPY = ".config/pip/pip-config-file.conf"
"""Where a build account's HOME holds the copy of ``$PIP_CONFIG_FILE``."""


def _builder_env(user: pwd.struct_passwd, home: Path) -> dict[str, str]:
    """The build account's environment: the worker's less its private variables, HOME ``home``."""
    env = scrubbed_env()
    env.update(
        HOME=str(home),
        USER=user.pw_name,
        LOGNAME=user.pw_name,
        TMPDIR=str(home / "tmp"),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    if "PIP_CONFIG_FILE" in env:
        env["PIP_CONFIG_FILE"] = str(home / PIP_CONFIG_COPY)
    return env


def copy_tree(src: Path, dst: Path, owner: int) -> None:
    """Copy the tree ``src``, written by the account ``owner``, into the empty directory ``dst``
    as new files of this process: directories 0755, files 0644 or 0755 (no set-id bits, times
    kept so that bytecode stays valid), symlinks as symlinks. Nothing is followed: directories
    are walked by descriptor (``os.fwalk``), files opened with ``O_NOFOLLOW``. Anything else, and
    a file ``owner`` does not own (a hard link to someone else's file), stops the copy."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(src, follow_symlinks=False):
        target = dst / os.path.relpath(dirpath, src)
        if target != dst:
            target.mkdir()
            target.chmod(0o755)
        for name in [*dirnames, *filenames]:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=dirfd), target / name)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(name, dirfd, target / name, owner)
            elif not stat.S_ISDIR(st.st_mode):  # directories: walked next
                raise PackageEnvError(f"the build left {Path(dirpath, name)}, which is not a file, directory or link")


def _copy_file(name: str, dirfd: int, target: Path, owner: int) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
    with os.fdopen(fd, "rb") as source:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
            raise PackageEnvError(f"the build left {target.name}, which is not a file of the account that built it")
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
    os.chmod(target, mode)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
