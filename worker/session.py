"""The worker's side of the protocol: one ``WorkerSession`` per worker.

The session holds what the API knows the worker by (its worker id, given at registration), the
signed transport, and the one cache of verified functions. It speaks every worker request:
register, claim, heartbeat (both carry the package environments the worker is building), result
upload slots, complete, the package sets pending tasks need, and the queue depth autoscalers poll. :class:`worker.runner.CachedWorker`, :class:`worker.prepare.Preparer` and
:func:`worker.report.report` use it; the worker methods the user guide documents on ``hmq.API``
(``dequeue_tasks``, ``sync_tasks``, ``store_results``, ...) delegate to one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Optional

from hmq import crypto, defaults, wire
from hmq._errors import IntegrityError, Unreachable, UsageError
from hmq._http import Interrupt
from hmq._transport import Transport
from hmq._version import __version__

FUNCTION_CACHE = 256
"""Default size of a session's function cache (see ``WorkerSettings.function_cache``)."""

SPARE_RESULT_SLOTS = defaults.RESULT_SLOT_SPARE
"""Result upload URLs a session keeps by default (``WorkerSettings.result_slot_spare``)."""


class FunctionCache:
    """Verified pickled functions, at most ``size`` of them (the least recently used go first).

    Entries are keyed by the submitting user and the digest: a function is reused only for the
    tasks of the user it was fetched and verified for.
    """

    def __init__(self, size: int = FUNCTION_CACHE) -> None:
        if size < 1:
            raise UsageError("a function cache holds at least one function")
        self.size = size
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user: str, digest: str) -> Optional[bytes]:
        """The pickled function ``digest`` of ``user`` (a key id), if it is cached."""
        with self._lock:
            payload = self._entries.get((user, digest))
            if payload is not None:
                self._entries.move_to_end((user, digest))
            return payload

    def put(self, user: str, digest: str, payload: bytes) -> None:
        """Keep a pickled function; raises :class:`hmq.IntegrityError` if it does not match ``digest``."""
        if hashlib.sha256(payload).hexdigest() != digest:
            raise IntegrityError("function payload does not match its digest")
        with self._lock:
            self._entries[(user, digest)] = payload
            self._entries.move_to_end((user, digest))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class WorkerSession:
    """One worker's conversation with the API.

    Args:
        transport: signed requests with the worker's key (a key granted the ``worker`` role).
        function_cache: how many verified functions to keep.
        owns_transport: whether :meth:`close` closes the transport too.
        clock: seconds, monotonic (when spare result upload URLs are too old to use).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        function_cache: int = FUNCTION_CACHE,
        owns_transport: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.functions = FunctionCache(function_cache)
        self.worker_id: Optional[uuid.UUID] = None
        self._owns_transport = owns_transport
        self._clock = clock
        self._lock = threading.Lock()
        self._spare: deque[tuple[float, wire.UploadSlot]] = deque()  # (usable until, result slot)

    @classmethod
    def connect(
        cls,
        url: str,
        identity: crypto.Identity,
        *,
        function_cache: int = FUNCTION_CACHE,
        retry_deadline: float = defaults.REQUEST_RETRY_DEADLINE_SECONDS,
    ) -> WorkerSession:
        """A session with a transport of its own to the API at ``url`` (retrying a request for up
        to ``retry_deadline`` seconds while the API or the object store is down)."""
        transport = Transport(url, identity, retry_deadline=retry_deadline)
        return cls(transport, function_cache=function_cache, owns_transport=True)

    @property
    def url(self) -> str:
        return self.transport.url

    def close(self) -> None:
        """Close the network connections (when the session made them)."""
        if self._owns_transport:
            self.transport.close()

    def _path(self, action: str) -> str:
        if self.worker_id is None:
            raise UsageError("register the worker first (WorkerSession.register)")
        return f"/v1/workers/{self.worker_id}/{action}"

    # --- the protocol ----------------------------------------------------------------------
    def register(
        self,
        datacenter: str,
        cores: int,
        python: Optional[str] = None,
        memory: Optional[int] = None,
        isolation: str = "unknown",
    ) -> wire.WorkerOut:
        """Register as a worker of ``datacenter`` with ``cores`` cores and ``memory`` bytes
        (``None``: not told), isolating calls by ``isolation`` (shown to admins); later calls
        use the id."""
        body = wire.WorkerIn(
            datacenter=datacenter,
            cores=cores,
            memory=memory,
            isolation=isolation,  # type: ignore[arg-type]
            python=python or wire.PYTHON,
            hostname=socket.gethostname(),
            version=__version__,
        )
        out = self.transport.call("POST", "/v1/workers", body, model=wire.WorkerOut)
        self.worker_id = out.worker_id
        return out

    def claim(
        self,
        max_tasks: int,
        available: int,
        *,
        allocated: int = 0,
        running: int = 0,
        used: int = 0,
        per_user: Optional[dict[str, int]] = None,
        others: Optional[int] = None,
        per_function: Optional[dict[str, int]] = None,
        unmeasured: Optional[int] = None,
        building: Optional[Builds] = None,
        wait: float = 0.0,
        held: Optional[Iterable[str]] = None,
        interrupt: Optional[Interrupt] = None,
        spare: int = 0,
    ) -> wire.ClaimOut:
        """Lease up to ``max_tasks`` tasks needing at most ``available`` cores (never retried:
        a repeated claim would lease other tasks), at most ``per_user[key id]`` of a user named
        there and ``others`` of any other (``None``: no limit per user), and likewise
        ``per_function[digest]`` and ``unmeasured`` per function. ``allocated``,
        ``running`` and ``used`` describe the worker's load, for operators; ``building`` the
        package environments it builds now (package set, seconds so far), for the tag status
        (``None``: not told). With ``wait``, the API holds the claim up to that long (cut to its
        own limit) until there are tasks. ``held`` (every task the worker holds) makes the claim
        a heartbeat too: the answer's ``held_until`` and ``drop`` are a heartbeat's (an API that
        does not read ``held`` answers ``held_until`` null). ``interrupt`` ends a waiting claim
        from another thread (the worker is told to stop): the API, seeing its client hang up,
        hands back whatever it leased for it; an answer already on its way is still read, and
        nothing else comes back but an empty answer. ``spare``: the result upload URLs to keep
        (as :meth:`result_slots`); when half or more of them are used up, the claim asks for the
        rest along with the tasks, so that reporting those needs no request for URLs."""
        body = wire.ClaimIn(
            max_tasks=max(1, min(max_tasks, defaults.CLAIM_MAX_TASKS)),
            available=max(available, 1),
            per_user=dict(per_user or {}),
            others=others,
            per_function=dict(per_function or {}),
            unmeasured=unmeasured,
            allocated=allocated,
            running=running,
            used=used,
            building=_builds(building),
            wait=min(max(wait, 0.0), 600.0),
            held=None if held is None else [uuid.UUID(str(t)) for t in held],
            result_slots=self._slots_to_ask(spare),
        )
        try:
            out = self.transport.call(
                "POST", self._path("claim"), body, model=wire.ClaimOut, retry=False, interrupt=interrupt
            )
            if out.uploads is not None:
                self._keep(out.uploads)
            return out
        except Unreachable:
            if interrupt is None or not interrupt.fired:
                raise
            return wire.ClaimOut(groups=[], lease_until=0.0)

    def heartbeat(self, held: Iterable[str], building: Optional[Builds] = None) -> list[str]:
        """Extend the leases of the ``held`` tasks; returns those to drop (cancelled, deleted or
        leased to another worker). ``building``: as for :meth:`claim`."""
        body = wire.HeartbeatIn(tasks=[uuid.UUID(str(t)) for t in held], building=_builds(building))
        out = self.transport.call("POST", self._path("heartbeat"), body, model=wire.HeartbeatOut)
        return [str(t) for t in out.drop]

    def result_slots(self, count: int, spare: int = SPARE_RESULT_SLOTS) -> list[wire.UploadSlot]:
        """Presigned PUT URLs for ``count`` result objects: kept ones first (while half their
        lifetime is left), then new ones, asking for ``spare`` more to keep (a report then
        needs no request of its own for its URLs). Spares never used are swept by the API like
        any unregistered upload."""
        kept = self._kept_slots(count)
        need = count - len(kept)
        return kept + (self._new_slots(need, need + spare) if need else [])

    def keep_result_slots(self, spare: int = SPARE_RESULT_SLOTS) -> None:
        """Ask for ``spare`` result upload URLs if none are kept: called after a report, so
        that the next one (a result someone may be waiting for) costs only its PUT and its
        complete."""
        with self._lock:
            now = self._clock()
            if spare <= 0 or any(until > now for until, _ in self._spare):
                return
        self._new_slots(0, spare)

    @property
    def kept_result_slots(self) -> int:
        """How many spare result upload URLs the session keeps now (some may be too old to use)."""
        with self._lock:
            return len(self._spare)

    def _slots_to_ask(self, spare: int) -> int:
        """How many result URLs a claim asks for to keep ``spare``: none while more than half
        of them are kept and usable (a claim then costs no upload row), else the rest."""
        with self._lock:
            now = self._clock()
            usable = sum(1 for until, _ in self._spare if until > now)
        return 0 if usable > spare // 2 else min(spare - usable, defaults.UPLOAD_SLOTS_MAX)

    def _keep(self, uploads: wire.UploadsOut, skip: int = 0) -> None:
        """Keep the slots of ``uploads`` past the first ``skip``, usable for half their lifetime."""
        usable_until = self._clock() + uploads.expires_in / 2
        with self._lock:
            self._spare.extend((usable_until, slot) for slot in uploads.slots[skip:])

    def _kept_slots(self, count: int) -> list[wire.UploadSlot]:
        with self._lock:
            now = self._clock()
            while self._spare and self._spare[0][0] <= now:
                self._spare.popleft()
            return [self._spare.popleft()[1] for _ in range(min(count, len(self._spare)))]

    def _new_slots(self, need: int, ask: int) -> list[wire.UploadSlot]:
        """``ask`` new result slots: the first ``need`` returned, the rest kept."""
        body = wire.UploadsIn(kind="results", count=min(ask, defaults.UPLOAD_SLOTS_MAX))
        out = self.transport.call("POST", self._path("uploads"), body, model=wire.UploadsOut)
        self._keep(out, need)
        return out.slots[:need]

    def complete(self, body: wire.CompleteIn) -> wire.CompleteOut:
        """Report uploaded result objects, rejected tasks and tasks handed back. A repeated
        report is answered as the first one, so it is retried."""
        return self.transport.call("POST", self._path("complete"), body, model=wire.CompleteOut)

    def queue_depth(self, datacenter: Optional[str] = None, python: Optional[str] = None) -> wire.QueueDepth:
        """Open tasks by placement with the live workers that could run them (what an
        autoscaler polls; needs no registration); only those for ``datacenter`` / ``python``."""
        params = {"datacenter": datacenter, "python": python}
        return self.transport.call("GET", "/v1/queue", params=params, model=wire.QueueDepth)

    def report_corrupt(self, chunk: str, reason: str) -> bool:
        """Tell the API that the function object of the tasks of ``chunk`` (which this worker
        holds) is corrupt: the next registration of the function replaces it."""
        body = wire.CorruptIn(chunk=chunk, reason=reason[: defaults.REJECTION_MAX_CHARS])
        return bool(self.transport.call("POST", self._path("corrupt"), body, model=wire.CorruptOut).marked)

    def missing_dependencies(
        self, datacenter: str, installlist: Sequence[Sequence[str]] | str | os.PathLike[str], python_version: str
    ) -> list[list[str]]:
        """Package sets that pending tasks for ``datacenter`` and ``python_version`` need and
        that are not in ``installlist`` (package sets, or a file with one set per line)."""
        installed = {tuple(sorted(s)) for s in _package_sets(installlist)}
        out = self.transport.call(
            "GET",
            "/v1/workers/packagesets",
            params={"datacenter": datacenter, "python": python_version},
            model=wire.PackageSetsOut,
        )
        return [s for s in out.packagesets if tuple(sorted(s)) not in installed]


Builds = Sequence[tuple[Sequence[str], float]]
"""Package environments being built: package set and seconds since the build started."""


def _builds(building: Optional[Builds]) -> wire.Builds:
    if building is None:
        return None
    return [wire.EnvBuild(packages=list(p), seconds=max(0.0, s)) for p, s in building][: defaults.WORKER_MAX_BUILDS]


def _package_sets(installlist: Sequence[Sequence[str]] | str | os.PathLike[str]) -> list[Sequence[str]]:
    if not isinstance(installlist, (str, os.PathLike)):
        return list(installlist)
    try:
        lines = Path(installlist).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split() for line in lines if line.strip()]
