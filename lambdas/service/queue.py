"""Queue depth for autoscalers: open tasks grouped by what decides where they may run
(datacenters, Python version, cores, and memory where tasks declare it), with the live workers
that could run each group.

Read-only and cheap enough to poll: one grouped count over the open tasks (the
``(status, python, seq)`` index), one over the running ones joined to their workers, and the
workers seen within a lease. A worker is *live* when it was seen within ``lease_seconds`` (it
heartbeats every quarter lease).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from hmq import wire
from lambdas.auth import Principal
from lambdas.db.models import OPEN_STATES, Task, TaskStatus, Worker
from lambdas.service import Context
from lambdas.service.lifecycle import can_run, decode_datacenters, encode_datacenters, runs_in


def _placement() -> list[Any]:
    """The task columns that decide placement (memory once tasks carry it)."""
    columns: list[Any] = [Task.datacenters, Task.python, Task.ncores]
    memory = getattr(Task, "memory", None)
    return columns if memory is None else [*columns, memory]


def depth(
    ctx: Context, principal: Principal, datacenter: Optional[str] = None, python: Optional[str] = None
) -> wire.QueueDepth:
    """Admin or worker: open tasks by placement, only those that may run in ``datacenter`` and
    on ``python`` when given."""
    principal.require("admin", "worker")
    live_seconds = ctx.settings.lease_seconds
    where: list[ColumnElement[bool]] = []
    if datacenter is not None:
        where.append(runs_in(datacenter))
    if python is not None:
        where.append(Task.python == python)
    with ctx.index.read() as session:
        groups = _groups(session, where)
        workers = session.execute(
            select(Worker.datacenter, Worker.python, Worker.cores, Worker.memory).where(
                Worker.last_seen >= ctx.now() - live_seconds
            )
        ).all()
    for group in groups:
        placed = (group.python, encode_datacenters(group.datacenters), group.ncores, group.memory)
        group.workers = sum(1 for w in workers if can_run(w, *placed))
    return wire.QueueDepth(groups=groups, workers=len(workers), live_seconds=live_seconds)


def _groups(session: Session, where: list[ColumnElement[bool]]) -> list[wire.QueueGroup]:
    columns = _placement()
    counts = session.execute(
        select(*columns, Task.status, func.count())
        .where(Task.status.in_(OPEN_STATES), *where)
        .group_by(*columns, Task.status)
    ).all()
    running_in = session.execute(
        select(*columns, Worker.datacenter, func.count())
        .join(Worker, Worker.id == Task.worker_id)
        .where(Task.status == TaskStatus.RUNNING, *where)
        .group_by(*columns, Worker.datacenter)
    ).all()
    groups: dict[tuple[Any, ...], wire.QueueGroup] = {}
    for *key, status, count in counts:
        group = groups.get(tuple(key)) or groups.setdefault(tuple(key), _group(key))
        if status == TaskStatus.PENDING:
            group.pending += count
        else:
            group.running += count
        group.cores_needed += count * group.ncores
    for *key, where_running, count in running_in:
        if tuple(key) in groups:
            groups[tuple(key)].running_in[where_running] = count
    return sorted(groups.values(), key=lambda g: (g.datacenters or [], g.python, g.ncores, g.memory or 0))


def _group(key: Sequence[Any]) -> wire.QueueGroup:
    datacenters, python, ncores, *memory = key
    return wire.QueueGroup(
        datacenters=decode_datacenters(datacenters),
        python=python,
        ncores=ncores,
        memory=memory[0] if memory else None,
        pending=0,
        running=0,
        cores_needed=0,
        workers=0,
    )
