"""Tags and their tasks, as their owner sees them: status, listing, pulling, cancel, delete.

Cancelling is a state change, made by :meth:`Lifecycle.close`; deleting removes the rows and
then every object and tag no remaining task needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, cast

import anyio.to_thread
from sqlalchemy import BigInteger, Integer, bindparam, delete, exists, func, select, tuple_
from sqlalchemy.orm import Session

from hmq import wire
from hmq._batching import batched
from hmq._errors import BadRequest, NotFound
from lambdas.auth import Principal
from lambdas.db.models import OPEN_STATES, Batch, Chunk, Tag, Task, TaskStatus
from lambdas.service import Context, Who, caller, delete_objects, placement
from lambdas.service.wake import tag_channel, touch


def _state(status: int) -> wire.TaskState:
    return cast(wire.TaskState, TaskStatus(status).label)


def own_tag(session: Session, principal: Principal, name: str) -> Tag:
    """The caller's tag by name. Another user's tag is reported as unknown, not as forbidden:
    a user cannot even learn that someone else's tag exists."""
    principal.require("user")
    tag = session.scalars(select(Tag).where(Tag.user_id == principal.user_id, Tag.name == name)).one_or_none()
    if tag is None:
        raise NotFound("unknown_tag", f"unknown tag {name!r}")
    return tag


def tag_status(ctx: Context, principal: Principal, name: str) -> wire.TagStatus:
    """Counts by state, and warnings: why pending tasks wait, environments being built for them."""
    with ctx.index.read() as session:
        tag = own_tag(session, principal, name)
        counts = dict(
            session.execute(select(Task.status, func.count()).where(Task.tag_id == tag.id).group_by(Task.status)).all()
        )
        pending = counts.get(TaskStatus.PENDING, 0)
        warnings = placement.tag_warnings(ctx, session, tag, pending, pending + counts.get(TaskStatus.RUNNING, 0))
    out = wire.TagStatus(tag=name, warnings=warnings, **{TaskStatus(s).label: n for s, n in counts.items()})
    out.total = sum(counts.values())
    return out


def list_tags(ctx: Context, principal: Principal, name: Optional[str] = None) -> list[wire.TagSummary]:
    """The caller's tags (or only the one named), oldest first, with their tasks per state and
    the time of their latest result."""
    principal.require("user")
    with ctx.index.read() as session:
        query = select(Tag.id, Tag.name, Tag.created).where(Tag.user_id == principal.user_id)
        if name is not None:
            query = query.where(Tag.name == name)
        tags = session.execute(query.order_by(Tag.created, Tag.id)).all()
        counts: dict[int, dict[str, int]] = {t.id: {} for t in tags}
        last: dict[int, float] = {}
        for part in batched(list(counts), ctx.settings.select_page):
            per_state = select(Task.tag_id, Task.status, func.count()).where(Task.tag_id.in_(part))
            for tag_id, status, n in session.execute(per_state.group_by(Task.tag_id, Task.status)):
                counts[tag_id][TaskStatus(status).label] = n
            latest = select(Batch.tag_id, func.max(Batch.created)).where(Batch.tag_id.in_(part))
            last.update({tag_id: when for tag_id, when in session.execute(latest.group_by(Batch.tag_id))})
    return [_summary(t.name, t.created, counts[t.id], last.get(t.id)) for t in tags]


def _summary(name: str, created: float, counts: dict[str, int], last_result: Optional[float]) -> wire.TagSummary:
    open_count = sum(counts.get(TaskStatus(s).label, 0) for s in OPEN_STATES)
    return wire.TagSummary(
        tag=name, created=created, total=sum(counts.values()), open=open_count, last_result=last_result, **counts
    )


def find_tasks(ctx: Context, principal: Principal, name: str, after: Optional[str], limit: int) -> wire.TaskPage:
    with ctx.index.read() as session:
        tag = own_tag(session, principal, name)
        query = select(Task.seq, Task.id).where(Task.tag_id == tag.id)
        if after:
            query = query.where(Task.seq > _int(after))
        rows = session.execute(query.order_by(Task.seq).limit(limit)).all()
    return wire.TaskPage(tasks=[r.id for r in rows], next=str(rows[-1].seq) if len(rows) == limit else None)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest("invalid_cursor", f"invalid cursor {text!r}") from None


def _group_done(
    ctx: Context, rows: Sequence[Any], base_url: str
) -> tuple[list[wire.DoneObject], list[wire.ClosedTask]]:
    objects: list[wire.DoneObject] = []
    closed: list[wire.ClosedTask] = []
    by_key: dict[str, wire.DoneObject] = {}
    for row in rows:
        if row.key is None:
            closed.append(wire.ClosedTask(id=row.id, status=_state(row.status), error=row.error))
            continue
        obj = by_key.get(row.key)
        if obj is None:
            obj = by_key[row.key] = wire.DoneObject(key=row.key, url=ctx.presign_get(row.key, base_url), tasks=[])
            objects.append(obj)
        obj.tasks.append(row.id)
    return objects, closed


def _done_columns() -> tuple:
    return (Task.seq, Task.id, Task.status, Task.batch_id, Task.error, Batch.key)


# What a pull runs, built once (a blocking pull runs them for each page it reads).
_OWN_TAG_ID = select(Tag.id).where(Tag.user_id == bindparam("user"), Tag.name == bindparam("name"))
_DONE_AFTER = (
    select(*_done_columns())
    .join(Batch, Batch.id == Task.batch_id)
    .where(
        Task.tag_id == bindparam("tag"),
        Task.batch_id.is_not(None),
        tuple_(Task.batch_id, Task.seq)
        > tuple_(bindparam("batch_after", type_=BigInteger), bindparam("seq_after", type_=BigInteger)),
    )
    .order_by(Task.batch_id, Task.seq)
    .limit(bindparam("limit", type_=Integer))
)
_OPEN_IN_TAG = select(func.count()).where(Task.tag_id == bindparam("tag"), Task.status.in_(OPEN_STATES))


def _cursor(cursor: str) -> tuple[int, int]:
    """The ``batch:seq`` a pull reads after (``""``: from the start)."""
    try:
        batch_after, seq_after = (int(x) for x in cursor.split(":")) if cursor else (0, 0)
    except ValueError:
        raise BadRequest("invalid_cursor", f"invalid cursor {cursor!r}") from None
    return batch_after, seq_after


def _own_tag_id(session: Session, principal: Principal, name: str) -> int:
    """:func:`own_tag`'s id (one prebuilt query)."""
    principal.require("user")
    params = {"user": principal.user_id, "name": name}
    tag_id = session.connection().execute(_OWN_TAG_ID, params).scalar_one_or_none()
    if tag_id is None:
        raise NotFound("unknown_tag", f"unknown tag {name!r}")
    return int(tag_id)


def _page(ctx: Context, session: Session, tag_id: int, cursor: str, limit: int, base_url: str) -> wire.DonePage:
    batch_after, seq_after = _cursor(cursor)
    connection = session.connection()
    params = {"tag": tag_id, "batch_after": batch_after, "seq_after": seq_after, "limit": limit}
    rows = connection.execute(_DONE_AFTER, params).all()
    open_count = connection.execute(_OPEN_IN_TAG, {"tag": tag_id}).scalar()
    objects, closed = _group_done(ctx, rows, base_url)
    next_cursor = f"{rows[-1].batch_id}:{rows[-1].seq}" if rows else cursor
    return wire.DonePage(
        objects=objects, closed=closed, cursor=next_cursor, more=len(rows) == limit, open=open_count or 0
    )


def done_page(ctx: Context, principal: Principal, name: str, cursor: str, limit: int, base_url: str) -> wire.DonePage:
    """Finished tasks of a tag after ``cursor``, grouped by the result object holding them."""
    _cursor(cursor)
    with ctx.index.read() as session:
        return _page(ctx, session, _own_tag_id(session, principal, name), cursor, limit, base_url)


def _first_page(
    ctx: Context, who: Who, name: str, cursor: str, limit: int, base_url: str
) -> tuple[Principal, int, int, wire.DonePage]:
    """A pull's first read, in the transaction that authenticates it: the caller, the tag's id,
    the version of its channel before the page was read, and the page."""
    with ctx.index.write() as session:
        principal = caller(who, session)
        _cursor(cursor)
        tag_id = _own_tag_id(session, principal, name)
        since = ctx.wakeups.version(tag_channel(tag_id))
        page = _page(ctx, session, tag_id, cursor, limit, base_url)
    return principal, tag_id, since, page


async def done_waiting(
    ctx: Context,
    who: Who,
    name: str,
    cursor: str,
    limit: int,
    base_url: str,
    wait: float = 0.0,
    gone: Optional[Callable[[], Awaitable[bool]]] = None,
) -> wire.DonePage:
    """:func:`done_page`; when it has nothing new while tasks are still open and the pull asks
    to ``wait``, read again each time tasks of the tag finish (:mod:`lambdas.service.wake`),
    until there is news or the wait (cut to the API's limit) is over. The first read is one
    transaction with the caller's authentication, when ``who`` is a check."""
    wait = ctx.wait_for(wait)
    principal, tag_id, since, page = await anyio.to_thread.run_sync(
        _first_page, ctx, who, name, cursor, limit, base_url
    )
    if wait > 0 and not _news(page):
        again = lambda: done_page(ctx, principal, name, cursor, limit, base_url)  # noqa: E731
        page = await ctx.wakeups.until(tag_channel(tag_id), wait, again, _news, gone, after=(page, since))
    return page.model_copy(update={"wait": wait})


def _news(page: wire.DonePage) -> bool:
    """Whether a pull has something to take from this page (or nothing left to wait for)."""
    return bool(page.objects or page.closed or page.unknown or page.more) or page.open == 0


def lookup(ctx: Context, principal: Principal, ids: list[uuid.UUID], base_url: str) -> wire.DonePage:
    """Results and states of specific tasks; ids that are unknown (deleted) are listed as such."""
    principal.require("user")
    with ctx.index.read() as session:
        rows = session.execute(
            select(*_done_columns())
            .join(Batch, Batch.id == Task.batch_id, isouter=True)
            .where(Task.id.in_(ids), Task.user_id == principal.user_id)
        ).all()
    found = {r.id for r in rows}
    done = [r for r in rows if r.batch_id is not None]
    objects, closed = _group_done(ctx, done, base_url)
    open_count = sum(1 for r in rows if r.status in OPEN_STATES)
    return wire.DonePage(
        objects=objects,
        closed=closed,
        cursor="",
        more=False,
        open=open_count,
        unknown=[i for i in ids if i not in found],
    )


def result_object(ctx: Context, principal: Principal, key: str) -> wire.ResultObjectOut:
    """Whether a result object holding some of the caller's tasks is in the store: a client asks
    before it fails tasks whose object it could not download."""
    principal.require("user")
    with ctx.index.read() as session:
        mine = session.scalar(
            select(Batch.id)
            .join(Task, Task.batch_id == Batch.id)
            .where(Batch.key == key, Task.user_id == principal.user_id)
            .limit(1)
        )
    if mine is None:
        raise NotFound("unknown_object", f"no result object {key!r} holds tasks of yours")
    return wire.ResultObjectOut(key=key, size=ctx.store.size(key))


def task_statuses(ctx: Context, principal: Principal, ids: list[uuid.UUID]) -> wire.TaskStatusOut:
    principal.require("user")
    with ctx.index.read() as session:
        rows = session.execute(
            select(Task.id, Task.status).where(Task.id.in_(ids), Task.user_id == principal.user_id)
        ).all()
    known = {r.id: _state(r.status) for r in rows}
    return wire.TaskStatusOut(statuses={str(i): known.get(i) for i in ids})


# --- cancel ------------------------------------------------------------------------------------
def _selected(
    session: Session, principal: Principal, sel: wire.TaskSelection, extra: list, limit: int
) -> list[tuple[int, int, uuid.UUID]]:
    """(seq, tag_id, id) of the caller's tasks chosen by ids (as many as the request names) or
    by tag (a page of at most ``limit``)."""
    if (sel.tasks is None) == (sel.tag is None):
        raise BadRequest("invalid_selection", "name either tasks or a tag")
    query = select(Task.seq, Task.tag_id, Task.id).where(Task.user_id == principal.user_id, *extra)
    if sel.tag is not None:
        query = query.where(Task.tag_id == own_tag(session, principal, sel.tag).id).limit(limit)
    else:
        query = query.where(Task.id.in_(sel.tasks or []))
    return [tuple(r) for r in session.execute(query.order_by(Task.seq)).all()]  # type: ignore[misc]


def cancel(ctx: Context, principal: Principal, sel: wire.TaskSelection) -> wire.TaskIdsOut:
    """Cancel open tasks (pending or running). A worker's later result for them is ignored."""
    principal.require("user")
    limit = ctx.settings.tag_page_tasks
    with ctx.index.write() as session:
        rows = _selected(session, principal, sel, [Task.status.in_(OPEN_STATES)], limit)
        ctx.lifecycle.close(session, [(seq, tag_id) for seq, tag_id, _ in rows], TaskStatus.CANCELLED)
    return wire.TaskIdsOut(tasks=[r[2] for r in rows], more=sel.tag is not None and len(rows) == limit)


# --- delete ------------------------------------------------------------------------------------
def delete_tasks(ctx: Context, principal: Principal, sel: wire.TaskSelection) -> wire.TaskIdsOut:
    """Delete tasks, then every object and tag that no remaining task needs."""
    principal.require("user")
    limit, page = ctx.settings.tag_page_tasks, ctx.settings.select_page
    with ctx.index.write() as session:
        rows = _selected(session, principal, sel, [], limit)
        seqs = [r[0] for r in rows]
        chunk_ids: set[int] = set()
        batch_ids: set[int] = set()
        for part in batched(seqs, page):
            for chunk_id, batch_id in session.execute(select(Task.chunk_id, Task.batch_id).where(Task.seq.in_(part))):
                chunk_ids.add(chunk_id)
                if batch_id is not None:
                    batch_ids.add(batch_id)
            session.execute(delete(Task).where(Task.seq.in_(part)))
        keys = _collect_garbage(session, chunk_ids, batch_ids, {r[1] for r in rows}, page)
        touch(session, *{tag_channel(r[1]) for r in rows})  # waiting pulls see them gone
        # A whole tag is deleted page by page; "more" only while it still has tasks (the last
        # page removed the tag itself).
        more = (
            sel.tag is not None
            and len(rows) == limit
            and bool(session.scalar(select(exists().where(Task.tag_id == rows[-1][1]))))
        )
    delete_objects(ctx, keys)
    return wire.TaskIdsOut(tasks=[r[2] for r in rows], more=more)


def _collect_garbage(
    session: Session, chunk_ids: set[int], batch_ids: set[int], tag_ids: set[int], page: int
) -> list[str]:
    """Remove chunks, batches and tags no task refers to any more; return their object keys."""
    keys: list[str] = []
    for part in batched(sorted(chunk_ids), page):
        orphans = session.execute(
            select(Chunk.id, Chunk.key).where(Chunk.id.in_(part), ~exists().where(Task.chunk_id == Chunk.id))
        ).all()
        keys += [k for _, k in orphans]
        session.execute(delete(Chunk).where(Chunk.id.in_([i for i, _ in orphans])))
    for part in batched(sorted(batch_ids), page):
        batches = session.execute(
            select(Batch.id, Batch.key).where(Batch.id.in_(part), ~exists().where(Task.batch_id == Batch.id))
        ).all()
        keys += [k for _, k in batches if k]
        session.execute(delete(Batch).where(Batch.id.in_([i for i, _ in batches])))
    for tag_id in tag_ids:
        if session.scalar(select(exists().where(Task.tag_id == tag_id))):
            continue
        leftover = session.scalars(select(Batch.key).where(Batch.tag_id == tag_id, Batch.key.is_not(None))).all()
        keys += [k for k in leftover if k]
        session.execute(delete(Batch).where(Batch.tag_id == tag_id))
        keys += list(session.scalars(select(Chunk.key).where(Chunk.tag_id == tag_id)).all())
        session.execute(delete(Chunk).where(Chunk.tag_id == tag_id))
        session.execute(delete(Tag).where(Tag.id == tag_id))
    return keys
