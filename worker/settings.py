"""``WorkerSettings``: what a worker process is told at start, fixed for its life.

``python -m worker`` builds them once from its options (and their ``HMQ_*`` variables) and hands
them to :class:`worker.runner.CachedWorker`, which passes the parts each piece needs. Nothing in
``worker/`` reads a tunable anywhere else. The protocol's own limits (how many tasks one claim
may ask for, the largest result) stay in :mod:`hmq.defaults`: the API enforces them.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from hmq import defaults, wire
from hmq._errors import ConfigurationError, UsageError
from hmq.limits import parse_memory
from worker.pool import MAX_LOG_BYTES
from worker.sandbox import Isolation
from worker.session import FUNCTION_CACHE

ISOLATION_MODES = tuple(mode.value for mode in Isolation)


def _all_cores() -> int:
    return os.cpu_count() or 1


def _total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "hmq-worker"


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's settings (see ``python -m worker --help`` for the options that set them)."""

    url: str
    """The API's URL."""

    datacenter: str = "default"
    """Name reported to the API; tasks submitted with ``datacenters=[...]`` run only where named."""

    cores: int = field(default_factory=_all_cores)
    """Cores this worker may use (default: all of the machine's)."""

    memory: int = field(default_factory=_total_memory)
    """Bytes of memory this worker offers (default: the machine's total; a size like ``"8GiB"``
    is read too). Only tasks whose ``memory=`` fits are claimed."""

    cache_dir: Path = field(default_factory=_default_cache_dir)
    """Package environments (``envs/``) and the executors' scratch directories (``scratch/``)."""

    pip_args: tuple[str, ...] = ()
    """Extra pip arguments for building package environments (e.g. an index URL)."""

    executor_user: Optional[str] = None
    """Run calls as this unprivileged user, which cannot read the worker's credentials (the
    worker must run as root to switch users)."""

    isolation: str = "auto"
    """How calls are isolated: ``auto``, ``bwrap``, ``uid`` or ``none`` (see ``worker/sandbox.py``);
    the worker refuses to start when the mode asked for cannot be had."""

    poll_min_seconds: float = 0.05
    """First wait of an idle worker before it asks for work again; doubles up to the maximum."""

    poll_max_seconds: float = 2.0
    """Longest wait of a worker between two claims that found nothing while it still holds
    tasks (also after a failed claim, and against an API that does not wait)."""

    claim_wait_seconds: float = defaults.CLAIM_WAIT_SECONDS
    """How long the claim of a worker that holds nothing waits on the API for tasks (the API
    answers as soon as some are submitted; it may cut the wait shorter); 0: never waits."""

    claim_wait_jitter: float = 0.25
    """Each such claim waits up to this share of ``claim_wait_seconds`` less, at random
    (:meth:`idle_claim_wait`): workers that started, or came back after an outage, together
    do not keep claiming in step (a thousand claims in the same second, every 20 s)."""

    retry_deadline_seconds: float = defaults.REQUEST_RETRY_DEADLINE_SECONDS
    """How long one request to the API or the object store is retried while it gets no answer or
    a 502/503/504 (see ``hmq._transport``); then the tasks it was for are handed back or kept."""

    backoff_max_seconds: float = 30.0
    """Longest pause of claims after tasks had to be handed back because their objects could not
    be fetched (the object store is down); the first pause is ``poll_max_seconds``, doubling."""

    flush_seconds: float = 0.25
    """Finished results are uploaded at least this often, or as soon as a batch is full."""

    result_batch: int = 2000
    """Most results per result object (one signed, encrypted object per user, tag and batch):
    the API's work per report and the client's per pulled object are mostly per object, so
    short calls' results travel many to an object."""

    result_batch_bytes: int = 64 * 1024**2
    """A result object is closed once its compressed results and logs reach this many bytes
    (well under the store's object limit, whatever the results' sizes)."""

    result_slot_spare: int = defaults.RESULT_SLOT_SPARE
    """Result upload URLs asked for beyond a report's own, and after a report when none are
    left, kept for the next reports (used while half their lifetime is left): a report then
    costs its PUT and its complete. Unused ones are swept by the API like any unregistered
    upload."""

    objects_per_request: int = 50
    """Result objects reported to the API in one request (the protocol accepts up to
    ``COMPLETE_MAX_OBJECTS``)."""

    executor_batch: int = 64
    """Calls handed to one executor process per round trip (fewer when they need many cores)."""

    executor_batch_seconds: float = 0.05
    """Calls go to an executor several at a time only while so many take about this long in
    all (by the average call so far): a call queued behind a slow one in a batch waits for it."""

    start_within_seconds: float = 5.0
    """A claimed call that has not started this long after its claim is handed back (released)
    for another worker; a core whose call has run this long counts as busy when claiming."""

    claim_horizon_seconds: float = 2.0
    """A claim asks for what the free cores can start within this long, by the durations
    measured so far (see ``worker/pace.py``): one call per free core while a function's calls
    are not measured, or take longer; as many as fit in this time when they are short."""

    claim_max_tasks: int = defaults.CLAIM_MAX_TASKS
    """Most tasks the worker holds and asks for in one claim (at most the protocol's limit)."""

    function_cache: int = FUNCTION_CACHE
    """Verified functions kept in memory (per user and digest; least recently used go first)."""

    header_cache: int = 64
    """Verified chunk headers kept in memory (least recently used go first)."""

    idle_timeout: Optional[float] = None
    """Leave (exit 0) after this many seconds holding no task; ``None``: never. Batch jobs and
    autoscaled workers use it to end once the queue has nothing for them."""

    max_tasks: Optional[int] = None
    """Claim at most this many tasks, then leave once they are reported; ``None``: no limit."""

    max_runtime: Optional[float] = None
    """Seconds this worker may live (a batch job's wall-clock limit): it stops claiming ``grace``
    seconds before, lets running calls finish until then, hands the rest back and leaves."""

    grace: float = 30.0
    """When asked to stop (SIGTERM) or at ``max_runtime``: how long running calls may go on
    before they are stopped and handed back to the queue."""

    max_log_bytes: int = MAX_LOG_BYTES
    """Output (stdout and stderr together) kept per call and sent to its user with the result; of a
    call that writes more, the first and last halves are kept with a note between them (0: none)."""

    def __post_init__(self) -> None:
        if not self.url:
            raise ConfigurationError("no API URL: pass --api or put it in the credentials")
        try:
            wire.check_name(self.datacenter)
        except ValueError as exc:
            raise ConfigurationError(f"datacenter {self.datacenter!r}: {exc}") from None
        if self.isolation not in ISOLATION_MODES:
            raise ConfigurationError(f"isolation must be one of {', '.join(ISOLATION_MODES)}, not {self.isolation!r}")
        if not 1 <= self.claim_max_tasks <= defaults.CLAIM_MAX_TASKS:
            raise ConfigurationError(f"claim_max_tasks must be between 1 and {defaults.CLAIM_MAX_TASKS}")
        if not 1 <= self.objects_per_request <= defaults.COMPLETE_MAX_OBJECTS:
            raise ConfigurationError(f"objects_per_request must be between 1 and {defaults.COMPLETE_MAX_OBJECTS}")
        self._check_life()
        self._check_intervals()
        if not 0 <= self.max_log_bytes <= defaults.MAX_RESULT_BYTES:
            raise ConfigurationError(f"max_log_bytes must be between 0 and {defaults.MAX_RESULT_BYTES}")
        try:
            object.__setattr__(self, "memory", parse_memory(self.memory) or _total_memory())
        except UsageError as exc:
            raise ConfigurationError(f"worker memory: {exc}") from None
        object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        object.__setattr__(self, "pip_args", tuple(self.pip_args))

    def _check_intervals(self) -> None:
        counts = ("cores", "result_batch", "result_batch_bytes", "executor_batch", "function_cache", "header_cache")
        small = [name for name in counts if getattr(self, name) < 1]
        if small or not 0 < self.poll_min_seconds <= self.poll_max_seconds <= self.backoff_max_seconds:
            raise ConfigurationError(f"invalid worker settings: {', '.join(small) or 'poll or backoff interval'}")
        if (
            self.flush_seconds <= 0
            or self.retry_deadline_seconds < 0
            or self.claim_wait_seconds < 0
            or not 0 <= self.claim_wait_jitter < 1
            or self.result_slot_spare < 0
        ):
            raise ConfigurationError(
                "invalid worker settings: flush interval, retry deadline, claim wait or spare upload URLs"
            )
        if self.claim_horizon_seconds <= 0:
            raise ConfigurationError("claim_horizon_seconds must be positive")
        if self.executor_batch_seconds < 0 or self.start_within_seconds <= 0:
            raise ConfigurationError("executor_batch_seconds cannot be negative, start_within_seconds must be positive")

    def _check_life(self) -> None:
        if self.grace < 0:
            raise ConfigurationError("grace must be zero or more seconds")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ConfigurationError("idle_timeout must be more than 0 seconds")
        if self.max_tasks is not None and self.max_tasks < 1:
            raise ConfigurationError("max_tasks must be at least 1")
        if self.max_runtime is not None and self.max_runtime <= self.grace:
            raise ConfigurationError(
                f"max_runtime ({self.max_runtime:g} s) must be longer than grace ({self.grace:g} s): the worker "
                f"stops claiming grace seconds before its time is up"
            )

    def idle_claim_wait(self, draw: Callable[[], float] = random.random) -> float:
        """How long one claim of an idle worker asks the API to wait: ``claim_wait_seconds``
        less up to ``claim_wait_jitter`` of it (``draw``: a number in [0, 1))."""
        return self.claim_wait_seconds * (1 - self.claim_wait_jitter * draw())

    @classmethod
    def from_options(cls, **options: Any) -> WorkerSettings:
        """Settings from command-line options; an option left unset (``None``) takes its default."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ConfigurationError(f"unknown worker settings: {', '.join(sorted(unknown))}")
        return cls(**{name: value for name, value in options.items() if value is not None})
