"""Submitting calls: pickle, encrypt into chunks, upload in parallel, register in batches.

Per chunk (up to ``CHUNK_MAX_CALLS`` calls): one presigned PUT; per
``SUBMIT_CHUNKS_PER_REQUEST`` chunks: one API request. Task ids are made here, so a retried
registration never duplicates a task. When the API answers that no worker seen recently can run
the tasks (``SubmitOut.warnings``), each reason is shown as a ``UserWarning`` once every task is
registered (so that warnings turned into errors cannot cut a submit short).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional

import cloudpickle

from hmq import defaults, formats, wire
from hmq._errors import Conflict, UsageError
from hmq._transport import StaleURL
from hmq.limits import Limits

if TYPE_CHECKING:
    from hmq._client import API


class Submission:
    def __init__(
        self,
        api: API,
        tag: str,
        digest: str,
        ncores: int,
        datacenters: Optional[list[str]],
        packages: Sequence[str],
        limits: Limits = Limits(),
        function_name: str = "",
    ) -> None:
        try:
            wire.check_name(tag)
            self.packages = wire.normalise_packages(list(packages))
            self.datacenters = sorted({wire.check_name(d) for d in datacenters}) if datacenters else None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not isinstance(ncores, int) or ncores < 1:
            raise UsageError(f"ncores must be a positive integer, got {ncores!r}")
        self.api, self.tag, self.digest, self.ncores, self.python = api, tag, digest, ncores, wire.PYTHON
        self.limits = limits
        self.kid, self.compute_public = api.compute_key()
        self.function_name = function_name[:200]
        self._slots: deque[wire.UploadSlot] = deque()
        self.warnings: list[str] = []
        """What the API said keeps the tasks from running now, each once (see :func:`warn_placement`)."""

    def _writer(self) -> formats.ChunkWriter:
        return formats.ChunkWriter(
            self.api.identity,
            self.compute_public,
            self.kid,
            tag=self.tag,
            function=self.digest,
            python=self.python,
            ncores=self.ncores,
            packages=self.packages,
            limits=self.limits,
            function_name=self.function_name,
        )

    def _chunks(self, calls: Iterable[Any]) -> Iterable[formats.ChunkWriter]:
        """Chunks of encrypted calls, each with fresh task ids."""
        writer = self._writer()
        for n, call in enumerate(calls):
            pickled = call if isinstance(call, (bytes, bytearray)) else _pickle_call(n, call)
            if len(pickled) > defaults.MAX_CALL_BYTES:
                raise UsageError(
                    f"call {n} is {len(pickled)} bytes; one call may carry at most "
                    f"{defaults.MAX_CALL_BYTES} bytes (store large inputs elsewhere and pass a reference)"
                )
            writer.add(new_task_id(), bytes(pickled))
            if len(writer) >= defaults.CHUNK_MAX_CALLS or writer.nbytes >= defaults.CHUNK_MAX_BYTES:
                yield writer
                writer = self._writer()
        if len(writer):
            yield writer

    def _slot(self, remaining_hint: int) -> wire.UploadSlot:
        if not self._slots:
            self._slots.extend(self.api._chunk_slots(max(1, min(defaults.SUBMIT_SLOTS_PER_REQUEST, remaining_hint))))
        return self._slots.popleft()

    def _upload(self, writer: formats.ChunkWriter, slot: wire.UploadSlot) -> wire.ChunkIn:
        blob, header_len, entries = writer.finish()
        try:
            self.api.transport.put_object(slot.url, blob)
        except StaleURL:  # a URL kept from before the API moved: a fresh one from its new address
            slot = self.api._chunk_slots(1)[0]
            self.api.transport.put_object(slot.url, blob)
        return wire.ChunkIn(
            key=slot.key,
            header_len=header_len,
            function=self.digest,
            python=self.python,
            ncores=self.ncores,
            packages=self.packages,
            datacenters=self.datacenters,
            tasks=[(uuid.UUID(e.task_id), e.offset, e.length) for e in entries],
            timeout=self.limits.timeout,
            memory=self.limits.memory,
            retries=self.limits.retries,
        )

    def _register(self, chunks: list[wire.ChunkIn], progress: Any, sink: Callable[[list[str]], Any]) -> None:
        # The ids go to the sink first: if the request is interrupted, the caller knows of every
        # task that may have been registered.
        sink([str(t[0]) for c in chunks for t in c.tasks])
        body = wire.SubmitIn(tag=self.tag, chunks=chunks)
        try:
            out = self.api._call("POST", "/v1/tasks", body, model=wire.SubmitOut)
        except Conflict as exc:  # a worker found the stored function corrupt since this client registered it
            if exc.code != "function_corrupt" or not self.api._replace_function(self.digest):
                raise
            out = self.api._call("POST", "/v1/tasks", body, model=wire.SubmitOut)
        self.warnings += [message for message in out.warnings if message not in self.warnings]
        if progress is not None:
            progress.update(sum(len(c.tasks) for c in chunks))

    def run(
        self, calls: Iterable[Any], progress: Any = None, sink: Optional[Callable[[list[str]], Any]] = None
    ) -> list[str]:
        """Submit ``calls`` (pickled, or ``(args, kwargs)`` pairs). Task ids go to ``sink`` in
        submission order, a batch of chunks at a time, as each batch is sent for registration;
        without one they are returned."""
        collected: list[str] = []
        sink = sink or collected.extend
        chunks = iter(self._chunks(calls))
        first, second = next(chunks, None), next(chunks, None)
        if first is None:
            raise UsageError("nothing to submit: no calls were recorded")
        if second is None:  # one chunk (a call waited for): uploaded here, no hop to an upload thread
            self._register([self._upload(first, self._slot(1))], progress, sink)
            return collected
        total = len(calls) if isinstance(calls, Sized) else 0
        self._upload_all(
            itertools.chain((first, second), chunks), max(2, -(-total // defaults.CHUNK_MAX_CALLS)), progress, sink
        )
        return collected

    def _upload_all(
        self, chunks: Iterable[formats.ChunkWriter], estimate: int, progress: Any, sink: Callable[[list[str]], Any]
    ) -> None:
        """Upload ``chunks`` (about ``estimate`` of them) in parallel, ``SUBMIT_UPLOADS_IN_FLIGHT``
        at a time, and register them ``SUBMIT_CHUNKS_PER_REQUEST`` at a time, in order."""
        pending: deque[Future[wire.ChunkIn]] = deque()
        uploaded: list[wire.ChunkIn] = []
        with ThreadPoolExecutor(defaults.SUBMIT_UPLOADS_IN_FLIGHT, thread_name_prefix="hmq-upload") as pool:
            for n, writer in enumerate(chunks):
                pending.append(pool.submit(self._upload, writer, self._slot(estimate - n)))
                while len(pending) > defaults.SUBMIT_UPLOADS_IN_FLIGHT or (pending and pending[0].done()):
                    uploaded.append(pending.popleft().result())
                    if len(uploaded) >= defaults.SUBMIT_CHUNKS_PER_REQUEST:
                        self._register(uploaded, progress, sink)
                        uploaded = []
            while pending:
                uploaded.append(pending.popleft().result())
        if uploaded:
            self._register(uploaded, progress, sink)


def warn_placement(tag: str, messages: Iterable[str]) -> None:
    """Each of ``messages`` (from the submit answers) as a ``UserWarning`` naming the tag."""
    for message in messages:
        warn_outside_hmq(f"tag {tag}: {message}")


def warn_outside_hmq(message: str) -> None:
    """A ``UserWarning`` attributed to the first caller outside hmq (the user's submit line), so
    that notebooks and scripts show it, and tests can catch it with ``pytest.warns``."""
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "hmq":
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _pickle_call(n: int, call: Any) -> bytes:
    try:
        args, kwargs = call
        return cloudpickle.dumps((tuple(args), dict(kwargs)))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"call {n} cannot be sent: {exc}") from None
    except Exception as exc:  # pickling runs arbitrary __reduce__ code of user objects
        raise UsageError(f"call {n} cannot be pickled: {type(exc).__name__}: {exc}") from exc


def new_task_id() -> str:
    """A new task id: a UUID of version 7 (RFC 9562), 48 bits of Unix time in milliseconds
    followed by 74 random bits. Ids made one after another sort together, so each lands beside
    the last in the indexes on them (the tag's SQLite file, the API's index) instead of on a
    random page: with a tag's database bounded to a small page cache, random ids make a
    1,000,000-task submit twice as slow."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0x2 << 62
    return str(uuid.UUID(int=value | rand & (1 << 62) - 1))
