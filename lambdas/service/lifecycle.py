"""The task state machine: every change of a task's state happens here, and only here.

::

    submit ─► PENDING ──lease──► RUNNING ──finish: result object──► COMPLETED | FAILED
               ▲▲ │ │              │ │ │ │
               ││ │ │              │ │ │ └─finish: rejected by the worker──► FAILED
               ││ │ │              │ │ └─lease ran out, attempts left──► PENDING (attempt + 1)
               ││ │ │              │ └─lease ran out, no attempts left──► FAILED
               │└─┼─┼──────────────┴─finish: failed, retries left──► PENDING (failures + 1)
               └──┼─┼──release─────┘
                  │ └─no worker seen can run it (placement timeout)──► FAILED
                  └─close: cancel by tag or ids, revoke the user──► CANCELLED (from RUNNING too)

The rule that keeps reports safe: what a worker reports (:meth:`Lifecycle.extend`,
:meth:`~Lifecycle.finish`, :meth:`~Lifecycle.release`) changes only tasks still RUNNING under
that worker's own lease (:func:`_held_by`), so a late report never overwrites a cancelled,
deleted, failed or re-leased task. Every other change is guarded by the state it leaves.

A task that leaves the open states joins a *batch* (:func:`new_batch`): the result object it is
in, or a closure without one. Batch ids increase, and pulls page through a tag by them.

Placement: the datacenters a task may run in are stored as ``",dc1,dc2,"``
(:func:`encode_datacenters`, :func:`decode_datacenters`; :func:`runs_in` is the SQL test); a
task with a memory limit goes only to workers with at least that much memory. Each task points
at the row of its kind in ``placements`` (:func:`place`): a claim tests the few placement rows,
not the tasks, and takes pending tasks of the placements its worker can run through an index
(:func:`runnable`, which skips those with no pending task, then :func:`lambdas.service.shares.choose`, which shares claims between
users).

Limits: a lease never extends past the task's *deadline*, its start plus the task's timeout plus
``timeout_margin_seconds``, so a worker that does not end a call in time cannot hold the task
either (the lease runs out: a lost lease). Two counters: ``attempt`` counts lost leases (up to
``max_attempts``), ``failures`` counts runs that failed (raised, timed out, crashed, went over
memory), requeued while the task's ``retries`` allow.

Every change that makes tasks pending touches the ``work`` channel, every one that finishes a
tag's tasks that tag's channel (:func:`lambdas.service.wake.touch`): requests waiting on them
(claims, pulls) answer once the transaction is committed.

Time comes from the :class:`Lifecycle`'s clock only, so tests pass time instead of sleeping.
The sweeps (:meth:`~Lifecycle.expire_leases`, :meth:`~Lifecycle.fail_unplaceable`) are run by
:mod:`lambdas.service.sweeps`, their one trigger.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Float,
    Table,
    Text,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.orm import Session

from hmq import wire
from hmq._batching import batched
from hmq.limits import format_memory
from lambdas.db import skip_locked
from lambdas.db.models import OPEN_STATES, Batch, Placement, Tag, Task, TaskStatus, Worker
from lambdas.service.shares import NO_CAPS, Caps, choose
from lambdas.service.wake import WORK, tag_channel, touch
from lambdas.settings import Settings

Clock = Callable[[], float]
"""Seconds since the epoch, like :func:`time.time` (the default everywhere)."""


# --- placement ---------------------------------------------------------------------------------
def encode_datacenters(names: Optional[Iterable[str]]) -> Optional[str]:
    """The stored form of a placement: ``",a,b,"`` (sorted, unique), ``None`` for anywhere."""
    unique = sorted(set(names or ()))
    return "," + ",".join(unique) + "," if unique else None


def decode_datacenters(stored: Optional[str]) -> Optional[list[str]]:
    """The datacenters of a stored placement, ``None`` for anywhere."""
    return stored.strip(",").split(",") if stored else None


def runs_in(datacenter: str, column: Any = Task.datacenters) -> ColumnElement[bool]:
    """SQL condition: the task (or the placement, given ``Placement.datacenters``) may run in ``datacenter``."""
    needle = cast(str, encode_datacenters([datacenter]))
    return column.is_(None) | column.contains(needle, autoescape=True)


def placement_key(python: str, ncores: int, memory: Optional[int], datacenters: Optional[str]) -> str:
    """The canonical text of a placement (``datacenters`` in its stored form)."""
    return f"{python}|{ncores}|{'' if memory is None else memory}|{datacenters or ''}"


_PLACEMENT_ID = select(Placement.id).where(Placement.key == bindparam("key"))


def place(session: Session, python: str, ncores: int, memory: Optional[int], datacenters: Optional[str]) -> int:
    """The id of the placement row of tasks of this kind, made on first use (concurrent
    submits of a new kind both find the one row: INSERT ... ON CONFLICT DO NOTHING)."""
    key = placement_key(python, ncores, memory, datacenters)
    found = session.connection().execute(_PLACEMENT_ID, {"key": key}).scalar()
    if found is not None:
        return int(found)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    row = {"key": key, "python": python, "ncores": ncores, "memory": memory, "datacenters": datacenters}
    session.execute(insert(Placement).values(**row).on_conflict_do_nothing())
    return session.scalars(select(Placement.id).where(Placement.key == key)).one()


def runnable(workers: Any, available: Any, dialect: str) -> Any:
    """SQL, correlated to a row of the ``workers`` table: the ids of the placements that worker
    can run with ``available`` cores (its Python, datacenter and memory) and that have pending
    tasks, joined by commas (``NULL``: none). A scan of the few placement rows and one probe of
    ``ix_tasks_pending`` each, never a scan of tasks: in a claim, part of the statement that
    marks the worker seen (:func:`lambdas.service.work.claim`), so an empty claim ends there."""
    placements = Placement.__table__
    # Not EXISTS: PostgreSQL turns that into a semi-join, which it planned as a hash of every
    # pending task's placement (41 ms for an empty claim at 200,000 tasks pinned elsewhere); and
    # a plain LIMIT 1 it planned as a scan of tasks, expecting every pending task to match the
    # unknown placement (22 ms). In the order of ``ix_tasks_pending`` only its probe is cheap.
    pending = (
        select(literal_column("1"))
        .select_from(Task.__table__)
        .where(Task.status == literal_column(str(int(TaskStatus.PENDING))), Task.placement_id == placements.c.id)
        .correlate(placements)
        .order_by(Task.user_id, Task.seq)
        .limit(1)
        .scalar_subquery()
        .is_not(None)
    )
    escaped = func.replace(func.replace(func.replace(workers.c.datacenter, "/", "//"), "%", "/%"), "_", "/_")
    memory = placements.c.memory
    ids = (
        func.string_agg(cast_(placements.c.id, Text), ",")
        if dialect == "postgresql"
        else func.group_concat(placements.c.id)
    )
    return (
        select(ids)
        .where(
            placements.c.python == workers.c.python,
            placements.c.ncores <= case((available < workers.c.cores, available), else_=workers.c.cores),
            placements.c.datacenters.is_(None) | placements.c.datacenters.like("%," + escaped + ",%", escape="/"),
            memory.is_(None) | workers.c.memory.is_(None) | (memory <= workers.c.memory),
            pending,
        )
        .correlate(workers)
        .scalar_subquery()
    )


_RUNNABLE: dict[str, Any] = {}  # by dialect: the placements one worker can run (see Lifecycle._runnable)


def runnable_ids(joined: Optional[str]) -> list[int]:
    """The placement ids :func:`runnable` gave."""
    return [int(i) for i in joined.split(",")] if joined else []


def _describe(python: str, datacenters: Optional[str], ncores: int, memory: Optional[int]) -> str:
    names = decode_datacenters(datacenters)
    where = f"in datacenter(s) {', '.join(names)}" if names else "anywhere"
    needs = f" and {format_memory(memory)} of memory" if memory is not None else ""
    return f"Python {python} with {ncores} core(s){needs} {where}"


def can_run(worker: Any, python: str, datacenters: Optional[str], ncores: int, memory: Optional[int]) -> bool:
    """Whether a worker row (python, datacenter, cores, memory) can run tasks of this kind."""
    wanted = decode_datacenters(datacenters)
    fits = memory is None or worker.memory is None or memory <= worker.memory
    return (
        worker.python == python and worker.cores >= ncores and fits and (wanted is None or worker.datacenter in wanted)
    )


def span(seconds: float) -> str:
    """``"10 min"``, ``"24 h"``, ``"45 s"``: a duration as placement messages give it."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"


def missing(
    workers: Sequence[Any], python: str, datacenters: Optional[str], ncores: int, memory: Optional[int], window: str
) -> Optional[str]:
    """What no worker row of ``workers`` (python, datacenter, cores, memory; those seen within
    ``window``, e.g. ``"10 min"``) has for tasks of this kind; ``None`` when one can run them.
    Each requirement that no worker meets is named, with what the workers have."""
    if any(can_run(w, python, datacenters, ncores, memory) for w in workers):
        return None
    seen = f"no worker seen in the last {window}"
    if not workers:
        return seen
    lacks = []
    pythons = sorted({w.python for w in workers})
    if python not in pythons:
        lacks.append(f"has Python {python} (workers have {', '.join(pythons)})")
    wanted, names = decode_datacenters(datacenters), sorted({w.datacenter for w in workers})
    if wanted is not None and not set(wanted) & set(names):
        lacks.append(f"is in datacenter {' or '.join(wanted)} (seen: {', '.join(names)})")
    if ncores > max(w.cores for w in workers):
        lacks.append(f"has {ncores} cores (largest: {max(w.cores for w in workers)})")
    told = [w.memory for w in workers if w.memory is not None]
    if memory is not None and len(told) == len(workers) and memory > max(told):
        lacks.append(f"has {format_memory(memory)} of memory (largest: {format_memory(max(told))})")
    if not lacks:  # each is on some worker, never all on one
        lacks.append(f"has all of {_describe(python, datacenters, ncores, memory)}")
    return f"{seen} {lacks[0]}" + "".join(f"; none {more}" for more in lacks[1:])


def _capped(until: float, deadline: Any = Task.deadline) -> Any:
    """SQL: ``until``, or the task's deadline when that comes first (no deadline: ``until``)."""
    return case((deadline < until, deadline), else_=until)


# --- batches -----------------------------------------------------------------------------------
_BATCHES = cast(Table, Batch.__table__)
_NEW_BATCH = (
    insert(_BATCHES)
    .values(tag_id=bindparam("tag"), key=bindparam("key"), created=bindparam("now"))
    .returning(_BATCHES.c.id)
)


def new_batch(session: Session, tag_id: int, now: float, key: Optional[str] = None) -> int:
    """A new batch id: the pull cursor advances over batches in creation order (one INSERT ...
    RETURNING, built once: each report of results runs it)."""
    return int(session.connection().execute(_NEW_BATCH, {"tag": tag_id, "key": key, "now": now}).scalar_one())


def _held_by(worker_id: uuid.UUID) -> list[ColumnElement[bool]]:
    """SQL condition: the task is still running under ``worker_id``'s lease."""
    return [Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING]


_HELD_AMONG = select(Task.id).where(
    Task.worker_id == bindparam("worker"),
    Task.status == TaskStatus.RUNNING,
    Task.id.in_(bindparam("ids", expanding=True)),
)


def _one_per_id(session: Session, worker_id: uuid.UUID, rows: Sequence[Any]) -> list[int]:
    """The ``seq`` of the candidate ``(seq, id)`` rows a worker may lease: task ids are unique
    per user only, and a worker's reports name tasks by id, so it never holds two of one id."""
    if not rows:
        return []
    params = {"worker": worker_id, "ids": [row.id for row in rows]}
    held = set(session.connection().execute(_HELD_AMONG, params).scalars())
    seqs = []
    for row in rows:
        if row.id not in held:
            held.add(row.id)
            seqs.append(row.seq)
    return seqs


def _lease_statement() -> Any:
    """Lease the pending tasks ``seqs`` to ``worker`` until ``until``, never past a task's
    deadline (its timeout from ``start``, the lease time plus the margin; none without a
    timeout). Built once: every claim that takes tasks runs it."""
    deadline = Task.timeout + bindparam("start", type_=Float)  # NULL without a timeout
    return (
        update(Task)
        .where(Task.seq.in_(bindparam("seqs", expanding=True)))
        .values(
            status=TaskStatus.RUNNING,
            worker_id=bindparam("worker"),
            deadline=deadline,
            lease_until=_capped(bindparam("until", type_=Float), deadline),  # type: ignore[arg-type]
        )
    )


_LEASE = _lease_statement()

# What a report of results runs, built once (every complete runs them): the batch of a result
# object already recorded, the tag of the tasks this worker holds, and the changes of those tasks.
_RECORDED = select(Batch.id).where(Batch.key == bindparam("key"))
_HELD_IN_TAG = (
    select(Task.tag_id)
    .join(Tag, Tag.id == Task.tag_id)
    .where(
        Tag.name == bindparam("tag"),
        Task.id.in_(bindparam("ids", expanding=True)),
        Task.worker_id == bindparam("worker"),
        Task.status == TaskStatus.RUNNING,
    )
    .limit(1)
)
_MINE_IN_TAG = (
    Task.id.in_(bindparam("ids", expanding=True)),
    Task.worker_id == bindparam("worker"),
    Task.status == TaskStatus.RUNNING,
    Task.tag_id == bindparam("tag"),
)
_RETRY = (
    update(Task)
    .where(*_MINE_IN_TAG, Task.failures < Task.retries)
    .values(status=TaskStatus.PENDING, failures=Task.failures + 1, worker_id=None, lease_until=None)
    .returning(Task.id)
)
_FINISH_AS = {
    status: update(Task)
    .where(*_MINE_IN_TAG)
    .values(status=status, batch_id=bindparam("batch"), lease_until=None)
    .returning(Task.id)
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED)
}


@dataclass(frozen=True)
class Lease:
    """Tasks just leased to a worker (by ``seq``, oldest first) and when their lease ends."""

    seqs: list[int]
    until: float


@dataclass
class Finished:
    """What a worker's report changed: tasks accepted, tasks ignored (not under its lease any
    more), and result objects no task refers to (to delete once the transaction is committed)."""

    accepted: int = 0
    ignored: list[uuid.UUID] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)


class Lifecycle:
    """Every task state change, on a session the caller opened (and commits)."""

    def __init__(self, settings: Settings, clock: Clock = time.time) -> None:
        self.settings = settings
        self.clock = clock

    # --- worker side ---------------------------------------------------------------------------
    def lease(self, session: Session, worker: Any, available: int, max_tasks: int, caps: Caps = NO_CAPS) -> Lease:
        """Lease up to ``max_tasks`` pending tasks ``worker`` can run (its Python, datacenter,
        ``available`` cores, memory: the placements :func:`runnable` finds, or which the worker
        row gives as ``runnable`` when the claim's update returned them), shared between the
        users waiting by their shares and in submission order within a user, at most ``caps`` of each (:mod:`lambdas.service.shares`);
        revoked users' tasks are skipped. A task with a timeout gets its deadline: the lease
        ends then at the latest."""
        now = self.clock()
        until = now + self.settings.lease_seconds
        joined = worker.runnable if hasattr(worker, "runnable") else self._runnable(session, worker, available)
        rows = choose(session, runnable_ids(joined), max_tasks, caps)
        seqs = _one_per_id(session, worker.id, rows)
        if seqs:
            start = now + self.settings.timeout_margin_seconds
            params = {"seqs": seqs, "worker": worker.id, "start": start, "until": until}
            session.execute(_LEASE, params, execution_options={"synchronize_session": False})
        return Lease(seqs, until)

    @staticmethod
    def _runnable(session: Session, worker: Any, available: int) -> Optional[str]:
        dialect = session.get_bind().dialect.name
        if dialect not in _RUNNABLE:  # built once per dialect
            workers = Worker.__table__
            _RUNNABLE[dialect] = select(runnable(workers, bindparam("available"), dialect)).where(
                workers.c.id == bindparam("worker")
            )
        return session.connection().execute(_RUNNABLE[dialect], {"available": available, "worker": worker.id}).scalar()

    def extend(self, session: Session, worker_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> tuple[set[uuid.UUID], float]:
        """Extend the leases of the named tasks the worker still holds, never past a task's
        deadline; return those and the new end of their lease.

        A lease extended less than ``lease_seconds / 16`` ago is left as it is (a worker under
        load names the same tasks in claim after claim): its end is that much early at most,
        while the worker's next heartbeat is due a quarter lease later."""
        until = self.clock() + self.settings.lease_seconds
        if not ids:
            return set(), until
        mine = _held_by(worker_id)
        recent = Task.lease_until >= _capped(until - self.settings.lease_seconds / 16)
        held = self._change(session, ids, [*mine, ~recent], lease_until=_capped(until))
        rest = [i for i in ids if i not in held]
        for part in batched(rest, self.settings.select_page):
            held.update(session.scalars(select(Task.id).where(Task.id.in_(part), *mine, recent)))
        return held, until

    def release(self, session: Session, worker_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Hand tasks back unrun (the worker is stopping): pending again, attempt unchanged."""
        released = self._change(
            session, ids, _held_by(worker_id), status=TaskStatus.PENDING, worker_id=None, lease_until=None
        )
        if released:
            touch(session, WORK, count=len(released))
        return released

    def finish(self, session: Session, worker_id: uuid.UUID, report: wire.CompleteIn) -> Finished:
        """Apply a worker's report: result objects, rejections, tasks handed back.

        Idempotent: a retried report (its first answer was lost) finds its result objects
        already recorded and gets the first answer again.
        """
        out = Finished()
        for stored in report.results:
            self._record_object(session, worker_id, stored, out)
        self._record_rejections(session, worker_id, report.rejected, out)
        if report.release:
            self.release(session, worker_id, report.release)
        return out

    def _record_object(self, session: Session, worker_id: uuid.UUID, stored: wire.StoredResults, out: Finished) -> None:
        ids = [*stored.completed, *stored.failed]
        connection = session.connection()
        recorded = connection.execute(_RECORDED, {"key": stored.key}).scalar_one_or_none()
        if recorded is not None:  # a retried report: answer as the first time did
            taken = set(session.scalars(select(Task.id).where(Task.id.in_(ids), Task.batch_id == recorded)))
            out.accepted += len(taken)
            out.ignored += [i for i in ids if i not in taken]
            return
        # tag names are per user: the tag of the tasks this worker holds
        held = {"tag": stored.tag, "ids": ids, "worker": worker_id}
        tag_id = connection.execute(_HELD_IN_TAG, held).scalar() if ids else None
        if tag_id is None:
            out.ignored += ids
        if tag_id is None or not self._attach(session, worker_id, stored, tag_id, out):
            out.orphans.append(stored.key)  # results nobody will read: the tasks were cancelled, deleted or re-leased

    def _attach(
        self, session: Session, worker_id: uuid.UUID, stored: wire.StoredResults, tag_id: int, out: Finished
    ) -> bool:
        """The tasks of one result object that are still the worker's: completed, failed, or
        (failed with retries left) pending again, ``failures + 1``. False when there were none.

        The object stays (its batch too) when it only holds retried failures, so that a
        repeated report still finds it; it is deleted with its tag."""
        batch = new_batch(session, tag_id, self.clock(), stored.key)
        mine = {"worker": worker_id, "tag": tag_id, "batch": batch}
        retried = self._set(session, _RETRY, stored.failed, mine)
        failed = [i for i in stored.failed if i not in retried]
        taken = len(retried)
        for part, status in ((stored.completed, TaskStatus.COMPLETED), (failed, TaskStatus.FAILED)):
            done = self._set(session, _FINISH_AS[status], part, mine)
            taken += len(done)
            out.ignored += [i for i in part if i not in done]
        out.accepted += taken
        if taken == 0:
            session.execute(delete(Batch).where(Batch.id == batch))
        if retried:
            touch(session, WORK, count=len(retried))
        if taken > len(retried):
            touch(session, tag_channel(tag_id))
        return taken > 0

    def _record_rejections(
        self, session: Session, worker_id: uuid.UUID, rejected: list[wire.RejectedTask], out: Finished
    ) -> None:
        """Fail tasks the worker refused to run, each with its reason."""
        if not rejected:
            return
        held = session.execute(
            select(Task.id, Task.tag_id).where(Task.id.in_([r.id for r in rejected]), *_held_by(worker_id))
        ).all()
        tag_of = {row.id: row.tag_id for row in held}
        batches: dict[int, int] = {}
        for rej in rejected:
            tag_id = tag_of.get(rej.id)
            if tag_id is None:
                out.ignored.append(rej.id)
                continue
            if tag_id not in batches:
                batches[tag_id] = new_batch(session, tag_id, self.clock())
                touch(session, tag_channel(tag_id))
            values = {"status": TaskStatus.FAILED, "batch_id": batches[tag_id], "lease_until": None, "error": rej.error}
            out.accepted += len(self._change(session, [rej.id], _held_by(worker_id), **values))

    def _set(
        self, session: Session, statement: Any, ids: Sequence[uuid.UUID], params: dict[str, Any]
    ) -> set[uuid.UUID]:
        """Run a prebuilt ``UPDATE ... WHERE id IN :ids ... RETURNING id`` over ``ids`` (a page at
        a time) with ``params``; return the ids changed."""
        changed: set[uuid.UUID] = set()
        connection = session.connection()
        for part in batched(list(ids), self.settings.select_page):
            changed.update(connection.execute(statement, {**params, "ids": part}).scalars())
        return changed

    def _change(
        self, session: Session, ids: Sequence[uuid.UUID], where: list[ColumnElement[bool]], **values: Any
    ) -> set[uuid.UUID]:
        """Set ``values`` on the tasks of ``ids`` that match ``where``; return the ids changed."""
        changed: set[uuid.UUID] = set()
        for part in batched(list(ids), self.settings.select_page):
            statement = update(Task).where(Task.id.in_(part), *where).values(**values).returning(Task.id)
            changed.update(session.scalars(statement))
        return changed

    # --- owner side ----------------------------------------------------------------------------
    def close(
        self, session: Session, tasks: Iterable[tuple[int, int]], status: TaskStatus, error: Optional[str] = None
    ) -> int:
        """Close open tasks, given as ``(seq, tag_id)``, without a result (cancellation);
        return how many were still open."""
        return self._close(session, tasks, [Task.status.in_(OPEN_STATES)], status=status, error=error)

    def cancel_user(self, session: Session, user_id: int, reason: str) -> int:
        """Cancel every open task of a user, tag by tag, without loading the rows."""
        open_tasks = (Task.user_id == user_id, Task.status.in_(OPEN_STATES))
        total = 0
        for tag_id in session.scalars(select(Task.tag_id).distinct().where(*open_tasks)).all():
            batch = new_batch(session, tag_id, self.clock())
            statement = (
                update(Task)
                .where(*open_tasks, Task.tag_id == tag_id)
                .values(status=TaskStatus.CANCELLED, batch_id=batch, lease_until=None, error=reason)
            )
            total += cast(CursorResult[Any], session.execute(statement)).rowcount
            touch(session, tag_channel(tag_id))
        return total

    def _close(
        self, session: Session, tasks: Iterable[tuple[int, int]], guard: list[ColumnElement[bool]], **values: Any
    ) -> int:
        """Move tasks out of the open states into one new batch per tag."""
        by_tag: dict[int, list[int]] = defaultdict(list)
        for seq, tag_id in tasks:
            by_tag[tag_id].append(seq)
        changed = 0
        for tag_id, seqs in by_tag.items():
            batch = new_batch(session, tag_id, self.clock())
            for part in batched(seqs, self.settings.select_page):
                statement = (
                    update(Task).where(Task.seq.in_(part), *guard).values(batch_id=batch, lease_until=None, **values)
                )
                changed += cast(CursorResult[Any], session.execute(statement)).rowcount
            touch(session, tag_channel(tag_id))
        return changed

    # --- sweeps --------------------------------------------------------------------------------
    def leases_ran_out(self, session: Session) -> bool:
        """Whether some lease ran out (cheap: one row of the ``(status, lease_until)`` index)."""
        query = select(Task.seq).where(Task.status == TaskStatus.RUNNING, Task.lease_until < self.clock()).limit(1)
        return session.scalar(query) is not None

    def expire_leases(self, session: Session) -> int:
        """Requeue tasks whose lease ran out with one more attempt; fail those out of attempts.
        Return how many were touched."""
        running = Task.status == TaskStatus.RUNNING
        query = select(Task.seq, Task.tag_id, Task.attempt).where(running, Task.lease_until < self.clock())
        expired = session.execute(skip_locked(session, query)).all()
        limit = self.settings.max_attempts
        requeue = [row.seq for row in expired if row.attempt + 1 < limit]
        if requeue:
            touch(session, WORK, count=len(requeue))
        for part in batched(requeue, self.settings.select_page):
            session.execute(
                update(Task)
                .where(Task.seq.in_(part), running)
                .values(status=TaskStatus.PENDING, attempt=Task.attempt + 1, worker_id=None, lease_until=None)
            )
        message = (
            f"task failed: its worker stopped reporting {limit} times (no heartbeat within "
            f"{self.settings.lease_seconds:.0f} s, or no outcome by the call's timeout, each time). The worker "
            f"died, lost its network or hung, or the call brings its worker down (e.g. out of memory)."
        )
        failing = [(row.seq, row.tag_id) for row in expired if row.attempt + 1 >= limit]
        self._close(session, failing, [running], status=TaskStatus.FAILED, attempt=Task.attempt + 1, error=message)
        return len(expired)

    def fail_unplaceable(self, session: Session) -> int:
        """Fail pending tasks that no worker seen within the placement timeout could run (its
        Python version, enough cores and memory, one of its datacenters); return how many.
        The rows of ``placements`` are tested, not the tasks: only the old pending tasks of a
        placement no worker can run are read, those that fail."""
        timeout = self.settings.placement_timeout_seconds
        if timeout <= 0:  # wait forever
            return 0
        cutoff = self.clock() - timeout
        old = (Task.status == TaskStatus.PENDING, Task.created < cutoff)
        workers = session.execute(
            select(Worker.python, Worker.datacenter, Worker.cores, Worker.memory).where(Worker.last_seen >= cutoff)
        ).all()
        placements = session.execute(
            select(Placement.id, Placement.python, Placement.datacenters, Placement.ncores, Placement.memory)
        ).all()
        failed = 0
        for p in placements:
            kind = (p.python, p.datacenters, p.ncores, p.memory)
            if any(can_run(w, *kind) for w in workers):
                continue
            rows = session.execute(select(Task.seq, Task.tag_id).where(*old, Task.placement_id == p.id)).all()
            if not rows:
                continue
            message = (
                f"task failed: no worker able to run it ({_describe(*kind)}) has been seen "
                f"for {timeout / 3600:.1f} h ({missing(workers, *kind, span(timeout))}). "
                f"Start such a worker and submit again, or submit without the restriction."
            )
            failed += self._close(session, rows, [old[0]], status=TaskStatus.FAILED, error=message)
        return failed
