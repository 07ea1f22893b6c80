"""What the owner of tasks is told about where they can run: placement warnings and builds.

- **Placement warnings** (the submit answer, the tag status): no worker seen within
  ``placement_warning_seconds`` can run the tasks, and what is missing (their Python version,
  enough cores or memory, one of their datacenters), from :func:`lifecycle.missing`, the same
  test (:func:`lifecycle.can_run`) the placement timeout applies (claims apply it in SQL). No worker at
  all is a warning too, saying that workers may be started on demand: autoscalers
  (``hmq autoscale``) read the queue, not the workers, and start workers as tasks wait.
- **Builds** (the tag status): the package environments live workers (seen within a lease)
  report building for package sets the tag's open tasks need, e.g. "building numpy env on 1
  worker (for 12 s)". Workers report them in their heartbeats and claims (:func:`record_builds`).

Both are read-only and recomputed per request from the worker rows, so a warning disappears as
soon as a matching worker registers or claims, and a build once its worker reports it done.
A tag keeps the placements its tasks were submitted with (:func:`remember`), so the tag status
needs no scan of its tasks: only a placement no worker can run, or one a build is for, costs a
look-up (is a task of it still open?).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from sqlalchemy import ColumnElement, bindparam, select, update
from sqlalchemy.orm import Session

from hmq import wire
from lambdas.db.models import OPEN_STATES, Tag, Task, TaskStatus, Worker
from lambdas.service import Context
from lambdas.service.lifecycle import encode_datacenters, missing, span

Placement = tuple[str, Optional[str], int, Optional[int], str]
"""What decides where a task runs and in what: Python, datacenters (stored form), ncores,
memory, packages (as stored: the JSON of the normalised set)."""


def of_chunks(chunks: Iterable[wire.ChunkIn]) -> list[Placement]:
    """The placements of submitted chunks, each once."""
    found = {
        (
            c.python,
            encode_datacenters(c.datacenters),
            c.ncores,
            c.memory,
            json.dumps(wire.normalise_packages(c.packages)),
        )
        for c in chunks
    }
    return sorted(found, key=repr)


def remember(session: Session, tag: Any, placements: Sequence[Placement]) -> None:
    """Add ``placements`` to those the tag keeps (``tag``: its row, with ``id`` and
    ``placements``). A tag made before they were kept (NULL) stays without: a partial list
    would hide some, so its open tasks are scanned instead. Adding one locks the tag's row
    first (PostgreSQL), so concurrent submits lose none."""
    if tag.placements is None or not _new(tag.placements, placements):
        return
    connection = session.connection()
    kept = connection.execute(_KEPT_FOR_UPDATE, {"tag": tag.id}).scalar()
    if kept is not None:
        connection.execute(
            _KEEP, {"tag": tag.id, "placements": json.dumps([*json.loads(kept), *_new(kept, placements)])}
        )


_KEPT_FOR_UPDATE = select(Tag.placements).where(Tag.id == bindparam("tag")).with_for_update()
_KEEP = update(Tag).where(Tag.id == bindparam("tag")).values(placements=bindparam("placements"))


def _new(kept: Optional[str], placements: Sequence[Placement]) -> list[Placement]:
    """Those of ``placements`` not in ``kept`` (a tag's JSON list)."""
    known = [tuple(p) for p in json.loads(kept or "[]")]
    return [p for p in placements if p not in known]


def submit_warnings(ctx: Context, session: Session, placements: Sequence[Placement]) -> list[str]:
    """Why tasks just submitted with ``placements`` cannot run now (empty: some worker can)."""
    workers = _recent_workers(ctx, session)
    window = span(ctx.settings.placement_warning_seconds)
    reasons = (missing(workers, *p[:4], window) for p in placements)
    return _unique(_waits(ctx, reason) for reason in reasons if reason)


def tag_warnings(ctx: Context, session: Session, tag: Tag, pending: int, open_tasks: int) -> list[str]:
    """The tag status's warnings: placements of its pending tasks no recent worker can run,
    then the environments live workers are building for its open tasks."""
    if open_tasks == 0:
        return []
    placements = _placements(session, tag)
    out: list[str] = []
    if pending:
        workers = _recent_workers(ctx, session)
        window = span(ctx.settings.placement_warning_seconds)
        for p in placements:
            reason = missing(workers, *p[:4], window)
            if reason and _any(session, tag, [TaskStatus.PENDING], _matches(p)):
                out.append(_waits(ctx, reason))
    out += _builds(ctx, session, tag, {p[4] for p in placements if p[4] != "[]"})
    return _unique(out)


def builds_column(ctx: Context, builds: wire.Builds) -> Optional[str]:
    """The stored form of what a worker reports building (``Worker.building``), which its
    claim or heartbeat writes (``None`` there, an older worker: the column is left as it is)."""
    now = ctx.now()
    kept = [{"packages": wire.normalise_packages(b.packages), "since": now - b.seconds} for b in builds or ()]
    return json.dumps(kept) if kept else None


# --- helpers ---------------------------------------------------------------------------------
def _waits(ctx: Context, reason: str) -> str:
    timeout = ctx.settings.placement_timeout_seconds
    fails = f", and fail if none is seen within {span(timeout)}" if timeout > 0 else ""
    return (
        f"{reason}: the tasks wait until a worker that can run them registers (workers may be started on demand){fails}"
    )


def _recent_workers(ctx: Context, session: Session) -> Sequence[Any]:
    since = ctx.now() - ctx.settings.placement_warning_seconds
    return session.connection().execute(_RECENT_WORKERS, {"since": since}).all()


_RECENT_WORKERS = (
    select(Worker.python, Worker.datacenter, Worker.cores, Worker.memory)
    .distinct()
    .where(Worker.last_seen >= bindparam("since"))
)


def _placements(session: Session, tag: Tag) -> list[Placement]:
    """The tag's placements: those it keeps, else (a tag made before) those of its open tasks."""
    if tag.placements is not None:
        return [tuple(p) for p in json.loads(tag.placements)]
    columns = (Task.python, Task.datacenters, Task.ncores, Task.memory, Task.packages)
    rows = session.execute(select(*columns).distinct().where(Task.tag_id == tag.id, Task.status.in_(OPEN_STATES))).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _matches(p: Placement) -> list[ColumnElement[bool]]:
    python, datacenters, ncores, memory, packages = p
    return [
        Task.python == python,
        Task.datacenters.is_(None) if datacenters is None else Task.datacenters == datacenters,
        Task.ncores == ncores,
        Task.memory.is_(None) if memory is None else Task.memory == memory,
        Task.packages == packages,
    ]


def _any(session: Session, tag: Tag, states: Sequence[int], where: list[ColumnElement[bool]]) -> bool:
    """Whether the tag has a task in ``states`` matching ``where`` (stops at the first)."""
    query = select(Task.seq).where(Task.tag_id == tag.id, Task.status.in_(states), *where).limit(1)
    return session.scalar(query) is not None


def _builds(ctx: Context, session: Session, tag: Tag, package_sets: set[str]) -> list[str]:
    """ "building numpy env on 1 worker (for 12 s)", for each set of ``package_sets`` a live
    worker reports building and an open task of the tag needs."""
    if not package_sets:
        return []
    now = ctx.now()
    reports = session.scalars(
        select(Worker.building).where(
            Worker.last_seen >= now - ctx.settings.lease_seconds, Worker.building.is_not(None)
        )
    )
    since: dict[str, list[float]] = {}
    for text in reports:
        for build in json.loads(text or "[]"):
            key = json.dumps(build["packages"])
            if key in package_sets:
                since.setdefault(key, []).append(float(build["since"]))
    notes = []
    for key, starts in sorted(since.items()):
        if _any(session, tag, OPEN_STATES, [Task.packages == key]):
            n = len(starts)
            what = " ".join(json.loads(key))
            notes.append(f"building {what} env on {n} worker{'' if n == 1 else 's'} (for {span(now - min(starts))})")
    return notes


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
