"""From a claim to runnable jobs: fetch by presigned URL, verify, decrypt.

Nothing runs unless (1) the submitting user's certificate carries the admin's signature, (2)
the chunk manifest carries that user's signature, (3) the function matches the digest the user
signed and (4) each call matches its digest in the manifest. A failure of these checks rejects
the affected tasks with the reason. A transient failure (the object store did not answer, or
answered 5xx: ``HmqError.transient``) rejects nothing: the tasks are handed back to the queue,
unrun, and the worker backs off. Nothing here stops the worker.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from hmq import crypto, formats, wire
from hmq._errors import HmqError, IntegrityError
from hmq.credentials import WorkerCredentials
from hmq.limits import Limits
from worker.session import WorkerSession

log = logging.getLogger("hmq.worker")

ONE_FETCH_BYTES = 256 * 1024
"""A chunk whose claimed calls end within this many bytes is fetched with one GET, its header
and those calls together (a small tag, a single call); a bigger one as its header (cached) and
then the byte range of its calls."""


@dataclass
class Job:
    """One verified, decrypted call, ready for an executor."""

    task_id: str
    tag: str
    user: crypto.PublicIdentity
    packages: list[str]
    ncores: int
    digest: str
    function: bytes
    call: bytes
    limits: Limits = field(default_factory=Limits)  # as the user signed them
    failures: int = 0  # earlier runs of this call that failed (the API requeued it)
    claimed: float = field(default_factory=time.monotonic)

    @property
    def group(self) -> tuple[str, tuple[str, ...], int]:
        """Jobs of one group may share an executor: same user, package set and core count."""
        return self.user.key_id, tuple(self.packages), self.ncores

    def attempt_line(self) -> str:
        """The first line of this run's error when the call may run more than once."""
        return f"failed on attempt {self.failures + 1} of {self.limits.retries + 1}\n"


class Preparer:
    """Turns claim groups into jobs, caching verified certificates and chunk headers; verified
    functions go to the session's function cache.

    Args:
        session: the worker's session (its transport fetches the blobs).
        credentials: the worker's credentials (the admin key checks certificates, the compute
            key opens chunks and functions).
        header_cache: how many verified chunk headers to keep.
    """

    def __init__(self, session: WorkerSession, credentials: WorkerCredentials, header_cache: int) -> None:
        self.session = session
        self.credentials = credentials
        self.python = wire.PYTHON
        self.header_cache = header_cache
        self._users: dict[str, crypto.PublicIdentity] = {}
        self._headers: OrderedDict[tuple[str, str], formats.ChunkHeader] = OrderedDict()

    def user(self, certificate: dict[str, Any]) -> crypto.PublicIdentity:
        """The submitting user's key, once its certificate is checked against the admin key."""
        sig = str(certificate.get("sig", ""))
        if sig not in self._users:
            public = crypto.verify_certificate(certificate, self.credentials.admin)
            if certificate.get("role") != "user":
                raise IntegrityError("the tasks' owner is not certified as a user by the admin")
            self._users[sig] = public
        return self._users[sig]

    def header(
        self, group: wire.ClaimGroup, user: crypto.PublicIdentity, head: Optional[bytes] = None
    ) -> formats.ChunkHeader:
        """The chunk's manifest, verified as signed by ``user`` and decrypted (from ``head``,
        the chunk's first bytes, when the caller fetched them already)."""
        key = (group.chunk_key, user.key_id)
        header = self._headers.get(key)
        if header is None:
            if head is None:
                head = self.session.transport.get_object(group.chunk_url, 0, group.header_len - 1)
            header = formats.ChunkHeader.open(head[: group.header_len], user, self.credentials.compute)
            self._headers[key] = header
            while len(self._headers) > self.header_cache:
                self._headers.popitem(last=False)
        else:
            self._headers.move_to_end(key)
        return header

    def function(self, group: wire.ClaimGroup, user: crypto.PublicIdentity, header: formats.ChunkHeader) -> bytes:
        """The pickled function of the chunk: from the session's cache, or fetched, decrypted
        and checked against the digest the user signed. A corrupt object is reported to the API
        (the next registration of the function replaces it) and named in the error."""
        digest = header.function
        pickled = self.session.functions.get(user.key_id, digest)
        if pickled is None:
            blob = self.session.transport.get_object(group.function_url)
            try:
                pickled = formats.decode_function(blob, self.credentials.compute, digest)
            except IntegrityError as exc:
                name = header.function_name or f"digest {digest[:12]}"
                reason = f"the function object of {name} is corrupt ({exc}); submitting again replaces it"
                self.session.report_corrupt(group.chunk_key, reason)
                raise IntegrityError(reason) from None
            self.session.functions.put(user.key_id, digest, pickled)
        return pickled

    def prepare(self, group: wire.ClaimGroup) -> tuple[list[Job], list[wire.RejectedTask], list[str]]:
        """Verified jobs of one claim group, the tasks rejected with their reasons, and the tasks
        to hand back unrun (their objects could not be fetched for now)."""
        try:
            return (*self._prepare(group), [])
        except HmqError as exc:
            if exc.transient:
                log.warning(
                    "handing back %d tasks of tag %s: cannot fetch their objects now: %s",
                    len(group.tasks),
                    group.tag,
                    exc,
                )
                return [], [], [str(t.id) for t in group.tasks]
            reason = str(exc)
        except Exception as exc:  # a defect here must reject the tasks, not stop the worker
            log.exception("preparing chunk %s failed", group.chunk_key)
            reason = f"{type(exc).__name__}: {exc}"
        message = f"rejected by worker {self.credentials.name!r}: {reason}"
        log.warning("%s (%d tasks of tag %s)", message, len(group.tasks), group.tag)
        return [], [wire.RejectedTask(id=t.id, error=message) for t in group.tasks], []

    def _fetch(
        self, group: wire.ClaimGroup, user: crypto.PublicIdentity, start: int, end: int
    ) -> tuple[formats.ChunkHeader, Optional[bytes]]:
        """The chunk's header and, when the calls ``start:end`` lie within ``ONE_FETCH_BYTES``
        of an uncached header, those calls' bytes from the same GET (else ``None``)."""
        if end > ONE_FETCH_BYTES or (group.chunk_key, user.key_id) in self._headers:
            return self.header(group, user), None
        head = self.session.transport.get_object(group.chunk_url, 0, end - 1)
        return self.header(group, user, head), head[start:end]

    def _prepare(self, group: wire.ClaimGroup) -> tuple[list[Job], list[wire.RejectedTask]]:
        user = self.user(group.certificate)
        start = min(t.offset for t in group.tasks)
        end = max(t.offset + t.length for t in group.tasks)
        header, data = self._fetch(group, user, start, end)
        if header.function != group.function:
            raise IntegrityError("the API named another function than the one the user signed")
        if header.tag != group.tag:
            raise IntegrityError("the chunk was signed for another tag")
        if header.python != self.python:
            raise IntegrityError(f"the tasks were pickled by Python {header.python}; this worker runs {self.python}")
        function = self.function(group, user, header)
        if data is None:
            data = self.session.transport.get_object(group.chunk_url, start, end - 1)
        jobs, rejected = [], []
        for t in group.tasks:
            task_id = str(t.id)
            try:
                call = header.open_call(task_id, data[t.offset - start : t.offset - start + t.length])
            except IntegrityError as exc:
                rejected.append(
                    wire.RejectedTask(id=t.id, error=f"rejected by worker {self.credentials.name!r}: {exc}")
                )
                continue
            jobs.append(
                Job(
                    task_id,
                    group.tag,
                    user,
                    header.packages,
                    header.ncores,
                    header.function,
                    function,
                    call,
                    header.limits,
                    t.failures,
                )
            )
        return jobs, rejected
