"""Sweeps that keep tasks from waiting forever.

Leases: a running task belongs to its worker until ``lease_until``. A lease that runs out
returns the task to pending with one more attempt; after ``max_attempts`` lost leases the task
fails with a clear error instead of being re-queued forever.

Placement: a pending task that no worker could run for ``placement_timeout`` (no worker of its
datacenters, its Python version or enough cores was seen) fails with an error naming what was
missing, instead of staying pending forever when a datacenter vanishes.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lambdas.db.models import Task, TaskStatus, Worker
from lambdas.service import new_batch


def sweep_expired(session: Session, max_attempts: int, lease_seconds: float, now: float | None = None) -> int:
    """Requeue or fail tasks whose lease ran out; return how many were touched."""
    now = time.time() if now is None else now
    query = select(Task.seq, Task.tag_id, Task.attempt).where(Task.status == TaskStatus.RUNNING, Task.lease_until < now)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    expired = session.execute(query).all()
    if not expired:
        return 0
    failing: dict[int, list[int]] = defaultdict(list)
    requeue = []
    for seq, tag_id, attempt in expired:
        if attempt + 1 >= max_attempts:
            failing[tag_id].append(seq)
        else:
            requeue.append(seq)
    if requeue:
        session.execute(
            update(Task)
            .where(Task.seq.in_(requeue))
            .values(status=TaskStatus.PENDING, attempt=Task.attempt + 1, worker_id=None, lease_until=None)
        )
    message = (
        f"task failed: its worker stopped reporting {max_attempts} times (no heartbeat within "
        f"{lease_seconds:.0f} s each time). The worker died, lost its network, or the call brings "
        f"its worker down (e.g. out of memory)."
    )
    for tag_id, seqs in failing.items():
        batch = new_batch(session, tag_id)
        session.execute(
            update(Task)
            .where(Task.seq.in_(seqs))
            .values(status=TaskStatus.FAILED, attempt=Task.attempt + 1, lease_until=None, batch_id=batch, error=message)
        )
    return len(expired)


PLACEMENT_SWEEP_EVERY = 60.0  # most seconds between two placement sweeps of one app


class Sweeper:
    """Runs the sweeps of one app; the placement sweep (a scan of old pending tasks) at most
    once a minute (or a quarter of the timeout, if shorter)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._last_placement = 0.0
        self._lock = threading.Lock()

    def due(self, session: Session, now: float | None = None) -> bool:
        """Whether a sweep would change anything (a cheap read: an index range on leases)."""
        now = time.time() if now is None else now
        timeout = self.settings.placement_timeout_seconds
        if timeout > 0 and now - self._last_placement >= min(PLACEMENT_SWEEP_EVERY, timeout / 4):
            return True
        expired = select(Task.seq).where(Task.status == TaskStatus.RUNNING, Task.lease_until < now).limit(1)
        return session.scalar(expired) is not None

    def __call__(self, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        sweep_expired(session, self.settings.max_attempts, self.settings.lease_seconds, now)
        timeout = self.settings.placement_timeout_seconds
        if timeout <= 0:
            return
        with self._lock:
            due = now - self._last_placement >= min(PLACEMENT_SWEEP_EVERY, timeout / 4)
            if due:
                self._last_placement = now
        if due:
            sweep_unplaceable(session, timeout, now)


def _describe(python: str, datacenters: str | None, ncores: int) -> str:
    where = f"in datacenter(s) {', '.join(datacenters.strip(',').split(','))}" if datacenters else "anywhere"
    return f"Python {python} with {ncores} core(s) {where}"


def sweep_unplaceable(session: Session, timeout: float, now: float | None = None) -> int:
    """Fail pending tasks no worker seen within ``timeout`` could run; return how many."""
    now = time.time() if now is None else now
    cutoff = now - timeout
    pending = (Task.status == TaskStatus.PENDING, Task.created < cutoff)
    kinds = session.execute(select(Task.python, Task.datacenters, Task.ncores).distinct().where(*pending)).all()
    if not kinds:
        return 0
    workers = session.execute(
        select(Worker.python, Worker.datacenter, Worker.cores).where(Worker.last_seen >= cutoff)
    ).all()
    failed = 0
    for python, datacenters, ncores in kinds:
        wanted = set(datacenters.strip(",").split(",")) if datacenters else None
        if any(
            w.python == python and w.cores >= ncores and (wanted is None or w.datacenter in wanted) for w in workers
        ):
            continue
        same = Task.datacenters.is_(None) if datacenters is None else Task.datacenters == datacenters
        rows = session.execute(
            select(Task.seq, Task.tag_id).where(*pending, Task.python == python, Task.ncores == ncores, same)
        ).all()
        message = (
            f"task failed: no worker able to run it ({_describe(python, datacenters, ncores)}) has been seen "
            f"for {timeout / 3600:.1f} h. Start such a worker and submit again, or submit without the restriction."
        )
        by_tag: dict[int, list[int]] = defaultdict(list)
        for seq, tag_id in rows:
            by_tag[tag_id].append(seq)
        for tag_id, seqs in by_tag.items():
            batch = new_batch(session, tag_id)
            session.execute(
                update(Task)
                .where(Task.seq.in_(seqs), Task.status == TaskStatus.PENDING)
                .values(status=TaskStatus.FAILED, batch_id=batch, error=message)
            )
        failed += len(rows)
    return failed
