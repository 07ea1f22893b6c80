"""The executor: a long-lived process that runs calls, one at a time, for the worker.

Run as ``python -I worker/executor.py JSONABLE_PATH WORKDIR`` by the worker, with the
interpreter of the task's package environment. It needs only the standard library and
cloudpickle, so it also runs in environments that do not have hmq installed.

Protocol on the inherited stdin/stdout (both moved to private descriptors at start, so the
user's prints go to stderr and cannot corrupt it), frames of ``u32 length | body``. Requests
(worker to executor) are pickled ``("run", [(task_id, digest, function_or_None, call), ...])``.
Replies are plain bytes, never pickles, because the worker must not unpickle anything user code
could have forged: ``R | task id (16 bytes) | ok (1 byte) | payload`` per call, then ``E``.
``payload`` is the result's JSON or, on failure, the formatted traceback.

Around every call: a fresh working directory (emptied after the call), the RNGs of ``random``
and (if loaded) numpy reseeded from the OS, and thread-count variables set by the worker.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import random
import shutil
import struct
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import IO, Any, Optional

_LEN = struct.Struct(">I")


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


def write_reply(stream: IO[bytes], task_id: Optional[str], ok: bool = False, payload: bytes = b"") -> None:
    """One outcome (or, without ``task_id``, the end of a batch)."""
    body = b"E" if task_id is None else b"R" + uuid.UUID(task_id).bytes + (b"\x01" if ok else b"\x00") + payload
    stream.write(_LEN.pack(len(body)) + body)


def read_reply(stream: IO[bytes], limit: int) -> Optional[tuple[str, bool, bytes] | str]:
    """``(task_id, ok, payload)``, ``"end"``, or ``None`` at end of stream. Raises ``ValueError``
    for a malformed or oversize reply."""
    head = _read_exact(stream, _LEN.size)
    if head is None:
        return None
    size = _LEN.unpack(head)[0]
    if size > limit + 18:
        raise ValueError(f"executor reply of {size} bytes exceeds the limit")
    body = _read_exact(stream, size)
    if body is None:
        return None
    if body == b"E":
        return "end"
    if len(body) < 18 or body[:1] != b"R" or body[17:18] not in (b"\x00", b"\x01"):
        raise ValueError("malformed executor reply")
    return str(uuid.UUID(bytes=body[1:17])), body[17:18] == b"\x01", body[18:]


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
    def __init__(self, jsonable: Any, workdir: str, max_result: int) -> None:
        self.jsonable = jsonable
        self.workdir = workdir
        self.max_result = max_result
        self.functions: dict[str, Callable[..., Any] | str] = {}

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

    def run(self, digest: str, call: bytes) -> tuple[bool, bytes]:
        func = self.functions.get(digest)
        if func is None:
            return False, b"the worker sent a call before its function (internal error)"
        if isinstance(func, str):
            return False, func.encode()
        os.chdir(self.workdir)
        _reseed()
        try:
            args, kwargs = pickle.loads(call)
            value = func(*args, **kwargs)
            data = self.jsonable.to_json(value)
            if len(data) > self.max_result:
                return False, f"the result is {len(data)} bytes of JSON; the limit is {self.max_result}".encode()
            return True, data
        except BaseException:
            return False, traceback.format_exc().encode()
        finally:
            os.chdir(self.workdir)
            _clean(self.workdir)


def main() -> None:
    jsonable_path, workdir, max_result = sys.argv[1], sys.argv[2], int(sys.argv[3])
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # prints of user code go to the worker's log, not into the protocol
    os.makedirs(workdir, exist_ok=True)
    executor = Executor(_load_jsonable(jsonable_path), workdir, max_result)
    try:
        import cloudpickle  # noqa: F401  (functions pickled by value need it to load)
    except ImportError:
        pass
    while True:
        message = read_frame(proto_in)
        if message is None:
            return
        kind, items = message
        if kind != "run":
            continue
        for task_id, digest, blob, call in items:
            executor.load(digest, blob)
            ok, payload = executor.run(digest, call)
            write_reply(proto_out, task_id, ok, payload[: max_result + 4096])
        write_reply(proto_out, None)


if __name__ == "__main__":
    main()
