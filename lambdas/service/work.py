"""The worker's side of the queue: register, claim, heartbeat, complete."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from hmq import wire
from hmq._batching import batched
from hmq._errors import BadRequest, NotFound, PermissionDenied
from lambdas.auth import Principal
from lambdas.db.models import Batch, Chunk, Function, Tag, Task, TaskStatus, User, Worker
from lambdas.service import Context, delete_objects, new_batch
from lambdas.service.submit import upload_prefix
from lambdas.service.tags import SELECT_PAGE


def register(ctx: Context, principal: Principal, body: wire.WorkerIn) -> wire.WorkerOut:
    principal.require("worker")
    now = time.time()
    worker_id = uuid.uuid4()
    with ctx.index.write() as session:
        session.add(
            Worker(
                id=worker_id,
                user_id=principal.user_id,
                datacenter=body.datacenter,
                cores=body.cores,
                python=body.python,
                hostname=body.hostname,
                version=body.version,
                registered=now,
                last_seen=now,
            )
        )
    lease = ctx.settings.lease_seconds
    return wire.WorkerOut(worker_id=worker_id, lease_seconds=lease, heartbeat_seconds=lease / 4)


def _own_worker(session: Session, principal: Principal, worker_id: uuid.UUID) -> Worker:
    principal.require("worker")
    worker = session.get(Worker, worker_id)
    if worker is None:
        raise NotFound("unknown_worker", f"unknown worker {worker_id}; register first")
    if worker.user_id != principal.user_id:
        raise PermissionDenied("this worker was registered by another identity")
    return worker


def claim(ctx: Context, principal: Principal, worker_id: uuid.UUID, body: wire.ClaimIn, base_url: str) -> wire.ClaimOut:
    """Lease up to ``max_tasks`` pending tasks this worker can run, oldest first.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass each other without
    ever taking the same row; SQLite: the transaction holds the database's write lock.
    """
    now = time.time()
    lease_until = now + ctx.settings.lease_seconds
    with ctx.index.write() as session:
        worker = _own_worker(session, principal, worker_id)
        worker.last_seen, worker.allocated, worker.running, worker.used = now, body.allocated, body.running, body.used
        ctx.sweep(session, now)
        query = select(Task.seq).where(
            Task.status == TaskStatus.PENDING,
            Task.python == worker.python,
            Task.ncores <= min(body.available, worker.cores),
            Task.user_id.not_in(select(User.id).where(User.revoked.is_not(None))),
        )
        query = query.where(
            Task.datacenters.is_(None) | Task.datacenters.contains(f",{worker.datacenter},", autoescape=True)
        )
        query = query.order_by(Task.seq).limit(body.max_tasks)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        seqs = list(session.scalars(query))
        if not seqs:
            return wire.ClaimOut(groups=[], lease_until=lease_until)
        session.execute(
            update(Task)
            .where(Task.seq.in_(seqs))
            .values(status=TaskStatus.RUNNING, worker_id=worker_id, lease_until=lease_until)
        )
        rows = session.execute(
            select(
                Task.id,
                Task.offset,
                Task.length,
                Task.attempt,
                Chunk.key,
                Chunk.header_len,
                Function.digest,
                Function.key.label("fkey"),
                Tag.name,
                Task.user_id,
            )
            .join(Chunk, Chunk.id == Task.chunk_id)
            .join(Function, Function.id == Chunk.function_id)
            .join(Tag, Tag.id == Task.tag_id)
            .where(Task.seq.in_(seqs))
            .order_by(Task.seq)
        ).all()
        certs = {
            u.id: u.certificate for u in session.scalars(select(User).where(User.id.in_({r.user_id for r in rows})))
        }
    groups: dict[str, wire.ClaimGroup] = {}
    for r in rows:
        group = groups.get(r.key)
        if group is None:
            group = groups[r.key] = wire.ClaimGroup(
                chunk_key=r.key,
                chunk_url=ctx.presign_get(r.key, base_url),
                header_len=r.header_len,
                function=r.digest,
                function_url=ctx.presign_get(r.fkey, base_url),
                certificate=json.loads(certs[r.user_id]),
                tag=r.name,
                tasks=[],
            )
        group.tasks.append(wire.ClaimTask(id=r.id, offset=r.offset, length=r.length, attempt=r.attempt))
    return wire.ClaimOut(groups=list(groups.values()), lease_until=lease_until)


def heartbeat(ctx: Context, principal: Principal, worker_id: uuid.UUID, body: wire.HeartbeatIn) -> wire.HeartbeatOut:
    """Extend the leases of the tasks the worker names (only those: a task it lost track of runs
    out of lease and returns to the queue); name those it should drop (cancelled, deleted, or
    re-leased after this worker was presumed dead)."""
    now = time.time()
    lease_until = now + ctx.settings.lease_seconds
    held: set[uuid.UUID] = set()
    with ctx.index.write() as session:
        worker = _own_worker(session, principal, worker_id)
        worker.last_seen = now
        for part in batched(list(body.tasks), SELECT_PAGE):
            held |= _transition(
                session, part, [Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING], lease_until=lease_until
            )
    return wire.HeartbeatOut(lease_until=lease_until, drop=[t for t in body.tasks if t not in held])


def complete(ctx: Context, principal: Principal, worker_id: uuid.UUID, body: wire.CompleteIn) -> wire.CompleteOut:
    """Record results. Only tasks still running under this worker's lease change state: a
    result for a cancelled, deleted or re-leased task is ignored and never overwrites it.

    Idempotent: a retried report (its first answer was lost) finds its result objects already
    recorded and answers as the first time; an object is deleted only when nothing refers to it.
    """
    prefix = upload_prefix(principal, "results")
    for stored in body.results:
        if not stored.key.startswith(prefix):
            raise PermissionDenied("result object was not uploaded through this worker's upload slots")
        if ctx.store.size(stored.key) is None:
            raise BadRequest("object_missing", f"result object {stored.key!r} has not been uploaded")
    accepted = 0
    ignored: list[uuid.UUID] = []
    orphans: list[str] = []
    with ctx.index.write() as session:
        worker = _own_worker(session, principal, worker_id)
        worker.last_seen = time.time()
        mine = [Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING]
        for stored in body.results:
            taken, referenced = _record_object(session, stored, mine, ignored)
            if not referenced:
                orphans.append(stored.key)
            accepted += taken
        accepted += _record_rejections(session, body.rejected, mine, ignored)
        if body.release:
            _transition(session, list(body.release), mine, status=TaskStatus.PENDING, worker_id=None, lease_until=None)
    if orphans:  # results nobody will read: the tasks were cancelled, deleted or re-leased
        delete_objects(ctx, orphans)
    return wire.CompleteOut(accepted=accepted, ignored=ignored)


def _record_object(
    session: Session, stored: wire.StoredResults, mine: list[Any], ignored: list[uuid.UUID]
) -> tuple[int, bool]:
    """Point the tasks of one result object at it; return (tasks accepted, object referenced)."""
    ids = [*stored.completed, *stored.failed]
    recorded = session.scalars(select(Batch.id).where(Batch.key == stored.key)).one_or_none()
    if recorded is not None:  # a retried report: answer as the first time did
        taken = set(session.scalars(select(Task.id).where(Task.id.in_(ids), Task.batch_id == recorded)))
        ignored += [i for i in ids if i not in taken]
        return len(taken), True
    tag = session.scalars(select(Tag).where(Tag.name == stored.tag)).one_or_none()
    if tag is None:
        ignored += ids
        return 0, False
    batch = new_batch(session, tag.id, stored.key)
    taken_count = 0
    for part, status in ((stored.completed, TaskStatus.COMPLETED), (stored.failed, TaskStatus.FAILED)):
        if part:
            done = _transition(
                session, part, [*mine, Task.tag_id == tag.id], status=status, batch_id=batch, lease_until=None
            )
            taken_count += len(done)
            ignored += [i for i in part if i not in done]
    if taken_count == 0:
        session.execute(delete(Batch).where(Batch.id == batch))
    return taken_count, taken_count > 0


def _record_rejections(
    session: Session, rejected: list[wire.RejectedTask], mine: list[Any], ignored: list[uuid.UUID]
) -> int:
    """Fail tasks the worker refused to run, with its reason (only those it still holds)."""
    held = (
        session.execute(select(Task.id, Task.tag_id).where(Task.id.in_([r.id for r in rejected]), *mine)).all()
        if rejected
        else []
    )
    tag_of = {row.id: row.tag_id for row in held}
    batches: dict[int, int] = {}
    accepted = 0
    for rej in rejected:
        tag_id = tag_of.get(rej.id)
        if tag_id is None:
            ignored.append(rej.id)
            continue
        if tag_id not in batches:
            batches[tag_id] = new_batch(session, tag_id)
        accepted += len(
            _transition(
                session,
                [rej.id],
                mine,
                status=TaskStatus.FAILED,
                batch_id=batches[tag_id],
                lease_until=None,
                error=rej.error,
            )
        )
    return accepted


def _transition(session: Session, ids: list[uuid.UUID], where: list[Any], **values: Any) -> set[uuid.UUID]:
    changed: set[uuid.UUID] = set()
    for part in batched(ids, SELECT_PAGE):
        changed.update(
            session.scalars(update(Task).where(Task.id.in_(part), *where).values(**values).returning(Task.id))
        )
    return changed


def package_sets(ctx: Context, principal: Principal, datacenter: str, python: str) -> wire.PackageSetsOut:
    """Package sets that pending tasks runnable in ``datacenter`` need (to pre-build envs)."""
    principal.require("worker")
    with ctx.index.read() as session:
        rows = session.scalars(
            select(Task.packages)
            .distinct()
            .where(
                Task.status == TaskStatus.PENDING,
                Task.python == python,
                Task.packages != "[]",
                Task.datacenters.is_(None) | Task.datacenters.contains(f",{datacenter},", autoescape=True),
            )
        )
        return wire.PackageSetsOut(packagesets=[json.loads(p) for p in rows])


def list_workers(ctx: Context, principal: Principal, since: float = 0.0) -> list[wire.WorkerInfo]:
    """Admin: registered workers (seen after ``since``), newest first."""
    principal.require("admin")
    with ctx.index.read() as session:
        rows = session.execute(
            select(Worker, User.name)
            .join(User, User.id == Worker.user_id)
            .where(Worker.last_seen >= since)
            .order_by(Worker.registered.desc())
        ).all()
    return [
        wire.WorkerInfo(
            id=w.id,
            name=name,
            datacenter=w.datacenter,
            cores=w.cores,
            python=w.python,
            hostname=w.hostname,
            version=w.version,
            registered=w.registered,
            last_seen=w.last_seen,
            running=w.running,
        )
        for w, name in rows
    ]
