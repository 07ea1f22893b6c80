"""Per-call limits on the API's side: what a submit stores and signs, lease deadlines, claims
by memory, requeues while retries remain. Workers are driven step by step (ManualWorker) and
time by a ManualClock."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import hmq
from hmq import formats
from lambdas.db.models import Task
from tests.helpers import ManualClock, ManualWorker, Server, submit


def _rows(server: Server, tag: hmq.Tag) -> list[Any]:
    ids = [uuid.UUID(t) for t in tag.task_ids]
    with server.app.state.ctx.index.read() as session:
        return list(session.scalars(select(Task).where(Task.id.in_(ids)).order_by(Task.seq)))


def test_limits_are_stored_per_task_and_signed_in_the_chunk(server: Server, tmp_path: Path) -> None:
    user = server.user()
    limited = submit(user, lambda x: x, [(1,), (2,)], timeout=30, memory="1.5GiB", retries=2)
    plain = submit(user, lambda x: x, [(1,)])
    unlimited = submit(user, lambda x: x, [(1,)], timeout=None, memory=2_000_000)
    assert {(r.timeout, r.memory, r.retries, r.failures) for r in _rows(server, limited)} == {(30.0, 3 << 29, 2, 0)}
    assert [(r.timeout, r.memory, r.retries) for r in _rows(server, plain)] == [(6 * 3600.0, None, 0)]
    assert [(r.timeout, r.memory, r.retries) for r in _rows(server, unlimited)] == [(None, 2_000_000, 0)]

    worker = ManualWorker(server, tmp_path)
    groups = {g.tag: g for g in worker.claim(10)}
    for tag, limits in (
        (limited, (30.0, 3 << 29, 2)),
        (plain, (6 * 3600.0, None, 0)),
        (unlimited, (None, 2_000_000, 0)),
    ):
        group = groups[tag.name]
        head = worker.session.transport.get_object(group.chunk_url, 0, group.header_len - 1)
        header = formats.ChunkHeader.open(head, user.identity.public, worker.creds.compute)
        assert (header.limits.timeout, header.limits.memory, header.limits.retries) == limits


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("memory", "lots"),
        ("memory", "4 parsecs"),
        ("memory", 0),
        ("memory", -5),
        ("memory", 1.5),
        ("memory", True),
        ("memory", "2PiB"),
        ("timeout", 0),
        ("timeout", -1),
        ("timeout", "1h"),
        ("retries", -1),
        ("retries", 1.5),
        ("retries", 101),
    ],
)
def test_bad_limits_are_refused_at_submit_and_nothing_is_stored(server: Server, option: str, value: Any) -> None:
    user = server.user()
    with pytest.raises(hmq.UsageError, match=option):
        submit(user, lambda x: x, [(1,)], **{option: value})
    assert user.list_tags() == [] and server.object_keys() == []


def test_a_lease_never_outlives_the_calls_deadline(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=30, timeout_margin_seconds=5)
    user = server.user()
    timed = submit(user, lambda: 1, [()], timeout=10)
    forever = submit(user, lambda: 1, [()], timeout=None)
    stuck = ManualWorker(server, tmp_path)
    start = clock()
    held = [str(t.id) for g in stuck.claim() for t in g.tasks]
    (timed_row,) = _rows(server, timed)
    assert timed_row.deadline == timed_row.lease_until == start + 15  # the start, the timeout, the margin
    assert _rows(server, forever)[0].lease_until == start + 30

    clock.advance(8)
    assert stuck.api.sync_tasks("default", held) == []  # heartbeats go on...
    assert _rows(server, timed)[0].lease_until == start + 15  # ...but never past the deadline
    assert _rows(server, forever)[0].lease_until == start + 38

    clock.advance(8)  # past the deadline: the lease ran out, as if the worker were gone
    other = ManualWorker(server, tmp_path)
    (again,) = [t for g in other.claim() for t in g.tasks]
    assert (str(again.id), again.attempt) == (list(timed.task_ids)[0], 1)
    assert stuck.api.sync_tasks("default", held) == [str(again.id)]  # the stuck worker is told to drop it
    assert user.get_tag_status(forever.name)["running"] == 1


def test_failed_runs_are_requeued_while_retries_remain(server: Server, tmp_path: Path) -> None:
    user = server.user()
    retried = submit(user, lambda: 1, [()], retries=1)
    once = submit(user, lambda: 1, [()])
    worker = ManualWorker(server, tmp_path)
    groups = {g.tag: g for g in worker.claim(10)}
    for tag in (retried, once):
        (task,) = groups[tag.name].tasks
        assert task.failures == 0
        worker.complete(groups[tag.name], {}, {str(task.id): f"first error of {tag.name}"})
    assert user.get_tag_status(retried.name)["pending"] == 1  # run again...
    assert user.get_tag_status(once.name)["failed"] == 1  # ...only where retries were asked for
    assert retried.pull() == 1 and list(retried.errors) == [None]  # a retried failure is not an outcome

    (group,) = worker.claim(10)
    (task,) = group.tasks
    assert (task.failures, task.attempt) == (1, 0)  # a failed run is not a lost lease
    worker.complete(group, {}, {str(task.id): "second error"})
    assert retried.pull() == 0 and list(retried.errors) == ["second error"]  # the last attempt's
    assert once.pull() == 0 and list(once.errors) == [f"first error of {once.name}"]
    assert worker.claim(10) == []


def test_claims_hand_out_only_tasks_whose_memory_fits(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_timeout_seconds=60)
    user = server.user()
    big = submit(user, lambda: 1, [()], memory="2GiB")
    small = submit(user, lambda: 1, [()], memory="512MiB")
    free = submit(user, lambda: 1, [()])
    worker = ManualWorker(server, tmp_path, memory=1 << 30)
    assert {g.tag for g in worker.claim(10)} == {small.name, free.name}
    assert {g.tag for g in ManualWorker(server, tmp_path).claim(10)} == {big.name}  # memory not told: any task

    late = submit(user, lambda: 1, [()], memory="2GiB")
    fits = submit(user, lambda: 1, [()], memory="1GiB")
    clock.advance(40)
    worker.api.sync_tasks("default", [])  # the 1 GiB worker is still around after the cutoff
    clock.advance(30)
    assert late.pull() == 0
    (error,) = list(late.errors)
    assert "no worker able to run it (Python" in error and "2 GiB of memory" in error
    assert user.get_tag_status(fits.name)["pending"] == 1  # it fits that worker: it keeps waiting
