"""The fleet's per-minute samples: taken once per worker and minute from claims and heartbeats,
read by the admin only, purged after the retention."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

import hmq
from lambdas.db.models import MetricQueue, MetricSample, MetricUsage
from tests.helpers import ManualClock, ManualWorker, Server, submit


def _rows(server: Server) -> tuple[int, int, int]:
    with server.app.state.ctx.index.read() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(m)) for m in (MetricSample, MetricUsage, MetricQueue)
        )


def test_claims_and_heartbeats_sample_the_fleet_once_per_minute(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock(start=(int(ManualClock().now) // 60) * 60 + 1.0)  # one second into a minute
    server = make_server(clock=clock, request_max_skew_seconds=10**6)
    alice = server.user("alice")
    submit(alice, lambda: 1, [()] * 3, ncores=2)
    worker = ManualWorker(server, tmp_path, datacenter="hpc", cores=4)
    claimed = worker.session.claim(2, 4, allocated=4, running=0, used=0)  # samples before leasing
    assert sum(len(g.tasks) for g in claimed.groups) == 2
    worker.session.claim(10, 1, allocated=4, running=2, used=4)  # same minute: not sampled again
    with server.admin() as admin:
        first = admin.metrics(since=clock.now - 3600)
    assert [(p.workers, p.cores, p.allocated, p.used, p.pending, p.running) for p in first.points] == [
        (1, 4, 4, 0, 3, 0)
    ]
    assert first.users == []  # nothing ran when the minute was sampled
    assert [(d.name, d.live_workers, d.live_cores) for d in first.datacenters] == [("hpc", 1, 4)]

    clock.advance(60)
    held = [str(t.id) for g in claimed.groups for t in g.tasks]
    assert worker.session.heartbeat(held) == []  # a heartbeat samples the next minute
    with server.admin() as admin:
        second = admin.metrics(since=clock.now - 3600)
    assert [(p.allocated, p.used, p.pending, p.running) for p in second.points] == [(4, 0, 3, 0), (4, 4, 1, 2)]
    assert [(u.name, u.cpu_seconds) for u in second.users] == [("alice", 2 * 2 * 60.0)]  # 2 tasks x 2 cores x 1 min
    assert second.points[0].time == (int(clock.now) // 60 - 1) * 60
    with server.admin() as admin:
        assert [p.time for p in admin.metrics(since=clock.now - 1).points] == [second.points[1].time]


def test_only_the_admin_reads_the_metrics(server: Server, tmp_path: Path) -> None:
    user = server.user()
    with pytest.raises(hmq.PermissionDenied):
        user._call("GET", "/v1/metrics")
    worker = ManualWorker(server, tmp_path)
    with pytest.raises(hmq.PermissionDenied):
        worker.api._call("GET", "/v1/metrics")


def test_samples_older_than_the_retention_are_purged_by_the_sweep(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(
        clock=clock, metrics_retention_seconds=600, metrics_sweep_seconds=60, request_max_skew_seconds=10**6
    )
    user = server.user()
    submit(user, lambda: 1, [()])
    worker = ManualWorker(server, tmp_path)
    groups = worker.claim()
    assert _rows(server) == (1, 0, 1)
    clock.advance(120)
    worker.session.heartbeat([str(t.id) for g in groups for t in g.tasks])
    assert _rows(server) == (2, 1, 2)
    clock.advance(600)
    user.whoami()  # the sweep: the first minute is older than 600 s, the second not yet
    assert _rows(server) == (1, 1, 1)
    with server.admin() as admin:
        assert len(admin.metrics(since=0).points) == 1  # since=0 reaches back the retention only
    clock.advance(600)
    user.whoami()
    assert _rows(server) == (0, 0, 0)
    assert user.get_tag_status(groups[0].tag)["total"] == 1  # the tasks are not touched


def test_a_minute_whose_first_sample_rolled_back_still_gets_its_queue_point(make_server: Any, tmp_path: Path) -> None:
    """The first sample of a minute in the API process counts the queue; when that sample's
    transaction rolls back (the claim failed after it), the next sample of the minute counts
    it, and the minute has its point (pending, running) all the same."""
    clock = ManualClock(start=(int(ManualClock().now) // 60) * 60 + 1.0)
    server = make_server(clock=clock, request_max_skew_seconds=10**6)
    submit(server.user("alice"), lambda: 1, [()] * 3)
    worker = ManualWorker(server, tmp_path, datacenter="hpc", cores=2)
    ctx = server.app.state.ctx
    row = SimpleNamespace(
        id=worker.session.worker_id, datacenter="hpc", cores=2, allocated=0, used=0, running=0, sampled=None
    )
    with pytest.raises(RuntimeError, match="the claim failed"), ctx.index.write() as session:
        ctx.metrics.sample(session, row, clock.now)
        raise RuntimeError("the claim failed after sampling")
    assert _rows(server) == (0, 0, 0)  # the sample went with its transaction
    worker.session.claim(1, 1, allocated=2, running=0, used=0)  # the same minute
    with server.admin() as admin:
        points = admin.metrics(since=clock.now - 3600).points
    assert [(p.workers, p.cores, p.pending, p.running) for p in points] == [(1, 2, 3, 0)]
