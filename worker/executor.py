"""The executor: a long-lived process that runs calls, one at a time, for the worker.

Run by the worker (through its sandbox, ``worker/sandbox.py``) with the interpreter of the task's
package environment, as ``python -I executor.py JSONABLE_PATH WORKDIR MAX_RESULT_BYTES CLEANUP
MAX_LOG_BYTES``: ``JSONABLE_PATH`` is ``hmq/_jsonable.py``, ``WORKDIR`` its scratch directory,
``CLEANUP`` how the processes a call started are ended (below), ``MAX_LOG_BYTES`` how much of a
call's output is kept. It needs only the standard library and cloudpickle, so it also runs in
environments that do not have hmq installed.

Protocol on the inherited stdin/stdout (both moved to private, non-inheritable descriptors at
start, so the user's prints cannot corrupt it), frames of ``u32 length | body``.
Requests (worker to executor) are pickled ``("run", [(task_id, digest, function_or_None, call,
memory), ...])``, ``memory`` being ``None`` or the call's limit as ``(bytes, text)``. Replies are plain bytes, never pickles, because the worker must not unpickle anything
user code could have forged: ``R | task id (16 bytes) | ok (1 byte) | log length (u32) | log |
payload`` per call, then ``E``; or ``Q`` instead of ``E`` when the executor retires (it exits after
the call it has just answered; the calls of the batch it did not answer never started).

Output: the executor's stderr is the worker's capture file for it (an unlinked file opened with
``O_APPEND``); descriptors 1 and 2 both point to it, so what a call and every process it starts
write to stdout and stderr lands there in the order written, and ``sys.stdout``/``sys.stderr``
write through (no buffer). After each call the executor reads what the call wrote (at most
``MAX_LOG_BYTES``: the first and last halves, with a note saying how much was left out between
them), sends it with the outcome and empties the file. What a call that crashed its executor had
written is still in the file: the worker reads it from there.

Around every call, so that no call inherits what the previous one changed: the working
directory (emptied after the call), environment variables, umask, resource limits, signal
handlers, signal mask and interval timers are put back as they were when the executor started;
the RNGs of ``random`` and (if loaded) numpy are reseeded from the OS; thread-count variables
are those set by the worker. A call with a memory limit runs with the soft ``RLIMIT_AS`` at that
limit (the address space of the executor, the interpreter included), put back after it like
every other limit; a ``MemoryError`` it raises is reported as the call exceeding its limit. The
worker enforces the wall time: it kills the executor of a call that runs past its timeout. A call that lowered a hard resource limit, which an unprivileged
process cannot raise again, makes the executor retire after it. Every process a call started
is killed when the call returns, whether it called setsid or not:

- ``CLEANUP=namespace``: the executor is PID 2 of a pid namespace of its own (bubblewrap's init
  is PID 1); ``kill(-1, SIGKILL)`` reaches every process in it but those two.
- ``CLEANUP=tree``: the executor is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so orphaned
  descendants are re-parented to it instead of to init, stay in its process tree and are
  stopped, then killed. A process that re-parents itself out of the tree is impossible;
  one that exec's a set-user-ID program cannot be signalled.
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
import pickle
import random
import resource
import shutil
import signal
import stat
import struct
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import IO, Any, Optional

_LEN = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_SWEEP_ROUNDS = 200  # each round waits 10 ms: a process that will not die holds a call 2 s at most


def read_frame(stream: IO[bytes]) -> Optional[Any]:
    head = _read_exact(stream, _LEN.size)
    if head is None:
        return None
    body = _read_exact(stream, _LEN.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _read_exact(stream: IO[bytes], size: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < size:
        part = stream.read(size - len(buf))
        if not part:
            return None
        buf += part
    return bytes(buf)


def write_frame(stream: IO[bytes], message: Any) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(body)) + body)


def write_reply(
    stream: IO[bytes], task_id: Optional[str], ok: bool = False, payload: bytes = b"", log: Optional[bytes] = None
) -> None:
    """One outcome with the call's output (or, without ``task_id``, the end of a batch)."""
    if task_id is None:
        body = b"E"
    else:
        head = b"R" + uuid.UUID(task_id).bytes + (b"\x01" if ok else b"\x00")
        body = head + _LEN.pack(len(log or b"")) + (log or b"") + payload
    stream.write(_LEN.pack(len(body)) + body)


def write_retire(stream: IO[bytes]) -> None:
    """The executor stops after the call it has just answered."""
    stream.write(_LEN.pack(1) + b"Q")


def read_reply(stream: IO[bytes], limit: int) -> Optional[tuple[str, bool, bytes, Optional[bytes]] | str]:
    """``(task_id, ok, payload, log or None)``, ``"end"``, ``"retire"``, or ``None`` at end of
    stream. ``limit`` bounds payload and log together. Raises ``ValueError`` for a malformed or
    oversize reply."""
    head = _read_exact(stream, _LEN.size)
    if head is None:
        return None
    size = _LEN.unpack(head)[0]
    if size > limit + 22:
        raise ValueError(f"executor reply of {size} bytes exceeds the limit")
    body = _read_exact(stream, size)
    if body is None:
        return None
    if body in (b"E", b"Q"):
        return "end" if body == b"E" else "retire"
    if len(body) < 22 or body[:1] != b"R" or body[17:18] not in (b"\x00", b"\x01"):
        raise ValueError("malformed executor reply")
    loglen = _LEN.unpack_from(body, 18)[0]
    if 22 + loglen > len(body):
        raise ValueError("malformed executor reply")
    log = body[22 : 22 + loglen] or None
    return str(uuid.UUID(bytes=body[1:17])), body[17:18] == b"\x01", body[22 + loglen :], log


# --- processes -----------------------------------------------------------------------------
# Shared with the worker (worker/sandbox.py imports these): standard library only.


def prctl(option: int, value: int) -> bool:
    """``prctl(2)`` through libc; False where it is unavailable or refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def process_table() -> dict[int, tuple[int, int]]:
    """Live (not zombie) processes this process can see: pid -> (parent pid, uid)."""
    table: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            uid = os.stat(f"/proc/{name}").st_uid
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != b"Z":
            table[int(name)] = (int(fields[1]), uid)
    return table


def descendants(root: int, table: Optional[dict[int, tuple[int, int]]] = None) -> list[int]:
    """Live descendants of ``root``, parents before children."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap() -> None:
    """Collect every child of this process that has ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_tree(root: int, include_root: bool = False) -> None:
    """Kill every descendant of ``root`` (and ``root`` itself if asked): each round stops what
    it sees (a stopped process cannot fork) until nothing new appears, then kills it all."""
    for _ in range(_SWEEP_ROUNDS):
        table = process_table()
        victims = descendants(root, table) + ([root] if include_root and root in table else [])
        if not victims:
            return
        _signal_all(victims, signal.SIGSTOP)
        table = process_table()
        if set(descendants(root, table)) <= set(victims):
            _signal_all(victims, signal.SIGKILL)
        if root == os.getpid():
            reap()
        time.sleep(0.01)


def end_namespace() -> None:
    """Kill every process of this pid namespace except its init (PID 1) and this one."""
    me = os.getpid()
    for _ in range(_SWEEP_ROUNDS):
        try:
            os.kill(-1, signal.SIGKILL)  # the kernel spares the caller and the namespace's init
        except ProcessLookupError:
            return  # there was nothing else to signal
        reap()
        if not [p for p in process_table() if p not in (1, me)]:
            return
        time.sleep(0.01)


def _has_children() -> bool:
    """Cheap (no scan of /proc): whether a child, alive or not yet reaped, exists. A subreaper
    without children has no descendants at all; ended children are reaped on the way."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def own_namespace() -> bool:
    """True when this process runs under bubblewrap's init in a pid namespace of its own."""
    try:
        with open("/proc/1/cmdline", "rb") as fh:
            init = fh.read().split(b"\0")[0]
    except OSError:
        return False
    return os.getpid() != 1 and os.getppid() == 1 and os.path.basename(init) == b"bwrap"


# --- per-call state ------------------------------------------------------------------------
def _rlimits() -> dict[int, tuple[int, int]]:
    limits = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            try:
                limits[getattr(resource, name)] = resource.getrlimit(getattr(resource, name))
            except (ValueError, OSError):
                continue
    return limits


class CallState:
    """What a call may change in its process that the next call must not inherit.

    Cheap enough for every call: the environment is compared as the bytes the process holds,
    and the handlers restored are those of the signals a call passed to ``signal.signal``
    (wrapped here to note them; the handlers Python knows are the ones it can put back).
    """

    _TIMERS = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.environ = dict(os.environ)
        self.environ_bytes = self._environ_bytes()
        self.umask = os.umask(0o022)
        os.umask(self.umask)
        self.rlimits = _rlimits()
        self.handlers: dict[int, Any] = {int(sig): signal.getsignal(sig) for sig in signal.valid_signals()}
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.touched: set[int] = set()
        self._set_handler = signal.signal

        def tracked(signalnum: Any, handler: Any) -> Any:
            self.touched.add(int(signalnum))
            return self._set_handler(signalnum, handler)

        tracked.__doc__ = signal.signal.__doc__
        signal.signal = tracked

    @staticmethod
    def _environ_bytes() -> Any:
        data = getattr(os.environ, "_data", None)  # CPython: the encoded variables, as the OS has them
        return dict(data) if data is not None else dict(os.environ)

    def limit_memory(self, limit: int) -> None:
        """Lower the soft address-space limit to ``limit`` (at most the hard limit) for one call;
        :meth:`restore` puts it back."""
        hard = self.rlimits[resource.RLIMIT_AS][1]
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))

    def restore(self) -> bool:
        """Put it all back; False when a lowered hard limit cannot be raised again."""
        for timer in self._TIMERS:
            signal.setitimer(timer, 0)
        for sig in self.touched:
            if self.handlers.get(sig) is not None:
                self._set_handler(sig, self.handlers[sig])
        self.touched.clear()
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        os.chdir(self.workdir)
        os.umask(self.umask)
        if self._environ_bytes() != self.environ_bytes:
            os.environ.clear()
            os.environ.update(self.environ)
        fresh = True
        for res, limit in self.rlimits.items():
            if resource.getrlimit(res) != limit:
                try:
                    resource.setrlimit(res, limit)
                except (ValueError, OSError):
                    fresh = False
        return fresh


# --- output --------------------------------------------------------------------------------
# read_output is shared with the worker (worker/pool.py), which reads a crashed call's output.


def read_output(fd: int, limit: int) -> Optional[bytes]:
    """What the capture file ``fd`` holds, at most ``limit`` bytes: when there is more, its first
    and last halves with a note between them saying how much was left out. None when empty."""
    size = os.fstat(fd).st_size
    if size == 0 or limit <= 0:
        return None
    if size <= limit:
        return os.pread(fd, size, 0)
    head, tail = os.pread(fd, limit // 2, 0), os.pread(fd, limit - limit // 2, size - (limit - limit // 2))
    note = f"[hmq: {size - limit} bytes of output left out here; a call keeps {limit} bytes: the first and last halves]"
    return head + (b"" if head.endswith(b"\n") else b"\n") + note.encode() + b"\n" + tail


class Capture:
    """A call's stdout and stderr: descriptors 1 and 2 on the capture file, ``sys.stdout`` and
    ``sys.stderr`` unbuffered on top (write-through text over unbuffered files), so that what
    Python, C code and child processes write lands in the order written."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = os.dup(fd)  # private (not inherited): calls get 1 and 2, which may be replaced
        self.limit = limit if stat.S_ISREG(os.fstat(fd).st_mode) else None  # None: not a capture file
        self.stdout = self._stream(1, sys.stdout)
        self.stderr = self._stream(2, sys.stderr)
        self._install()

    @staticmethod
    def _stream(fd: int, like: Any) -> Any:
        raw = open(fd, "wb", buffering=0, closefd=False)  # noqa: SIM115 - lives as long as the process
        return io.TextIOWrapper(raw, encoding=like.encoding, errors=like.errors, write_through=True)

    def _install(self) -> None:
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        setattr(sys, "__stdout__", self.stdout)  # noqa: B010 - code that writes to the originals
        setattr(sys, "__stderr__", self.stderr)  # noqa: B010   writes through as well

    def _streams_replaced(self) -> bool:
        return not (sys.stdout is self.stdout and sys.stderr is self.stderr and sys.__stdout__ is self.stdout)

    def take(self) -> Optional[bytes]:
        """The output of the call that just ended (see :func:`read_output`); the file is emptied
        and the descriptors and streams a call may have replaced or closed are put back."""
        if self._streams_replaced():
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()  # a call may have put a buffered stream of its own there
                except BaseException:
                    pass
            self._install()
        else:
            os.dup2(self.fd, 1)
            os.dup2(self.fd, 2)
        if self.limit is None:
            return None
        data = read_output(self.fd, self.limit)
        if data is not None or self.limit <= 0:
            os.ftruncate(self.fd, 0)  # O_APPEND: the next write starts at 0 again
        return data


def _load_jsonable(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("hmq_jsonable", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _clean(workdir: str) -> None:
    for entry in os.scandir(workdir):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _reseed() -> None:
    random.seed(os.urandom(32))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))


class Executor:
    def __init__(self, jsonable: Any, workdir: str, max_result: int, namespace: bool = False) -> None:
        self.jsonable = jsonable
        self.workdir = workdir
        self.max_result = max_result
        self.namespace = namespace
        self.functions: dict[str, Callable[..., Any] | str] = {}
        self.state = CallState(workdir)
        self.fresh = True  # False once a call left a state behind that cannot be undone

    def load(self, digest: str, blob: Optional[bytes]) -> None:
        if blob is None or digest in self.functions:
            return
        try:
            self.functions[digest] = pickle.loads(blob)
        except BaseException:
            self.functions[digest] = (
                "the function could not be loaded on the worker (a module it needs is missing: "
                "install it there or pass packages=[...] to submit):\n" + traceback.format_exc()
            )

    def run(self, digest: str, call: bytes, memory: Optional[tuple[int, str]] = None) -> tuple[bool, bytes]:
        func = self.functions.get(digest)
        if func is None:
            return False, b"the worker sent a call before its function (internal error)"
        if isinstance(func, str):
            return False, func.encode()
        os.chdir(self.workdir)
        _reseed()
        try:
            if memory is not None:
                self.state.limit_memory(memory[0])
            args, kwargs = pickle.loads(call)
            value = func(*args, **kwargs)
            data = self.jsonable.to_json(value)
            if len(data) > self.max_result:
                return False, f"the result is {len(data)} bytes of JSON; the limit is {self.max_result}".encode()
            return True, data
        except BaseException as exc:
            over = memory is not None and isinstance(exc, MemoryError)
            note = f"the call exceeded its memory limit of {memory[1]}\n" if over and memory else ""
            return False, (note + traceback.format_exc()).encode()
        finally:
            self.end_processes()
            self.fresh = self.state.restore()
            _clean(self.workdir)

    def end_processes(self) -> None:
        """Kill every process the call started (see the module docstring)."""
        if self.namespace:
            end_namespace()
        elif _has_children():
            kill_tree(os.getpid())


def _protocol() -> tuple[IO[bytes], IO[bytes]]:
    """Move the protocol off stdin/stdout: user code gets /dev/null and the capture file (stderr)
    there, and the protocol descriptors are not inherited by the processes it starts (``os.dup``
    makes them close-on-exec; forked copies die with the call, see ``end_processes``)."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # prints of user code go to the capture file, not into the protocol
    return proto_in, proto_out


def _serve(executor: Executor, capture: Capture, proto_in: IO[bytes], proto_out: IO[bytes]) -> None:
    while True:
        message = read_frame(proto_in)
        if message is None:
            return
        kind, items = message
        if kind != "run":
            continue
        for task_id, digest, blob, call, memory in items:
            executor.load(digest, blob)
            ok, payload = executor.run(digest, call, memory)
            write_reply(proto_out, task_id, ok, payload[: executor.max_result + 4096], capture.take())
            if not executor.fresh:
                write_retire(proto_out)
                return
        write_reply(proto_out, None)


def main() -> None:
    jsonable_path, workdir, max_result = sys.argv[1], sys.argv[2], int(sys.argv[3])
    namespace = sys.argv[4:5] == ["namespace"] and own_namespace()
    max_log = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    if not namespace:
        prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of a call stay in this process tree
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # no executor outlives its worker
    proto_in, proto_out = _protocol()
    capture = Capture(2, max_log)
    os.makedirs(workdir, exist_ok=True)
    try:
        import cloudpickle  # noqa: F401  (functions pickled by value need it to load)
    except ImportError:
        pass
    executor = Executor(_load_jsonable(jsonable_path), workdir, max_result, namespace)
    try:
        _serve(executor, capture, proto_in, proto_out)
    finally:
        executor.end_processes()


if __name__ == "__main__":
    main()
