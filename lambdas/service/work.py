"""The worker's side of the queue: register, claim, heartbeat, complete.

Roles, sessions, the worker registry and presigning are here; the task state changes (lease,
extend, finish, release) are :mod:`lambdas.service.lifecycle`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, cast

import anyio.to_thread
from sqlalchemy import Integer, Table, bindparam, delete, literal_column, select, update
from sqlalchemy.orm import Session

from hmq import wire
from hmq._errors import BadRequest, NotFound, PermissionDenied
from lambdas.auth import Principal
from lambdas.db.models import Chunk, Function, Tag, Task, TaskStatus, Upload, User, Worker
from lambdas.service import Context, Who, caller, delete_objects, lifecycle, objects_checked, placement, queue
from lambdas.service.shares import Caps
from lambdas.service.submit import issue_uploads, presigned_uploads, registered, upload_prefix
from lambdas.service.wake import WORK

log = logging.getLogger("hmq.api")


def register(ctx: Context, principal: Principal, body: wire.WorkerIn) -> wire.WorkerOut:
    principal.require("worker")
    now = ctx.now()
    worker_id = uuid.uuid4()
    with ctx.index.write() as session:
        session.add(
            Worker(
                id=worker_id,
                user_id=principal.user_id,
                datacenter=body.datacenter,
                cores=body.cores,
                python=body.python,
                memory=body.memory,
                isolation=body.isolation,
                hostname=body.hostname,
                version=body.version,
                registered=now,
                last_seen=now,
            )
        )
    lease = ctx.settings.lease_seconds
    return wire.WorkerOut(worker_id=worker_id, lease_seconds=lease, heartbeat_seconds=lease / 4)


_LOAD = ("allocated", "running", "used")
_WORKERS = cast(Table, Worker.__table__)
_SEEN_COLUMNS = [_WORKERS.c[name] for name in ("id", "datacenter", "cores", "python", "memory", "sampled", *_LOAD)]
_SEEN: dict[tuple[bool, bool, str], Any] = {}  # by (load, builds, dialect to find runnable placements in)


def _seen_statement(load: bool, building: bool, runnable: str = "") -> Any:
    """``UPDATE workers SET last_seen (, the load) (, building) WHERE it is the caller's
    RETURNING`` what a claim needs, with ``runnable`` (a dialect's name) the placements it
    can run (:func:`lambdas.service.lifecycle.runnable`): Core, built once (each claim and
    heartbeat runs one)."""
    key = (load, building, runnable)
    if key not in _SEEN:
        values: dict[str, Any] = {"last_seen": bindparam("p_now")}
        values.update({k: bindparam(f"p_{k}") for k in _LOAD} if load else {})
        values.update({"building": bindparam("p_building")} if building else {})
        mine = (_WORKERS.c.id == bindparam("p_worker"), _WORKERS.c.user_id == bindparam("p_user"))
        returned = list(_SEEN_COLUMNS)
        if runnable:
            available = bindparam("p_available", type_=Integer)
            returned.append(lifecycle.runnable(_WORKERS, available, runnable).label("runnable"))
        _SEEN[key] = update(_WORKERS).where(*mine).values(**values).returning(*returned)
    return _SEEN[key]


def _seen(
    ctx: Context,
    session: Session,
    principal: Principal,
    worker_id: uuid.UUID,
    builds: wire.Builds = None,
    available: Optional[int] = None,
    **load: int,
) -> Any:
    """The caller's own worker, marked as seen now (its ``load`` and the ``builds`` it reports
    recorded: :func:`lambdas.service.placement.builds_column`): one UPDATE. A row of the
    worker's placement, load and last sampled minute (:meth:`lambdas.service.metrics.Metrics.sample`),
    and given the cores ``available``, on PostgreSQL, the placements it can run with them
    (``runnable``)."""
    principal.require("worker")
    params: dict[str, Any] = {"p_worker": worker_id, "p_user": principal.user_id, "p_now": ctx.now()}
    params.update({f"p_{k}": v for k, v in load.items()})
    if builds is not None:
        params["p_building"] = placement.builds_column(ctx, builds)
    connection = session.connection()
    # PostgreSQL: the runnable placements in the same statement (SQLite's RETURNING leaves the
    # columns of a subquery unqualified, so there the lease looks them up on its own).
    runnable = connection.dialect.name if available is not None and connection.dialect.name == "postgresql" else ""
    if runnable:
        params["p_available"] = available
    worker = connection.execute(_seen_statement(bool(load), builds is not None, runnable), params).first()
    if worker is not None:
        return worker
    if session.get(Worker, worker_id) is None:
        raise NotFound("unknown_worker", f"unknown worker {worker_id}; register first")
    raise PermissionDenied("this worker was registered by another identity")


def claim(ctx: Context, who: Who, worker_id: uuid.UUID, body: wire.ClaimIn, base_url: str) -> wire.ClaimOut:
    """Lease up to ``max_tasks`` pending tasks this worker can run, oldest first, grouped by
    chunk; extend the leases of the ``held`` tasks it names, as a heartbeat would. One
    transaction (the caller's authentication too, when ``who`` is a check)."""
    with ctx.index.write() as session:
        principal = caller(who, session)
        load = {"allocated": body.allocated, "running": body.running, "used": body.used}
        worker = _seen(ctx, session, principal, worker_id, body.building, body.available, **load)
        ctx.metrics.sample(session, worker, ctx.now())
        held_until, drop = None, []
        if body.held is not None:
            held, held_until = ctx.lifecycle.extend(session, worker_id, body.held)
            drop = [t for t in body.held if t not in held]
        caps = Caps(body.per_user, body.others, body.per_function, body.unmeasured)
        lease = ctx.lifecycle.lease(session, worker, body.available, body.max_tasks, caps)
        rows = _claimed(session, lease.seqs)
        users = {r.user_id for r in rows}
        certificates = dict(session.connection().execute(_CERTIFICATES, {"users": list(users)}).all()) if users else {}
        slots = []
        if rows and body.result_slots:  # what the worker will report these with: no request of its own
            slots = issue_uploads(ctx, session, principal, "results", body.result_slots, worker_id, within_quota=True)
    groups = _groups(ctx, rows, certificates, base_url)
    uploads = presigned_uploads(ctx, slots, base_url) if slots else None
    return wire.ClaimOut(groups=groups, lease_until=lease.until, held_until=held_until, drop=drop, uploads=uploads)


async def claim_waiting(
    ctx: Context,
    check: Callable[[Session], Principal],
    worker_id: uuid.UUID,
    body: wire.ClaimIn,
    base_url: str,
    gone: Optional[Callable[[], Awaitable[bool]]] = None,
) -> wire.ClaimOut:
    """:func:`claim`; when it finds nothing and the claim asks to ``wait``, claim again each
    time tasks become pending (:mod:`lambdas.service.wake`), until some are leased or the wait
    (cut to the API's limit) is over. The first try authenticates and extends the held leases;
    the next ones only lease. Woken for tasks it could not lease, while tasks are pending, it
    hands the wake-up on to the next waiting claim. A worker that hung up (``gone``: it was told
    to stop) is left alone once woken (its wake-up goes on); tasks leased for it while it hung
    up are handed back at once, not when their lease runs out."""
    wait = ctx.wait_for(body.wait)
    again = body.model_copy(update={"held": None})
    state: dict[str, Any] = {}

    def authenticated(session: Session) -> Principal:
        state["principal"] = check(session)
        return state["principal"]

    def attempt() -> wire.ClaimOut:
        if "first" in state:
            return claim(ctx, state["principal"], worker_id, again, base_url)
        state["first"] = claim(ctx, authenticated, worker_id, body, base_url)
        return state["first"]

    def leased(answer: wire.ClaimOut) -> bool:
        return bool(answer.groups)

    out = await ctx.wakeups.until(WORK, wait, attempt, leased, gone, more=lambda: _pending(ctx))
    if out.groups and wait > 0 and gone is not None and await _hung_up(gone):
        ids = [t.id for g in out.groups for t in g.tasks]
        keys = [slot.key for slot in out.uploads.slots] if out.uploads is not None else []
        await anyio.to_thread.run_sync(_hand_back, ctx, worker_id, ids, keys)
        out = out.model_copy(update={"groups": [], "uploads": None})
    first: wire.ClaimOut = state["first"]
    return out.model_copy(update={"wait": wait, "held_until": first.held_until, "drop": first.drop})


async def _hung_up(gone: Callable[[], Awaitable[bool]]) -> bool:
    """Whether the worker hung up, after one turn of the event loop: a hang-up the server has
    seen (its connection closing) is told to the request only on the loop's next turn."""
    await asyncio.sleep(0)
    return await gone()


def _hand_back(ctx: Context, worker_id: uuid.UUID, ids: list[uuid.UUID], keys: list[str]) -> None:
    """Hand back tasks leased for a claim whose worker hung up: pending again at once (and the
    waiting claims woken for them), not when their lease runs out; the result upload URLs
    issued with them (``keys``: the worker never got them) stop counting against its quota."""
    with ctx.index.write() as session:
        released = ctx.lifecycle.release(session, worker_id, ids)
        if keys:
            session.connection().execute(_NEVER_SENT, {"keys": keys, "worker": worker_id})
    log.info("worker %s hung up on its claim: %d of its %d tasks handed back", worker_id, len(released), len(ids))


_NEVER_SENT = delete(Upload).where(
    Upload.key.in_(bindparam("keys", expanding=True)), Upload.worker_id == bindparam("worker")
)


_ANY_PENDING = select(Task.seq).where(Task.status == literal_column(str(int(TaskStatus.PENDING)))).limit(1)
_CERTIFICATES = select(User.id, User.certificate).where(User.id.in_(bindparam("users", expanding=True)))
_CLAIMED = (  # built once, as the claim's other statements: what a worker needs to run the tasks
    select(
        Task.id,
        Task.offset,
        Task.length,
        Task.attempt,
        Task.failures,
        Task.user_id,
        Chunk.key,
        Chunk.header_len,
        Function.digest,
        Function.key.label("fkey"),
        Tag.name,
    )
    .join(Chunk, Chunk.id == Task.chunk_id)
    .join(Function, Function.id == Chunk.function_id)
    .join(Tag, Tag.id == Task.tag_id)
    .where(Task.seq.in_(bindparam("seqs", expanding=True)))
    .order_by(Task.seq)
)


def _pending(ctx: Context) -> bool:
    """Whether any task is pending (one probe of the partial index of pending tasks)."""
    with ctx.index.read() as session:
        return session.connection().execute(_ANY_PENDING).first() is not None


def _claimed(session: Session, seqs: list[int]) -> Sequence[Any]:
    """What a worker needs to run the tasks ``seqs``: their chunk, function and tag."""
    if not seqs:
        return []
    return session.connection().execute(_CLAIMED, {"seqs": seqs}).all()


def _groups(ctx: Context, rows: Sequence[Any], certificates: dict[int, str], base_url: str) -> list[wire.ClaimGroup]:
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
                certificate=json.loads(certificates[r.user_id]),
                tag=r.name,
                tasks=[],
            )
        group.tasks.append(  # the index's own typed columns: no validation per task
            wire.ClaimTask.model_construct(
                id=r.id, offset=r.offset, length=r.length, attempt=r.attempt, failures=r.failures
            )
        )
    return list(groups.values())


def heartbeat(ctx: Context, who: Who, worker_id: uuid.UUID, body: wire.HeartbeatIn) -> wire.HeartbeatOut:
    """Extend the leases of the tasks the worker names (only those: a task it lost track of runs
    out of lease and returns to the queue); name those it should drop (cancelled, deleted, or
    re-leased after this worker was presumed dead). Keep the environments it says it builds.
    One transaction, authentication included when ``who`` is a check."""
    with ctx.index.write() as session:
        worker = _seen(ctx, session, caller(who, session), worker_id, body.building)
        ctx.metrics.sample(session, worker, ctx.now())
        held, lease_until = ctx.lifecycle.extend(session, worker_id, body.tasks)
    return wire.HeartbeatOut(lease_until=lease_until, drop=[t for t in body.tasks if t not in held])


def complete(ctx: Context, who: Who, worker_id: uuid.UUID, body: wire.CompleteIn) -> wire.CompleteOut:
    """Record results, rejections and tasks handed back. Only tasks still running under this
    worker's lease change state: a result for a cancelled, deleted or re-leased task is ignored.
    One transaction (the caller's authentication too, when ``who`` is a check).

    Idempotent: a retried report (its first answer was lost) finds its result objects already
    recorded and answers as the first time; an object is deleted only when nothing refers to it.
    """
    keys = [stored.key for stored in body.results]
    with ctx.index.write() as session:
        principal = caller(who, session)
        with objects_checked(_results_check(ctx, principal, keys)):
            _seen(ctx, session, principal, worker_id)
            registered(session, keys)
            finished = ctx.lifecycle.finish(session, worker_id, body)
    if finished.orphans:
        delete_objects(ctx, finished.orphans)
    return wire.CompleteOut(accepted=finished.accepted, ignored=finished.ignored)


def _results_check(ctx: Context, principal: Principal, keys: list[str]) -> Callable[[], None]:
    """Each result object was uploaded through this worker's slots, and is there, in report
    order: the first that is not is the answer. The objects are looked up together, while the
    report's transaction goes on (:func:`objects_checked`); an object from elsewhere ends the
    report here."""
    prefix = upload_prefix(principal, "results")
    ours = list(itertools.takewhile(lambda key: key.startswith(prefix), keys))
    sizes = ctx.store.look_up(ours)

    def check() -> None:
        found = sizes()
        for key in ours:
            if found[key] is None:
                raise BadRequest("object_missing", f"result object {key!r} has not been uploaded")
        if len(ours) < len(keys):
            raise PermissionDenied("result object was not uploaded through this worker's upload slots")

    if len(ours) < len(keys):
        check()
    return check


def report_corrupt(ctx: Context, principal: Principal, worker_id: uuid.UUID, body: wire.CorruptIn) -> wire.CorruptOut:
    """Mark the function object of ``body.chunk``'s tasks corrupt, so that the next registration
    of the function replaces it. Only a worker holding one of those tasks (running under its
    lease) may say so."""
    with ctx.index.write() as session:
        _seen(ctx, session, principal, worker_id)
        function_id = session.scalar(
            select(Chunk.function_id)
            .join(Task, Task.chunk_id == Chunk.id)
            .where(Chunk.key == body.chunk, Task.worker_id == worker_id, Task.status == TaskStatus.RUNNING)
            .limit(1)
        )
        if function_id is not None:
            session.execute(update(Function).where(Function.id == function_id).values(corrupt=True))
    if function_id is not None:
        log.warning("worker %s found the function object of chunk %s corrupt: %s", worker_id, body.chunk, body.reason)
    return wire.CorruptOut(marked=function_id is not None)


def package_sets(ctx: Context, principal: Principal, datacenter: str, python: str) -> wire.PackageSetsOut:
    """Package sets that pending tasks runnable in ``datacenter`` need (to pre-build envs)."""
    principal.require("worker")
    with ctx.index.read() as session:
        sets = queue.package_sets(session, queue.placements(session, datacenter, python))
    return wire.PackageSetsOut(packagesets=sets)


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
            memory=w.memory,
            isolation=w.isolation,
        )
        for w, name in rows
    ]
