"""The executor: a long-lived process that runs calls, one at a time, for the worker.

Run as ``python -I worker/executor.py JSONABLE_PATH WORKDIR`` by the worker, with the
interpreter of the task's package environment. It needs only the standard library and
cloudpickle, so it also runs in environments that do not have hmq installed.

Protocol on the inherited stdin/stdout (both moved to private descriptors at start, so the
user's prints go to stderr and cannot corrupt it): frames of ``u32 length | pickle``.
Request ``("run", [(task_id, digest, function_or_None, call), ...])``; replies
``("r", task_id, ok, payload)`` per call, then ``("end",)``. ``payload`` is the result's JSON
or, on failure, the formatted traceback.

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
    def __init__(self, jsonable: Any, workdir: str) -> None:
        self.jsonable = jsonable
        self.workdir = workdir
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
            return True, self.jsonable.to_json(value)
        except BaseException:
            return False, traceback.format_exc().encode()
        finally:
            os.chdir(self.workdir)
            _clean(self.workdir)


def main() -> None:
    jsonable_path, workdir = sys.argv[1], sys.argv[2]
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # prints of user code go to the worker's log, not into the protocol
    os.makedirs(workdir, exist_ok=True)
    executor = Executor(_load_jsonable(jsonable_path), workdir)
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
            write_frame(proto_out, ("r", task_id, ok, payload))
        write_frame(proto_out, ("end",))


if __name__ == "__main__":
    main()
