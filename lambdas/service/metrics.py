"""The fleet's load over time: per-minute samples taken from workers' claims and heartbeats.

What is kept (``lambdas.db.models``), per minute (unix time // 60):

- ``metric_samples``: each worker's cores, allocated and used cores and running tasks, as of its
  first claim or heartbeat of the minute (the worker reports them with every claim);
- ``metric_usage``: the cores of each user's tasks running on that worker then, so that a
  minute of CPU time per core is counted for the user: CPU hours are sampled, once a minute;
- ``metric_queue``: tasks pending and running in the whole index, counted once per minute by
  whichever request samples the minute first.

Cost: :meth:`Metrics.sample` runs inside the claim or heartbeat transaction. Within a minute it
compares two integers and returns (the worker row, returned by its update, says which minute it
was last sampled in); once per worker and minute it marks the worker sampled and upserts its
load and the cores of each user with tasks on it (an indexed query of the worker's tasks): one
statement on PostgreSQL (0.7-1.3 ms of API CPU with its transaction; 3.4-4 ms as four ORM
statements), plus once per minute for the whole fleet a primary-key look-up and, the first
time, a count of open tasks (by the first sample of the minute in each API process:
:meth:`Metrics._first_of_minute`; if its transaction is rolled back, that process leaves the
minute to the others). The index is the source of truth: several API processes (Lambda sandboxes) sampling the same minute
overwrite one row with the same kind of value, never add to it.

Retention: rows older than ``metrics_retention_seconds`` are deleted by the metrics sweep
(:mod:`lambdas.service.sweeps`). The admin reads them with ``GET /v1/metrics`` (:func:`read`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import BigInteger, Table, Uuid, bindparam, delete, event, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from hmq import wire
from lambdas.auth import Principal
from lambdas.db.models import MetricQueue, MetricSample, MetricUsage, Task, TaskStatus, User, Worker

if TYPE_CHECKING:
    from lambdas.service import Context

MINUTE = 60


def _upsert(dialect: str, table: Any, source: Any, keys: tuple[str, ...], replace: bool = True) -> Any:
    """``INSERT INTO table (columns of source) VALUES | SELECT``; a row whose ``keys`` exist
    already replaces the stored one (or is skipped, with ``replace=False``). ``source``: a
    dict of column to value (bind parameters) or a SELECT of the columns, in table order."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    if isinstance(source, dict):
        stmt = insert(table).values(source)
        columns = list(source)
    else:
        columns = [c.name for c in table.columns]
        stmt = insert(table).from_select(columns, source)
    if not replace:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns if c not in keys}
    )


_SAMPLES, _USAGE, _QUEUE = MetricSample.__table__, MetricUsage.__table__, MetricQueue.__table__
_LOAD = ("datacenter", "cores", "allocated", "used", "running")
_WORKERS = cast(Table, Worker.__table__)
_MARK = update(_WORKERS).where(_WORKERS.c.id == bindparam("p_worker")).values(sampled=bindparam("p_minute"))
_RUNNING_CORES = (  # the cores of each user's tasks running on the worker, as metric_usage rows
    select(
        bindparam("p_minute", type_=BigInteger), bindparam("p_worker", type_=Uuid), Task.user_id, func.sum(Task.ncores)
    )
    .where(Task.worker_id == bindparam("p_worker"), Task.status == TaskStatus.RUNNING)
    .group_by(Task.user_id)
)
_STATEMENTS: dict[str, tuple[Any, ...]] = {}


def _sample_statements(dialect: str) -> tuple[Any, ...]:
    """What a sample runs, in order: mark the worker sampled, upsert its load, upsert its users'
    cores. Core, built once per dialect (a sample is taken once per worker and minute: with a
    thousand workers, 17 a second). On PostgreSQL one statement (the first two as CTEs: one
    round trip); SQLite, in process, has no data-modifying CTEs and runs the three."""
    if dialect not in _STATEMENTS:
        load: dict[str, Any] = {"minute": bindparam("p_minute"), "worker_id": bindparam("p_worker")}
        load.update({k: bindparam(f"p_{k}") for k in _LOAD})
        keys = ("minute", "worker_id")
        sample, usage = (
            _upsert(dialect, _SAMPLES, load, keys),
            _upsert(dialect, _USAGE, _RUNNING_CORES, (*keys, "user_id")),
        )
        if dialect == "postgresql":
            _STATEMENTS[dialect] = (usage.add_cte(_MARK.cte("mark"), sample.cte("sample")),)
        else:
            _STATEMENTS[dialect] = (_MARK, sample, usage)
    return _STATEMENTS[dialect]


class Metrics:
    """Sampling, reading and purging the per-minute samples."""

    def __init__(self, retention_seconds: float) -> None:
        self.retention_seconds = retention_seconds
        self._queue_minute = -1  # the last minute whose queue this process looked up
        self._queue_lock = threading.Lock()

    def sample(self, session: Session, worker: Any, now: float) -> None:
        """The claim's and heartbeat's one hook: sample ``worker`` (a row of its id, datacenter,
        cores, load and ``sampled`` minute) and the queue, once per minute, in the caller's
        transaction (:func:`_sample_statements`)."""
        minute = int(now // MINUTE)
        if worker.sampled == minute:
            return
        connection = session.connection()
        params = {"p_minute": minute, "p_worker": worker.id, "p_datacenter": worker.datacenter, "p_cores": worker.cores}
        params.update(p_allocated=worker.allocated or 0, p_used=worker.used or 0, p_running=worker.running or 0)
        for statement in _sample_statements(connection.dialect.name):
            connection.execute(statement, params)
        if self._first_of_minute(session, minute) and session.get(MetricQueue, minute) is None:
            self._count_queue(session, minute)

    def _first_of_minute(self, session: Session, minute: int) -> bool:
        """Whether this is the process's first sample of ``minute`` (then it looks the queue up,
        the others need not): a hundred workers whose claims sample the same minute together
        count the open tasks once, not a hundred times over. Should the transaction of that
        first sample roll back, the next sample of the minute is the first again."""
        with self._queue_lock:
            before = self._queue_minute
            first, self._queue_minute = before != minute, minute
        if first:
            event.listen(session, "after_rollback", lambda _: self._forget(minute, before), once=True)
        return first

    def _forget(self, minute: int, before: int) -> None:
        with self._queue_lock:
            if self._queue_minute == minute:
                self._queue_minute = before

    @staticmethod
    def _count_queue(session: Session, minute: int) -> None:
        counts = dict(
            session.execute(
                select(Task.status, func.count())
                .where(Task.status.in_((TaskStatus.PENDING, TaskStatus.RUNNING)))
                .group_by(Task.status)
            ).all()
        )
        row = {
            "minute": minute,
            "pending": counts.get(TaskStatus.PENDING, 0),
            "running": counts.get(TaskStatus.RUNNING, 0),
        }
        connection = session.connection()
        connection.execute(_upsert(connection.dialect.name, _QUEUE, row, ("minute",), False))

    def purge(self, session: Session, now: float) -> int:
        """Delete the samples older than the retention; return how many rows went."""
        cutoff = int((now - self.retention_seconds) // MINUTE)
        gone = 0
        for model in (MetricSample, MetricUsage, MetricQueue):
            gone += session.execute(delete(model).where(model.minute < cutoff)).rowcount or 0  # type: ignore[attr-defined]
        return gone


def read(ctx: Context, principal: Principal, since: float) -> wire.MetricsOut:
    """Admin: the per-minute points since ``since`` (at most the retention back), CPU time per
    user over them, and the datacenters with their workers (live: seen within a lease)."""
    principal.require("admin")
    now = ctx.now()
    first = int(max(since, now - ctx.metrics.retention_seconds) // MINUTE)
    with ctx.index.read() as session:
        points = _points(session, first)
        users = session.execute(
            select(User.name, func.sum(MetricUsage.cores))
            .join(User, User.id == MetricUsage.user_id)
            .where(MetricUsage.minute >= first)
            .group_by(User.name)
            .order_by(func.sum(MetricUsage.cores).desc())
        ).all()
        datacenters = _datacenters(session, now - ctx.settings.lease_seconds)
    return wire.MetricsOut(
        since=first * MINUTE,
        now=now,
        points=points,
        users=[wire.UserUsage(name=n, cpu_seconds=float(c) * MINUTE) for n, c in users],
        datacenters=datacenters,
    )


def _points(session: Session, first: int) -> list[wire.MetricPoint]:
    fleet = session.execute(
        select(
            MetricSample.minute,
            func.count(),
            func.sum(MetricSample.cores),
            func.sum(MetricSample.allocated),
            func.sum(MetricSample.used),
        )
        .where(MetricSample.minute >= first)
        .group_by(MetricSample.minute)
    ).all()
    queue = session.execute(
        select(MetricQueue.minute, MetricQueue.pending, MetricQueue.running).where(MetricQueue.minute >= first)
    ).all()
    points = {m: wire.MetricPoint(time=m * MINUTE, workers=n, cores=c, allocated=a, used=u) for m, n, c, a, u in fleet}
    for minute, pending, running in queue:
        point = points.setdefault(minute, wire.MetricPoint(time=minute * MINUTE))
        point.pending, point.running = pending, running
    return [points[m] for m in sorted(points)]


def _datacenters(session: Session, live_after: float) -> list[wire.DatacenterInfo]:
    live = func.count().filter(Worker.last_seen >= live_after)
    rows = session.execute(
        select(
            Worker.datacenter,
            func.max(Worker.last_seen),
            live,
            func.sum(Worker.cores).filter(Worker.last_seen >= live_after),
        )
        .group_by(Worker.datacenter)
        .order_by(Worker.datacenter)
    ).all()
    return [wire.DatacenterInfo(name=d, last_seen=s, live_workers=n, live_cores=c or 0) for d, s, n, c in rows]
