"""Uploads, function registration and task submission."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Optional, cast

from sqlalchemy import Table, bindparam, delete, func, insert, literal, select
from sqlalchemy.orm import Session

from hmq import wire
from hmq._errors import BadRequest, Conflict, HmqError, NotFound, PayloadTooLarge, PermissionDenied
from lambdas.auth import Principal
from lambdas.db.models import Chunk, Function, Tag, Task, TaskStatus, Upload, User, Worker
from lambdas.service import Context, Who, caller, delete_objects, objects_checked, placement
from lambdas.service.lifecycle import encode_datacenters, place
from lambdas.service.wake import WORK, touch

KIND_LETTER = {"function": "f", "chunk": "c"}


def upload_prefix(principal: Principal, kind: str) -> str:
    """Object keys are allocated by the API under the caller's own prefix, so a caller can only
    ever register objects it was allowed to upload."""
    if kind == "results":
        return f"w/{principal.key_id}/"
    return f"u/{principal.key_id}/{KIND_LETTER[kind]}/"


def uploads(
    ctx: Context, principal: Principal, body: wire.UploadsIn, base_url: str, worker_id: Optional[uuid.UUID] = None
) -> wire.UploadsOut:
    """Presigned PUT URLs under the caller's prefix, each recorded until its object is
    registered (unregistered ones are swept after ``upload_grace_seconds``), at most
    ``max_pending_uploads`` per caller at a time: per user, or per worker for the result
    uploads of ``worker_id`` (which must be the caller's), since the workers of a fleet often
    share one identity and each keeps spare URLs (``result_slot_spare``)."""
    principal.require("worker" if body.kind == "results" else "user")
    with ctx.index.write() as session:
        keys = issue_uploads(ctx, session, principal, body.kind, body.count, worker_id)
    return presigned_uploads(ctx, keys, base_url)


def issue_uploads(
    ctx: Context,
    session: Session,
    principal: Principal,
    kind: str,
    count: int,
    worker_id: Optional[uuid.UUID] = None,
    *,
    within_quota: bool = False,
) -> list[str]:
    """Record ``count`` new upload keys of ``kind`` in ``session`` (:func:`uploads`); beyond the
    caller's quota a 429 ``upload_quota``, or with ``within_quota`` as many as it leaves (maybe
    none: a claim's spare result URLs, :func:`lambdas.service.work.claim`, the worker being the
    caller's already)."""
    limit = ctx.settings.max_pending_uploads
    if within_quota:
        count = min(count, limit - _pending_count(session, (Upload.worker_id == worker_id,)))
        if count <= 0:
            return []
    else:
        pending = _pending_uploads(session, principal, worker_id)
        if pending + count > limit:
            whose = "of this worker" if worker_id is not None else "of yours"
            raise BadRequest(
                "upload_quota",
                f"{pending} upload URLs {whose} are not registered yet and at most {limit} may be (each may carry "
                f"{ctx.settings.max_object_bytes} bytes): register what you uploaded, or wait until unregistered "
                f"uploads are deleted, {ctx.settings.upload_grace_seconds:.0f} s after their URL was issued",
                status=429,
            )
    prefix = upload_prefix(principal, kind)
    keys = [prefix + uuid.uuid4().hex for _ in range(count)]
    rows = [{"key": key, "user_id": principal.user_id, "issued": ctx.now(), "worker_id": worker_id} for key in keys]
    session.connection().execute(_ISSUED, rows)
    return keys


def presigned_uploads(ctx: Context, keys: list[str], base_url: str) -> wire.UploadsOut:
    """The presigned PUT URLs of upload keys recorded by :func:`issue_uploads`."""
    slots = [wire.UploadSlot(key=key, url=ctx.presign_put(key, base_url)) for key in keys]
    return wire.UploadsOut(slots=slots, expires_in=ctx.settings.presign_expiry_seconds)


def _pending_uploads(session: Session, principal: Principal, worker_id: Optional[uuid.UUID]) -> int:
    """The unregistered uploads counted against this request's quota: the worker's (it must be
    registered by the caller), or the user's own."""
    mine: tuple[Any, ...]
    if worker_id is None:
        mine = (Upload.user_id == principal.user_id, Upload.worker_id.is_(None))
    else:
        owner = session.scalar(select(Worker.user_id).where(Worker.id == worker_id))
        if owner is None:
            raise NotFound("unknown_worker", f"unknown worker {worker_id}; register first")
        if owner != principal.user_id:
            raise PermissionDenied("this worker was registered by another identity")
        mine = (Upload.worker_id == worker_id,)
    return _pending_count(session, mine)


def _pending_count(session: Session, mine: tuple[Any, ...]) -> int:
    return session.scalar(select(func.count()).select_from(Upload).where(*mine)) or 0


_ISSUED = insert(Upload)
_REGISTERED = delete(Upload).where(Upload.key.in_(bindparam("keys", expanding=True)))


def registered(session: Session, keys: list[str]) -> None:
    """The objects at ``keys`` are registered: their uploads are no longer swept."""
    if keys:
        session.connection().execute(_REGISTERED, {"keys": keys})


def _checked_size(ctx: Context, key: str, minimum: int, size: Optional[int]) -> int:
    """``size``, the object at ``key``'s (``None``: there is none), if it may be registered."""
    if size is None:
        raise BadRequest("object_missing", f"object {key!r} has not been uploaded")
    if size > ctx.settings.max_object_bytes:
        ctx.store.delete([key])
        raise PayloadTooLarge(
            "object_too_large", f"object is {size} bytes; the limit is {ctx.settings.max_object_bytes}"
        )
    if size < minimum:
        raise BadRequest("object_truncated", f"object {key!r} is {size} bytes, shorter than declared ({minimum})")
    return size


def register_function(ctx: Context, principal: Principal, body: wire.FunctionIn) -> wire.FunctionOut:
    principal.require("user")
    if not body.key.startswith(upload_prefix(principal, "function")):
        raise PermissionDenied("function object was not uploaded through this user's upload slots")
    size = _checked_size(ctx, body.key, body.size, ctx.store.size(body.key))
    with ctx.index.write() as session:
        existing = session.scalars(
            select(Function).where(Function.user_id == principal.user_id, Function.digest == body.digest)
        ).one_or_none()
        registered(session, [body.key])
        if existing is None:
            session.add(
                Function(user_id=principal.user_id, digest=body.digest, key=body.key, size=size, created=ctx.now())
            )
            return wire.FunctionOut(digest=body.digest, size=size)
        # Registered before: keep the first copy, unless a worker found it corrupt.
        old = existing.key
        if existing.corrupt:
            existing.key, existing.size, existing.corrupt = body.key, size, False
        unused = {old, body.key} - {existing.key}
        out = wire.FunctionOut(digest=existing.digest, size=existing.size)
    if unused:
        delete_objects(ctx, sorted(unused))
    return out


def get_function(ctx: Context, principal: Principal, digest: str, base_url: str) -> wire.FunctionOut:
    principal.require("user")
    with ctx.index.read() as session:
        fn = session.scalars(
            select(Function).where(Function.user_id == principal.user_id, Function.digest == digest)
        ).one_or_none()
    if fn is None:
        raise NotFound("unknown_function", f"function {digest} is not registered")
    return wire.FunctionOut(digest=fn.digest, size=fn.size, url=ctx.presign_get(fn.key, base_url), corrupt=fn.corrupt)


def submit(ctx: Context, who: Who, body: wire.SubmitIn) -> wire.SubmitOut:
    """Register the tasks of uploaded chunks as pending. Idempotent: task ids already known are
    skipped. The answer warns when no worker seen recently can run them (:mod:`.placement`).
    One transaction (the caller's authentication too, when ``who`` is a check)."""
    created = existing = 0
    with ctx.index.write() as session:
        principal = caller(who, session).require("user")
        with objects_checked(_chunks_check(ctx, principal, body.chunks)):
            if isinstance(who, Principal):  # authenticated in another transaction: revoked since?
                _not_revoked(session, principal)
            placements = placement.of_chunks(body.chunks)
            tag = _own_or_new_tag(ctx, session, principal, body.tag, placements)
            placement.remember(session, tag, placements)
            registered(session, [c.key for c in body.chunks])
            functions = _functions(session, principal, body.chunks)
            for chunk in body.chunks:
                rows = _task_rows(ctx, session, chunk, _chunk_id(session, tag, functions[chunk.function], chunk), tag)
                inserted = _insert_new(session, rows)
                created += inserted
                existing += len(rows) - inserted
            warnings = placement.submit_warnings(ctx, session, placements)
            if created:
                touch(session, WORK, count=created)  # as many waiting claims claim again once this is committed
    return wire.SubmitOut(created=created, existing=existing, warnings=warnings)


def _not_revoked(session: Session, principal: Principal) -> None:
    if session.scalar(select(User.revoked).where(User.id == principal.user_id)) is not None:
        raise PermissionDenied(f"access of user {principal.name!r} has been revoked")


def _functions(session: Session, principal: Principal, chunks: list[wire.ChunkIn]) -> dict[str, int]:
    """The ids of the chunks' functions, by digest. Each must be registered, and its stored copy
    not found corrupt by a worker (409 ``function_corrupt``: the client registers it again, which
    replaces the copy, and submits again; a client that remembers having registered a function
    does not look it up before each submit)."""
    params = {"user": principal.user_id, "digests": sorted({c.function for c in chunks})}
    rows = session.connection().execute(_FUNCTIONS, params).all()
    found = {r.digest: r for r in rows}
    for digest in dict.fromkeys(c.function for c in chunks):
        if digest not in found:
            raise BadRequest("unknown_function", f"function {digest} is not registered")
        if found[digest].corrupt:
            raise Conflict(
                "function_corrupt",
                f"the stored copy of function {digest} is corrupt (a worker could not open it): "
                "register the function again, then submit",
            )
    return {digest: r.id for digest, r in found.items()}


_FUNCTIONS = select(Function.digest, Function.id, Function.corrupt).where(
    Function.user_id == bindparam("user"), Function.digest.in_(bindparam("digests", expanding=True))
)


def _chunk_refused(principal: Principal, chunk: wire.ChunkIn) -> Optional[HmqError]:
    """Why ``chunk`` may not be submitted, before its object is looked at (``None``: it may)."""
    if not chunk.key.startswith(upload_prefix(principal, "chunk")):
        return PermissionDenied("chunk object was not uploaded through this user's upload slots")
    if any(offset < chunk.header_len or length <= 0 for _, offset, length in chunk.tasks):
        return BadRequest("invalid_chunk", "call ranges must lie after the chunk header")
    return None


def _chunks_check(ctx: Context, principal: Principal, chunks: list[wire.ChunkIn]) -> Callable[[], None]:
    """Each chunk was uploaded through the caller's slots, its call ranges lie after its header
    and its object is there, no larger than allowed and long enough, in submit order: the first
    that is not is the answer. The objects are looked up together, while the submit's
    transaction goes on (:func:`objects_checked`); a chunk refused before its object is looked
    at ends the submit here."""
    refused = [_chunk_refused(principal, chunk) for chunk in chunks]
    upto = next((i for i, why in enumerate(refused) if why is not None), len(chunks))
    sizes = ctx.store.look_up([chunk.key for chunk in chunks[:upto]])

    def check() -> None:
        found = sizes()
        for chunk in chunks[:upto]:
            _checked_size(ctx, chunk.key, max(offset + length for _, offset, length in chunk.tasks), found[chunk.key])
        if upto < len(chunks):
            raise cast(HmqError, refused[upto])

    if upto < len(chunks):
        check()
    return check


def _own_or_new_tag(
    ctx: Context, session: Session, principal: Principal, name: str, placements: list[placement.Placement]
) -> Any:
    """The row (``id``, ``user_id``, ``placements``) of the caller's tag ``name``, made on first
    use (names are per user: another user's tag of the same name is another tag), then keeping
    ``placements`` (:func:`placement.remember` has nothing to add to a new tag)."""
    connection = session.connection()
    tag = connection.execute(_OWN_TAG, {"user": principal.user_id, "name": name}).first()
    if tag is None:
        values = {
            "user_id": principal.user_id,
            "name": name,
            "created": ctx.now(),
            "placements": json.dumps(placements),
        }
        tag = connection.execute(_NEW_TAG, values).one()
    return tag


def _chunk_id(session: Session, tag: Any, function_id: int, chunk: wire.ChunkIn) -> int:
    """The chunk's row (made on first submission; a retried submission finds it)."""
    connection = session.connection()
    row = connection.execute(_CHUNK, {"key": chunk.key}).first()
    if row is None:
        values = {"tag_id": tag.id, "function_id": function_id, "key": chunk.key, "header_len": chunk.header_len}
        return int(connection.execute(_NEW_CHUNK, values).scalar_one())
    if row.tag_id != tag.id:
        raise Conflict("chunk_reused", "this chunk was submitted to another tag")
    return int(row.id)


# built once, as the other statements of a submit
_OWN_TAG = select(Tag.id, Tag.user_id, Tag.placements).where(
    Tag.user_id == bindparam("user"), Tag.name == bindparam("name")
)
_NEW_TAG = insert(Tag).returning(Tag.id, Tag.user_id, Tag.placements)
_CHUNK = select(Chunk.id, Chunk.tag_id).where(Chunk.key == bindparam("key"))
_NEW_CHUNK = insert(Chunk).returning(Chunk.id)


def _task_rows(ctx: Context, session: Session, chunk: wire.ChunkIn, chunk_id: int, tag: Any) -> list[dict[str, Any]]:
    datacenters = encode_datacenters(chunk.datacenters)
    shared = {
        "tag_id": tag.id,
        "user_id": tag.user_id,
        "chunk_id": chunk_id,
        "ncores": chunk.ncores,
        "python": chunk.python,
        "packages": json.dumps(wire.normalise_packages(chunk.packages)),
        "datacenters": datacenters,
        "placement_id": place(session, chunk.python, chunk.ncores, chunk.memory, datacenters),
        "timeout": chunk.timeout,
        "memory": chunk.memory,
        "retries": chunk.retries,
        "status": TaskStatus.PENDING,
        "attempt": 0,
        "failures": 0,
        "created": ctx.now(),
    }
    return [{"id": task_id, "offset": offset, "length": length, **shared} for task_id, offset, length in chunk.tasks]


def _insert_new(session: Session, rows: list[dict[str, Any]]) -> int:
    """INSERT task rows, skipping ids already known (ON CONFLICT DO NOTHING, on SQLite and
    PostgreSQL alike); return how many were new. The rows differ only in ``id``, ``offset``
    and ``length`` (one chunk's tasks)."""
    table = cast(Table, Task.__table__)
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return _insert_new_postgres(session, table, rows)
    return len(list(session.scalars(_INSERT_NEW_SQLITE, rows)))


def _insert_new_sqlite() -> Any:
    from sqlalchemy.dialects.sqlite import insert

    table = cast(Table, Task.__table__)
    return insert(table).on_conflict_do_nothing().returning(table.c.id)


_INSERT_NEW_SQLITE = _insert_new_sqlite()  # built once: each submit runs it per chunk


_PER_TASK = ("id", "offset", "length")


def _insert_new_postgres(session: Session, table: Table, rows: list[dict[str, Any]]) -> int:
    """One ``INSERT ... SELECT FROM unnest(ids, offsets, lengths)``: three array parameters
    whatever the number of rows, where a multi-row VALUES list costs the driver a query of
    thousands of placeholders to parse per statement."""
    from sqlalchemy.dialects.postgresql import ARRAY, insert

    arrays = [
        bindparam(f"task_{name}", [row[name] for row in rows], type_=ARRAY(table.c[name].type)) for name in _PER_TASK
    ]
    each = func.unnest(*arrays).table_valued(*_PER_TASK).render_derived(name="each")
    shared = [name for name in rows[0] if name not in _PER_TASK]
    values = select(
        *(each.c[name] for name in _PER_TASK),
        *(literal(rows[0][name], type_=table.c[name].type) for name in shared),
    )
    statement = insert(table).from_select([*_PER_TASK, *shared], values).on_conflict_do_nothing()
    return len(list(session.scalars(statement.returning(table.c.id))))
