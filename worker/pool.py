"""Executor processes: spawning, talking to, reusing and killing them.

An executor is keyed by (interpreter, ncores): tasks with the same package set and core count
reuse one long-lived process, so a call costs a pipe round trip, not a process start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hmq import _jsonable, defaults
from hmq._errors import ConfigurationError, HmqError
from worker.executor import read_reply, write_frame

EXECUTOR_SCRIPT = str(Path(__file__).with_name("executor.py"))
JSONABLE_SCRIPT = str(Path(_jsonable.__file__))


# Never handed to user code: the worker's own configuration and the cloud credentials it holds.
_PRIVATE_ENV = ("HMQ_", "AWS_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def executor_env(ncores: int, user: Optional[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV)}
    for name in defaults.THREAD_ENV_VARS:
        env[name] = str(ncores)
    if user is not None:
        entry = pwd.getpwnam(user)
        env.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
    return env


def check_executor_user(user: str, scratch: Path) -> None:
    """Fail at start, not at the first task, when ``user`` cannot run this interpreter or reach
    the scratch directory."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigurationError(f"executor user {user!r} does not exist") from None
    probe = [sys.executable, "-I", "-c", "import cloudpickle, os, sys; os.stat(sys.argv[1])", str(scratch)]
    try:
        out = subprocess.run(
            probe,
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
            env=executor_env(1, user),
            cwd="/",
        )
    except PermissionError as exc:
        raise ConfigurationError(
            f"cannot run calls as {user!r}: {exc} (switching users needs a worker running as root; "
            f"and {user!r} must be able to run {sys.executable})"
        ) from None
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigurationError(f"executor user {user!r} cannot run {sys.executable} or reach {scratch}: {why}")


class ExecutorDied(HmqError):
    """The executor process ended while running calls."""

    def __init__(self, returncode: Optional[int], killed: bool) -> None:
        self.returncode = returncode
        self.killed = killed
        if killed:
            why = "it was stopped by the worker"
        elif returncode is not None and returncode < 0:
            why = f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
        else:
            why = f"exit code {returncode}"
        super().__init__(
            f"the process running this task died ({why}); the call crashed its interpreter, "
            f"called os._exit, or ran out of memory"
        )


@dataclass
class Outcome:
    task_id: str
    ok: bool
    payload: bytes  # result JSON, or traceback text
    seconds: float = 0.0


@dataclass(eq=False)
class ExecutorProcess:
    """One executor. ``tenant`` is the user whose calls it runs: executors are never shared
    between users, so no user's code can see another user's functions, calls or results.
    ``user`` (a login name) runs it under another uid, which cannot read the worker's
    credentials (the worker must run as root to switch)."""

    python: str
    ncores: int
    scratch: Path
    tenant: str = ""
    user: Optional[str] = None
    proc: subprocess.Popen = field(init=False, repr=False)
    loaded: set[str] = field(default_factory=set)
    killed: bool = False
    last_used: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        workdir = self.scratch / uuid.uuid4().hex
        workdir.mkdir(parents=True)
        entry = pwd.getpwnam(self.user) if self.user is not None else None
        if entry is not None:
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
        self.proc = subprocess.Popen(
            [self.python, "-I", EXECUTOR_SCRIPT, JSONABLE_SCRIPT, str(workdir), str(defaults.MAX_RESULT_BYTES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=executor_env(self.ncores, self.user),
            cwd=str(workdir),
            user=self.user,
            group=entry.pw_gid if entry is not None else None,
            extra_groups=[] if entry is not None else None,
        )
        self.workdir = workdir

    @property
    def key(self) -> tuple[str, int, str]:
        return self.python, self.ncores, self.tenant

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, items: list[tuple[str, str, bytes, bytes]]) -> Iterator[Outcome]:
        """Send calls ``(task_id, digest, function, call)``; yield outcomes as they finish."""
        batch = []
        for task_id, digest, function, call in items:
            batch.append((task_id, digest, None if digest in self.loaded else function, call))
            self.loaded.add(digest)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        started = time.monotonic()
        try:
            write_frame(self.proc.stdin, ("run", batch))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None
        while True:
            try:
                reply = read_reply(self.proc.stdout, defaults.MAX_RESULT_BYTES + 4096)
            except OSError:
                reply = None
            if reply is None:
                raise self._died()
            if not isinstance(reply, tuple):  # "end"
                self.last_used = time.monotonic()
                return
            task_id, ok, payload = reply
            now = time.monotonic()
            yield Outcome(task_id, ok, payload, now - started)
            started = now

    def _died(self) -> ExecutorDied:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return ExecutorDied(code, self.killed)

    def kill(self) -> None:
        self.killed = True
        if self.alive():
            self.proc.kill()

    def close(self) -> None:
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


class ExecutorPool:
    """Idle executors by key; at most ``max_idle`` are kept, least recently used go first."""

    def __init__(self, scratch: Path, max_idle: int, user: Optional[str] = None) -> None:
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.max_idle = max_idle
        self.user = user
        if user is not None:
            self.scratch.chmod(0o711)
            check_executor_user(user, self.scratch)
        self._idle: list[ExecutorProcess] = []
        self._busy: set[ExecutorProcess] = set()
        self._lock = threading.Lock()

    def acquire(self, python: str, ncores: int, tenant: str) -> ExecutorProcess:
        with self._lock:
            for ex in self._idle:
                if ex.key == (python, ncores, tenant) and ex.alive():
                    self._idle.remove(ex)
                    self._busy.add(ex)
                    return ex
        ex = ExecutorProcess(python, ncores, self.scratch, tenant, self.user)
        with self._lock:
            self._busy.add(ex)
        return ex

    def release(self, ex: ExecutorProcess) -> None:
        surplus: list[ExecutorProcess] = []
        with self._lock:
            self._busy.discard(ex)
            if ex.alive() and not ex.killed:
                self._idle.append(ex)
            else:
                surplus.append(ex)
            self._idle.sort(key=lambda e: e.last_used)
            while len(self._idle) > self.max_idle:
                surplus.append(self._idle.pop(0))
        for e in surplus:
            e.close()

    def busy(self) -> list[ExecutorProcess]:
        with self._lock:
            return list(self._busy)

    def close(self) -> None:
        with self._lock:
            every = self._idle + list(self._busy)
            self._idle, self._busy = [], set()
        for ex in every:
            ex.kill()
            ex.close()
