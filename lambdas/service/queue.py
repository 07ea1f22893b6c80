"""Queue depth for autoscalers: open tasks grouped by what decides where they may run
(datacenters, Python version, cores, and memory where tasks declare it), with the live workers
that could run each group; and the package sets pending tasks need, for workers to pre-build.

Read-only and cheap enough to poll however many tasks wait: the groups are the rows of
``placements`` (a few; those that may run in the datacenter and on the Python asked about),
and the tasks are read per placement through indexes over pending tasks only, so tasks of
placements not asked about cost nothing:

- pending tasks: one count of ``ix_tasks_pending`` entries per placement (an index-only scan
  on PostgreSQL): the depth of every placement counts each pending task's entry, that of a
  datacenter or Python none of the other placements';
- running tasks, by placement and the datacenter of the worker holding them: what workers
  hold, through an index led by ``status``;
- package sets: a loose scan of ``ix_tasks_pending_packages`` (``placement_id, packages`` over
  pending tasks with packages), one index probe per distinct set; a set longer than
  :data:`lambdas.db.models.INDEXED_PACKAGES_CHARS` (a btree entry has a size limit on
  PostgreSQL) is read from the tasks of ``ix_tasks_pending_long_packages`` instead.

Nothing is counted ahead: a count kept per placement would be a row every claim of that
placement updates, and claims would wait for each other's lock on it. A worker is *live* when
it was seen within ``lease_seconds`` (it heartbeats every quarter lease).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

from sqlalchemy import Integer, bindparam, func, select, text
from sqlalchemy.orm import Session

from hmq import wire
from lambdas.auth import Principal
from lambdas.db.models import PENDING_LONG_PACKAGES, PENDING_PACKAGES, Placement, Task, TaskStatus, Worker
from lambdas.service import Context
from lambdas.service.lifecycle import can_run, decode_datacenters, runs_in

_PENDING = int(TaskStatus.PENDING)
_COLUMNS = (Placement.id, Placement.python, Placement.datacenters, Placement.ncores, Placement.memory)
# One count of a placement's ix_tasks_pending entries; the placement is rendered into the
# statement (an integer of our own), as in shares._WAITING: PostgreSQL then plans for that one
# placement (a plan made for "any placement" could scan every task to count a quiet one's).
_PENDING_IN_PLACEMENT = text(f"SELECT count(*) FROM tasks WHERE status = {_PENDING} AND placement_id = :placement")
_PENDING_IN_PLACEMENT = _PENDING_IN_PLACEMENT.bindparams(bindparam("placement", type_=Integer, literal_execute=True))
# placement ids (our own integers) rendered into the statement, as in shares._WAITING
_IDS: Any = bindparam("ids", expanding=True, literal_execute=True)
_RUNNING_BY_PLACEMENT = (
    select(Task.placement_id, Worker.datacenter, func.count())
    .outerjoin(Worker, Worker.id == Task.worker_id)
    .where(Task.status == TaskStatus.RUNNING, Task.placement_id.in_(_IDS))
    .group_by(Task.placement_id, Worker.datacenter)
)
# A loose index scan (the next set after the last one, one probe each) of the package sets of
# one placement's pending tasks; the conditions are those of the partial index, word for word.
_SHORT = str(PENDING_PACKAGES)
_PACKAGE_SETS = text(
    f"""
    WITH RECURSIVE sets(packages) AS (
        SELECT min(packages) FROM tasks WHERE {_SHORT} AND placement_id = :placement
        UNION ALL
        SELECT (
            SELECT min(packages) FROM tasks
            WHERE {_SHORT} AND placement_id = :placement AND packages > sets.packages
        )
        FROM sets WHERE sets.packages IS NOT NULL
    )
    SELECT packages FROM sets WHERE packages IS NOT NULL
    """
).bindparams(bindparam("placement", type_=Integer, literal_execute=True))
_LONG_PACKAGE_SETS = text(
    f"SELECT DISTINCT packages FROM tasks WHERE {PENDING_LONG_PACKAGES} AND placement_id = :placement"
).bindparams(bindparam("placement", type_=Integer, literal_execute=True))


def depth(
    ctx: Context, principal: Principal, datacenter: Optional[str] = None, python: Optional[str] = None
) -> wire.QueueDepth:
    """Admin or worker: open tasks by placement, only those that may run in ``datacenter`` and
    on ``python`` when given."""
    principal.require("admin", "worker")
    live_seconds = ctx.settings.lease_seconds
    with ctx.index.read() as session:
        groups = _groups(session, placements(session, datacenter, python))
        workers = session.execute(
            select(Worker.datacenter, Worker.python, Worker.cores, Worker.memory).where(
                Worker.last_seen >= ctx.now() - live_seconds
            )
        ).all()
    for p, group in groups:
        group.workers = sum(1 for w in workers if can_run(w, p.python, p.datacenters, p.ncores, p.memory))
    return wire.QueueDepth(groups=[g for _, g in groups], workers=len(workers), live_seconds=live_seconds)


def placements(session: Session, datacenter: Optional[str] = None, python: Optional[str] = None) -> list[Any]:
    """The placement rows (id, python, datacenters, ncores, memory) whose tasks may run in
    ``datacenter`` and on ``python`` when given: a scan of the few rows of ``placements``."""
    where = [runs_in(datacenter, Placement.datacenters)] if datacenter is not None else []
    where += [Placement.python == python] if python is not None else []
    return list(session.execute(select(*_COLUMNS).where(*where)).all())


def _groups(session: Session, rows: Sequence[Any]) -> list[tuple[Any, wire.QueueGroup]]:
    """The placements of ``rows`` that have open tasks, each with its group (no workers yet),
    in the order of their datacenters, Python, cores and memory."""
    if not rows:
        return []
    connection = session.connection()
    running: dict[int, dict[Optional[str], int]] = {}
    for placement_id, where_running, n in connection.execute(_RUNNING_BY_PLACEMENT, {"ids": [p.id for p in rows]}):
        running.setdefault(placement_id, {})[where_running] = n
    groups = []
    for p in rows:
        held = running.get(p.id, {})
        pending = connection.execute(_PENDING_IN_PLACEMENT, {"placement": p.id}).scalar_one()
        if pending or held:
            group = _group(p, pending, sum(held.values()))
            group.running_in = {dc: n for dc, n in held.items() if dc is not None}
            groups.append((p, group))
    return sorted(groups, key=lambda pg: (pg[1].datacenters or [], pg[1].python, pg[1].ncores, pg[1].memory or 0))


def _group(p: Any, pending: int, running: int) -> wire.QueueGroup:
    return wire.QueueGroup(
        datacenters=decode_datacenters(p.datacenters),
        python=p.python,
        ncores=p.ncores,
        memory=p.memory,
        pending=pending,
        running=running,
        cores_needed=(pending + running) * p.ncores,
        workers=0,
    )


def package_sets(session: Session, rows: Sequence[Any]) -> list[list[str]]:
    """The package sets (other than none) that pending tasks of the placements ``rows`` need,
    each once, in order: one loose index scan per placement."""
    connection = session.connection()
    found: set[str] = set()
    for p in rows:
        for statement in (_PACKAGE_SETS, _LONG_PACKAGE_SETS):
            found.update(connection.execute(statement, {"placement": p.id}).scalars())
    return [json.loads(packages) for packages in sorted(found)]
