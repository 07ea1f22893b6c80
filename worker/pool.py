"""Executor processes: spawning, talking to, reusing and killing them.

An executor is keyed by (interpreter, ncores, tenant): one user's tasks with the same package set
and core count reuse one long-lived process, so a call costs a pipe round trip, not a process
start; no executor ever runs two users' code. Every executor runs in the worker's sandbox
(``worker/sandbox.py``: what a call can see and what happens to the processes it starts).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hmq import defaults
from hmq._errors import ConfigurationError, HmqError
from hmq.limits import Limits, format_memory, format_seconds
from worker.executor import kill_tree, prctl, process_table, read_output, read_reply, write_frame
from worker.sandbox import Isolation, Sandbox, scrubbed_env

log = logging.getLogger("hmq.worker")
_PR_SET_CHILD_SUBREAPER = 36
REPLY_POLL_SECONDS = 1.0
"""How often a worker waiting for a reply checks that its executor is still alive (and keeps
the output of a call that prints more than it keeps from filling the disk)."""
MAX_LOG_BYTES = 1024 * 1024
"""Output (stdout and stderr) kept per call, by default (``WorkerSettings.max_log_bytes``)."""
TRIM_SLACK_BYTES = 16 * 1024 * 1024
"""Output a running call may hold on disk beyond what is kept before the worker frees the rest."""
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def executor_env(ncores: int, user: Optional[str]) -> dict[str, str]:
    env = scrubbed_env()
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

    def __init__(
        self, returncode: Optional[int], killed: bool, log: Optional[bytes] = None, memory: Optional[int] = None
    ) -> None:
        self.returncode = returncode
        self.killed = killed
        self.log = log  # what the call it was running had written
        if killed:
            why = "it was stopped by the worker"
        elif returncode is not None and returncode < 0:
            why = f"killed by signal {-returncode}" + (" (out of memory?)" if returncode == -9 else "")
        else:
            why = f"exit code {returncode}"
        if memory is not None and not killed and returncode is not None and returncode < 0:
            super().__init__(
                f"the call exceeded its memory limit of {format_memory(memory)}: the process running it "
                f"died ({why}) under that limit"
            )
            return
        super().__init__(
            f"the process running this task died ({why}); the call crashed its interpreter, "
            f"called os._exit, or ran out of memory"
        )


class CallTimedOut(ExecutorDied):
    """A call ran past its timeout: the worker killed its executor, and with it every process
    the call started; the calls of the batch after it never started."""

    def __init__(self, timeout: float) -> None:
        HmqError.__init__(
            self,
            f"the call timed out after {format_seconds(timeout)} s (submit(timeout=...)) and was killed, "
            f"with every process it started",
        )
        self.returncode, self.killed, self.log = None, False, None


class ExecutorRetired(ExecutorDied):
    """The executor stopped after a call it could not undo (a lowered hard resource limit): the
    calls of the batch it did not answer never started and run again elsewhere."""

    def __init__(self, returncode: Optional[int]) -> None:
        super().__init__(returncode, killed=True)


@dataclass
class Outcome:
    task_id: str
    ok: bool
    payload: bytes  # result JSON, or traceback text
    seconds: float = 0.0
    log: Optional[bytes] = None  # what the call wrote to stdout and stderr (capped), if anything


@dataclass(eq=False)
class ExecutorProcess:
    """One executor, in ``sandbox``. ``tenant`` is the user whose calls it runs: executors are
    never shared between users, so no user's code can see another user's functions, calls or
    results."""

    python: str
    ncores: int
    scratch: Path
    sandbox: Sandbox
    tenant: str = ""
    max_log: int = MAX_LOG_BYTES
    proc: subprocess.Popen = field(init=False, repr=False)
    loaded: set[str] = field(default_factory=set)
    killed: bool = False
    retired: bool = False
    last_used: float = field(default_factory=time.monotonic)
    call_started: float = field(default_factory=time.monotonic)  # of the call running now

    def __post_init__(self) -> None:
        workdir = self.scratch / uuid.uuid4().hex
        workdir.mkdir(parents=True)
        user = self.sandbox.user
        entry = pwd.getpwnam(user) if user is not None else None
        if entry is not None:
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
        if self.sandbox.mode is Isolation.NONE:
            log.warning("starting an executor for %s WITHOUT isolation (--isolation none)", self.tenant or "a user")
        self.capture = _capture_file(self.scratch)
        self.proc = subprocess.Popen(
            self.sandbox.executor_command(self.python, workdir, defaults.MAX_RESULT_BYTES, self.max_log),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.capture,  # the calls' output, never the worker's log
            bufsize=0,  # unbuffered replies: waiting on the descriptor sees every byte
            env=self.sandbox.executor_env(executor_env(self.ncores, user), workdir),
            cwd=str(workdir),
            user=user,
            group=entry.pw_gid if entry is not None else None,
            extra_groups=[] if entry is not None else None,
        )
        self.workdir = workdir

    @property
    def key(self) -> tuple[str, int, str]:
        return self.python, self.ncores, self.tenant

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, items: list[tuple[str, str, bytes, bytes, Limits]]) -> Iterator[Outcome]:
        """Send calls ``(task_id, digest, function, call, limits)``; yield outcomes as they
        finish. A call that runs past its timeout raises :class:`CallTimedOut` (its executor
        is killed)."""
        batch = []
        for task_id, digest, function, call, limits in items:
            memory = None if limits.memory is None else (limits.memory, format_memory(limits.memory))
            batch.append((task_id, digest, None if digest in self.loaded else function, call, memory))
            self.loaded.add(digest)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        started = self.call_started = time.monotonic()
        try:
            write_frame(self.proc.stdin, ("run", batch))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(items[0][4]) from None
        answered = 0
        while True:
            limits = items[answered][4] if answered < len(items) else Limits(timeout=None)
            try:
                ready = self._wait_for_reply(limits.timeout)
                reply = read_reply(self.proc.stdout, defaults.MAX_RESULT_BYTES + self.max_log + 8192) if ready else None
            except OSError:
                reply = None
            if reply is None:
                raise self._died(limits)
            if not isinstance(reply, tuple):  # "end" or "retire"
                self.last_used = time.monotonic()
                self.retired = reply == "retire"
                if self.retired and answered < len(items):
                    raise ExecutorRetired(self.proc.poll())
                return
            task_id, ok, payload, output = reply
            now = time.monotonic()
            answered += 1
            yield Outcome(task_id, ok, payload, now - started, output)
            started = self.call_started = now

    def _wait_for_reply(self, timeout: Optional[float] = None) -> bool:
        """Wait until a reply starts or the executor ends (False): a process that inherited
        the reply pipe and outlived the executor must not keep the worker waiting. When the
        call has run ``timeout`` seconds, kill the executor and raise :class:`CallTimedOut`."""
        assert self.proc.stdout is not None
        deadline = None if timeout is None else self.call_started + timeout
        while True:
            wait = REPLY_POLL_SECONDS if deadline is None else min(REPLY_POLL_SECONDS, deadline - time.monotonic())
            if select.select([self.proc.stdout], [], [], max(wait, 0.0))[0]:
                return True
            if not self.alive():
                return bool(select.select([self.proc.stdout], [], [], 0)[0])
            self._trim_output()
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                raise CallTimedOut(timeout or 0.0)

    def output(self) -> Optional[bytes]:
        """What the executor's current call has written so far (capped as the executor caps it):
        the output of a call that crashed its executor."""
        try:
            return read_output(self.capture.fileno(), self.max_log)
        except OSError:
            return None

    def _trim_output(self) -> None:
        """Free the disk blocks of the part of a long call's output the executor will not keep
        (all but the first and last ``max_log / 2`` bytes): a call that prints without end holds
        about ``max_log`` bytes of disk, not all it wrote (where the filesystem can punch holes)."""
        fd = self.capture.fileno()
        keep = self.max_log // 2 + 1
        size = os.fstat(fd).st_size
        if size > 2 * keep + TRIM_SLACK_BYTES:
            _punch_hole(fd, keep, size - 2 * keep)

    def _died(self, limits: Limits) -> ExecutorDied:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._terminate()
            code = self.proc.wait()
        return ExecutorDied(
            self.sandbox.exit_status(code), self.killed, None if self.killed else self.output(), limits.memory
        )

    def _terminate(self) -> None:
        """Kill the executor and every process it started: under bwrap its sandbox ends with it;
        elsewhere its process tree is killed (it is a subreaper: orphans stay in the tree)."""
        if self.sandbox.mode is Isolation.BWRAP:
            self.proc.kill()
        else:
            kill_tree(self.proc.pid, include_root=True)

    def kill(self) -> None:
        self.killed = True
        if self.alive():
            self._terminate()

    def close(self) -> None:
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self._terminate()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self.capture.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _capture_file(directory: Path) -> Any:
    """An unlinked file for an executor's output, appended to by every process that writes it."""
    fh = tempfile.TemporaryFile(dir=directory, prefix="output-")  # noqa: SIM115 - closed with its executor
    fcntl.fcntl(fh.fileno(), fcntl.F_SETFL, fcntl.fcntl(fh.fileno(), fcntl.F_GETFL) | os.O_APPEND)
    return fh


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate ``length`` bytes at ``offset`` (they read as zeros; the size stays)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        return libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) == 0
    except (OSError, AttributeError):
        return False


class ExecutorPool:
    """Idle executors by key; at most ``max_idle`` are kept, least recently used go first.

    ``sandbox`` is a :class:`Sandbox` or an isolation mode (``auto``, ``bwrap``, ``uid``,
    ``none``) resolved here, once: a worker that cannot isolate its calls as asked refuses to
    start (``ConfigurationError``). ``user`` runs executors under that account. ``max_log`` is
    how much of each call's output is kept.
    """

    def __init__(
        self,
        scratch: Path,
        max_idle: int,
        user: Optional[str] = None,
        sandbox: Sandbox | str = Isolation.AUTO,
        max_log: int = MAX_LOG_BYTES,
    ) -> None:
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.max_idle = max_idle
        self.max_log = max_log
        self.user = user
        if user is not None:
            self.scratch.chmod(0o711)
            check_executor_user(user, self.scratch)
        self.sandbox = sandbox if isinstance(sandbox, Sandbox) else Sandbox.select(sandbox, user)
        self.sandbox.check_private(self.scratch)
        log.info("isolation: %s", self.sandbox.describe())
        self._stray_uid: Optional[int] = None
        if self.sandbox.mode is Isolation.UID and user is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1):
            self._stray_uid = pwd.getpwnam(user).pw_uid  # orphans of dead executors come to us
        self._idle: list[ExecutorProcess] = []
        self._busy: set[ExecutorProcess] = set()
        self._open: dict[int, ExecutorProcess] = {}  # every executor not closed yet, by pid
        self._lock = threading.Lock()
        self._spawn = threading.Lock()  # held while an executor starts: it is not a stray

    def acquire(self, python: str, ncores: int, tenant: str) -> ExecutorProcess:
        with self._lock:
            for ex in self._idle:
                if ex.key == (python, ncores, tenant) and ex.alive():
                    self._idle.remove(ex)
                    self._busy.add(ex)
                    ex.call_started = time.monotonic()
                    return ex
        with self._spawn:
            ex = ExecutorProcess(python, ncores, self.scratch, self.sandbox, tenant, self.max_log)
            with self._lock:
                self._busy.add(ex)
                self._open[ex.proc.pid] = ex
        return ex

    def release(self, ex: ExecutorProcess) -> None:
        surplus: list[ExecutorProcess] = []
        with self._lock:
            self._busy.discard(ex)
            if ex.alive() and not (ex.killed or ex.retired):
                self._idle.append(ex)
            else:
                surplus.append(ex)
            self._idle.sort(key=lambda e: e.last_used)
            while len(self._idle) > self.max_idle:
                surplus.append(self._idle.pop(0))
        self._close(surplus)

    def _close(self, executors: list[ExecutorProcess]) -> None:
        for e in executors:
            e.close()
            with self._lock:
                self._open.pop(e.proc.pid, None)
        if executors:
            self._sweep_strays()

    def _sweep_strays(self) -> None:
        """Under ``uid``: kill what ended executors left behind (processes of the executor
        account re-parented to this worker, which is their subreaper), and reap them."""
        if self._stray_uid is None:
            return
        with self._spawn:
            with self._lock:
                known = set(self._open)
            me = os.getpid()
            for pid, (ppid, uid) in process_table().items():
                if ppid == me and uid == self._stray_uid and pid not in known:
                    kill_tree(pid, include_root=True)
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass

    def close(self) -> None:
        """Kill every executor; close the idle ones (a busy one is closed when its runner
        releases it: its streams are still being read)."""
        with self._lock:
            idle, busy = self._idle, list(self._busy)
            self._idle = []
        for ex in idle + busy:
            ex.kill()
        self._close(idle)
