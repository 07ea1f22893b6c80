"""Claim sizes from measured call durations (worker/pace.py), without a server."""

from __future__ import annotations

import pytest

from hmq import crypto
from worker.pace import Pace
from worker.prepare import Job

ADA, BOB = crypto.Identity.generate().public, crypto.Identity.generate().public


def _job(user: crypto.PublicIdentity, digest: str) -> Job:
    return Job("t", "tag", user, [], 1, digest, b"", b"")


def test_unmeasured_calls_are_claimed_one_per_free_core() -> None:
    pace = Pace(horizon=2.0, start_within=5.0, limit=500)
    size = pace.size(free=4, queued=[])
    assert (size.total, size.per_function, size.unmeasured) == (4, {}, 4)
    assert pace.size(free=0, queued=[]).total == 0
    assert pace.busy(_job(ADA, "f"), running_for=0.01)  # not measured: its core is taken


def test_short_calls_come_in_batches_of_a_horizon_and_long_ones_one_per_core() -> None:
    pace = Pace(horizon=2.0, start_within=5.0, limit=500)
    short, long = _job(ADA, "short"), _job(BOB, "long")
    pace.claimed([short, long])
    pace.record(short, 0.01)  # 200 fit in the horizon
    pace.record(long, 6.0)
    size = pace.size(free=2, queued=[short] * 50)
    assert size.per_function == {"short": 400 - 50, "long": 2}
    assert (size.total, size.unmeasured) == (350, 2)
    tiny = _job(ADA, "tiny")
    pace.claimed([tiny])
    pace.record(tiny, 1e-5)
    assert pace.size(free=2, queued=[]).per_function["tiny"] == 500  # never past the claim limit


def test_sizes_are_per_function_not_per_user() -> None:
    """A user whose short calls were measured, submitting a new (long) function: its calls are
    not measured, so they come one per free core, not in a batch sized for the short ones."""
    pace = Pace(horizon=2.0, start_within=5.0, limit=500)
    short = _job(ADA, "short")
    pace.claimed([short])
    pace.record(short, 0.01)
    size = pace.size(free=1, queued=[])
    assert (size.per_function, size.unmeasured) == ({"short": 200}, 1)
    pace.claimed([_job(ADA, "long")])  # claimed, not measured yet: still one per core
    assert pace.size(free=1, queued=[]).per_function == {"short": 200}
    slow = _job(BOB, "short")  # another user's function of the same digest, slower: it decides
    pace.claimed([slow])
    pace.record(slow, 1.0)
    assert pace.size(free=1, queued=[]).per_function == {"short": 2}


def test_a_core_is_free_when_its_call_ends_within_the_horizon() -> None:
    pace = Pace(horizon=2.0, start_within=5.0, limit=500)
    job = _job(ADA, "f")
    pace.record(job, 3.0)
    assert pace.busy(job, running_for=0.5)  # 2.5 s to go
    assert not pace.busy(job, running_for=1.5)  # 1.5 s to go
    assert pace.busy(job, running_for=5.0)  # running past start_within: nobody knows


def test_durations_are_a_running_average_per_user_and_function() -> None:
    pace = Pace(horizon=2.0, start_within=5.0, limit=500)
    pace.record(_job(ADA, "f"), 1.0)
    pace.record(_job(ADA, "f"), 2.0)
    assert pace.expected(_job(ADA, "f")) == pytest.approx(1.2)
    assert pace.expected(_job(BOB, "f")) is None  # another user's function of the same digest
