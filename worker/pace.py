"""How long calls take, per function, and so how many a claim should ask for.

A worker claims only what it can start soon: within ``horizon`` seconds (``WorkerSettings.
claim_horizon_seconds``). :class:`Pace` measures each function's calls (an average of the
durations the executors report, per user and function digest) and remembers the functions it
claimed lately. From those it sizes a claim per function (``ClaimIn.per_function``):

- a function measured: as many calls per free core as fit in the horizon (at least one), so
  short calls come in batches and long ones one per free core;
- any other function (not measured yet, ``ClaimIn.unmeasured``): one call per free core, growing
  as soon as the first calls report: the second claim of a big tag of short calls is already a
  full batch.

Sizes are per function, not per user: a user whose last tag was of short calls and who now
submits long ones gets one long call per free core, not a batch sized for the short ones (which
would leave other workers idle while this one works through the batch).

A core counts as free when nothing runs on it, or when what runs is expected to end within the
horizon; a call of a function not measured yet, or one past ``start_within`` seconds, keeps
its core busy.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from hmq import defaults
from worker.prepare import Job

CLAIMED = defaults.CLAIM_MAX_FUNCTIONS
"""Functions claimed lately that a worker remembers (the least recently claimed go first): the
most a claim may name."""

FUNCTIONS = 1024
"""Functions whose call durations a worker remembers (the least recently measured go first)."""

WEIGHT = 0.2
"""Weight of the newest duration in a function's running average."""


@dataclass(frozen=True)
class ClaimSize:
    """What one claim asks for: ``total`` tasks at most, ``per_function`` by digest,
    ``unmeasured`` of each function not named."""

    total: int
    per_function: dict[str, int]
    unmeasured: int


class Pace:
    """Per-function call durations, and claim sizes from them.

    Args:
        horizon: seconds of work per free core a claim asks for.
        start_within: a call running this long keeps its core busy, whatever was measured.
        limit: the most tasks one claim asks for.
    """

    def __init__(self, horizon: float, start_within: float, limit: int) -> None:
        self.horizon = horizon
        self.start_within = start_within
        self.limit = limit
        self._seconds: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._claimed: OrderedDict[tuple[str, str], None] = OrderedDict()  # (user key id, digest), lately claimed

    def claimed(self, jobs: Iterable[Job]) -> None:
        """Note the functions just claimed: the ones the next claims name."""
        for job in jobs:
            key = (job.user.key_id, job.digest)
            self._claimed[key] = None
            self._claimed.move_to_end(key)
        while len(self._claimed) > CLAIMED:
            self._claimed.popitem(last=False)

    def record(self, job: Job, seconds: float) -> None:
        """One call of ``job``'s function took ``seconds``."""
        key = (job.user.key_id, job.digest)
        old = self._seconds.get(key)
        self._seconds[key] = seconds if old is None else (1 - WEIGHT) * old + WEIGHT * seconds
        self._seconds.move_to_end(key)
        while len(self._seconds) > FUNCTIONS:
            self._seconds.popitem(last=False)

    def expected(self, job: Job) -> Optional[float]:
        """How long a call of ``job``'s function takes, on average (``None``: not measured)."""
        return self._seconds.get((job.user.key_id, job.digest))

    def busy(self, job: Job, running_for: float) -> bool:
        """Whether a call running ``running_for`` seconds keeps its core past the horizon."""
        expected = self.expected(job)
        if expected is None or running_for >= self.start_within:
            return True
        return expected - running_for > self.horizon

    def size(self, free: int, queued: Iterable[Job]) -> ClaimSize:
        """The claim for ``free`` cores, less what is ``queued`` (claimed, not started)."""
        waiting: dict[str, int] = {}
        for job in queued:
            waiting[job.digest] = waiting.get(job.digest, 0) + 1
        fits: dict[str, int] = {}
        for key in self._claimed:
            expected = self._seconds.get(key)
            if expected is not None:
                fit = max(1, math.floor(self.horizon / max(expected, 1e-6)))
                digest = key[1]  # two users' functions of one digest: the slower decides
                fits[digest] = min(fit, fits.get(digest, fit))
        per_function = {d: max(0, min(self.limit, free * fit) - waiting.get(d, 0)) for d, fit in fits.items()}
        unmeasured = min(self.limit, free)
        total = min(self.limit, max([unmeasured, *per_function.values()]) if free else 0)
        return ClaimSize(total, per_function, unmeasured)
