"""Leases: a running task belongs to its worker until ``lease_until``. A lease that runs out
returns the task to pending with one more attempt; after ``max_attempts`` lost leases the task
fails with a clear error instead of being re-queued forever."""

from __future__ import annotations

import time
from collections import defaultdict

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lambdas.db.models import Task, TaskStatus
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
