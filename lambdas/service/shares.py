"""How claims are shared between users: which pending tasks one claim takes.

Users with pending tasks that the claiming worker can run share each claim by their *share*
(a weight the admin sets, default 1): the claim's tasks go one at a time to the user holding
the fewest leased (running) tasks per unit of share, counting those the claim has given so far;
a tie goes to the user whose oldest pending task is the oldest. With equal shares this is round
robin, and a user who has just submitted, holding nothing, is served first until they hold as
many as the others. Within one user, tasks go in submission order, so their tags are served in
the order they were submitted. Nothing is stored for this: it is decided from the tasks' own
state, so an idle user earns no credit and a claim takes no lock but the tasks' own.

What a claim reads, however many tasks wait that the worker cannot run (1,000,000 pinned to a
datacenter nobody serves cost it nothing):

- the placements it can run that have pending tasks: a scan of the few rows of ``placements``,
  one probe of ``ix_tasks_pending`` each (a claim that finds nothing ends there);
- the users waiting in each: a loose scan of ``ix_tasks_pending`` (``placement_id, user_id,
  seq`` over pending tasks), one probe per waiting user;
- their running tasks, counted through ``ix_tasks_user_status`` (what workers hold, not what
  waits);
- the tasks taken: ordered range reads of ``ix_tasks_pending``, ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, so that concurrent claims take different tasks and never wait for each other;
  with limits per function, a read of the next tasks and their functions first, so that a
  claim locks only the tasks it takes (what it locks, concurrent claims cannot see).

The state change itself (pending to running) is :meth:`lambdas.service.lifecycle.Lifecycle.lease`'s.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, cast

from sqlalchemy import Integer, bindparam, func, literal_column, select, text
from sqlalchemy.orm import Session

from lambdas.db.models import Chunk, Function, Task, TaskStatus, User

_PENDING = int(TaskStatus.PENDING)


@dataclass(frozen=True)
class Caps:
    """What a claiming worker can start soon (``ClaimIn``): most tasks of each user by key id
    (``per_user``) and of every other user (``others``); most tasks of each function by digest
    (``per_function``) and of every other function (``unmeasured``). ``None``: no such limit."""

    per_user: Mapping[str, int] = field(default_factory=dict)
    others: Optional[int] = None
    per_function: Mapping[str, int] = field(default_factory=dict)
    unmeasured: Optional[int] = None

    def user(self, key_id: str) -> Optional[int]:
        return self.per_user.get(key_id, self.others)

    def function(self, digest: str) -> Optional[int]:
        return self.per_function.get(digest, self.unmeasured)

    @property
    def by_function(self) -> bool:
        return bool(self.per_function) or self.unmeasured is not None


NO_CAPS = Caps()

# A loose index scan (the next user id after the last one, one index probe each): the users
# with pending tasks of one placement, with the seq of their oldest one there. The status is a
# literal so that the partial index ix_tasks_pending applies (see models.PENDING_ONLY), and so
# is the placement (rendered into the statement, an integer of our own): a plan made for "any
# placement" (PostgreSQL's generic plan of a prepared statement) may walk another index past
# every pending task of a busy placement to find none of a quiet one.
_WAITING = text(
    f"""
    WITH RECURSIVE waiting(user_id) AS (
        SELECT min(user_id) FROM tasks WHERE status = {_PENDING} AND placement_id = :placement
        UNION ALL
        SELECT (
            SELECT min(t.user_id) FROM tasks t
            WHERE t.status = {_PENDING} AND t.placement_id = :placement AND t.user_id > waiting.user_id
        )
        FROM waiting WHERE waiting.user_id IS NOT NULL
    )
    SELECT waiting.user_id, (
        SELECT min(t.seq) FROM tasks t
        WHERE t.status = {_PENDING} AND t.placement_id = :placement AND t.user_id = waiting.user_id
    ) AS first
    FROM waiting WHERE waiting.user_id IS NOT NULL
    """
).bindparams(bindparam("placement", type_=Integer, literal_execute=True))


@dataclass
class Waiting:
    """A user with pending tasks a claim could take: their share, the seq of their oldest
    such task, how many tasks they hold (running, and given by this claim), and how many more
    the claiming worker takes of theirs (``None``: no limit of their own)."""

    share: float
    first: int
    held: int = 0
    cap: Optional[int] = None  # most tasks this claim may give them (what the worker can start soon)


_USERS = select(User.id, User.share, User.key_id).where(
    User.id.in_(bindparam("users", expanding=True)), User.revoked.is_(None)
)
_HELD = (
    select(Task.user_id, func.count())
    .where(Task.user_id.in_(bindparam("users", expanding=True)), Task.status == TaskStatus.RUNNING)
    .group_by(Task.user_id)
)


def waiting_users(session: Session, placements: Sequence[int], caps: Caps = NO_CAPS) -> dict[int, Waiting]:
    """The users (not revoked) with pending tasks of ``placements``, by user id, each with the
    limit ``caps`` sets them (see :func:`choose`)."""
    connection = session.connection()
    first: dict[int, int] = {}
    for placement in placements:
        for user_id, seq in connection.execute(_WAITING, {"placement": placement}).all():
            first[user_id] = min(seq, first.get(user_id, seq))
    if not first:
        return {}
    waiting = {
        row.id: Waiting(share=row.share, first=first[row.id], cap=caps.user(row.key_id))
        for row in connection.execute(_USERS, {"users": list(first)})
    }
    waiting = {user_id: w for user_id, w in waiting.items() if w.cap != 0}
    if not waiting:
        return {}
    for user_id, count in connection.execute(_HELD, {"users": list(waiting)}).all():
        waiting[user_id].held = count
    return waiting


def divide(waiting: dict[int, Waiting], n: int) -> dict[int, int]:
    """How many of ``n`` tasks each waiting user gets: one at a time to the user holding the
    fewest per unit of share (ties: the oldest pending task first), none past a user's cap.

    The result, in closed form: the user's ``k``-th task has the key ``((held + k - 1) / share,
    first)``, and the claim gives the ``n`` smallest keys. One user gets ``min(n, cap)``; several
    get every key below a level found by bisection (:func:`_below`, each user's count in O(1)),
    then the few left at that level one at a time, as the rule says: O(users), not O(n)."""
    if n <= 0 or not waiting:
        return {}
    if len(waiting) == 1:
        ((user_id, w),) = waiting.items()
        return {user_id: n if w.cap is None else min(n, w.cap)}
    room = [w.cap for w in waiting.values()]
    if None not in room and sum(cast(list[int], room)) <= n:
        return {user_id: w.cap for user_id, w in waiting.items() if w.cap}
    given = _fill(waiting, n)
    left = n - sum(given.values())
    heap = [
        ((w.held + given[u]) / w.share, w.first, u) for u, w in waiting.items() if w.cap is None or given[u] < w.cap
    ]
    heapq.heapify(heap)
    while left > 0 and heap:
        _, first, user_id = heapq.heappop(heap)
        given[user_id] += 1
        left -= 1
        w = waiting[user_id]
        if w.cap is None or given[user_id] < w.cap:
            heapq.heappush(heap, ((w.held + given[user_id]) / w.share, first, user_id))
    return {user_id: count for user_id, count in given.items() if count}


def _below(w: Waiting, level: float) -> int:
    """How many of the user's tasks have a key below ``level`` (at most their cap): the ``k``
    with ``(held + k - 1) / share < level``, computed as the heap would compare them."""
    k = max(0, math.ceil(level * w.share - w.held))
    if w.cap is not None:
        k = min(k, w.cap)
    while k > 0 and (w.held + k - 1) / w.share >= level:
        k -= 1
    while (w.cap is None or k < w.cap) and (w.held + k) / w.share < level:
        k += 1
    return k


def _fill(waiting: dict[int, Waiting], n: int) -> dict[int, int]:
    """Every task whose key is below the highest level that ``n`` tasks reach (a prefix of the
    order in which they would be given one at a time), by user: at most ``n`` in all."""
    low = min(w.held / w.share for w in waiting.values())  # nothing is below it
    high = max((w.held + n) / w.share for w in waiting.values())  # n tasks or more are below it
    for _ in range(200):
        mid = (low + high) / 2
        if not low < mid < high:
            break
        if sum(_below(w, mid) for w in waiting.values()) <= n:
            low = mid
        else:
            high = mid
    return {user_id: _below(w, low) for user_id, w in waiting.items()}


def _take_statement(locked: bool, peek: bool = False) -> Any:
    """The oldest pending tasks of one user and placement after a seq, as ``(seq, id)`` rows
    (``peek``: ``(seq, id, digest)``, their function's too, never locked); built once
    (``locked``: ``FOR UPDATE SKIP LOCKED``, for PostgreSQL)."""
    query = (
        select(Task.seq, Task.id, *([Function.digest] if peek else []))
        .where(
            Task.status == literal_column(str(_PENDING)),  # a literal: see models.PENDING_ONLY
            Task.placement_id == bindparam("placement", type_=Integer, literal_execute=True),  # as in _WAITING
            Task.user_id == bindparam("user", type_=Integer, literal_execute=True),
            Task.seq > bindparam("after", type_=Integer),
        )
        .order_by(Task.seq)
        .limit(bindparam("n", type_=Integer))
    )
    if peek:
        return query.join(Chunk, Chunk.id == Task.chunk_id).join(Function, Function.id == Chunk.function_id)
    return query.with_for_update(skip_locked=True) if locked else query


_TAKE = {(locked, False): _take_statement(locked) for locked in (False, True)}
_TAKE[(False, True)] = _take_statement(False, peek=True)


def _take(
    session: Session, placements: Sequence[int], user_id: int, n: int, after: int, peek: bool = False
) -> list[Any]:
    """The user's ``n`` oldest pending tasks of ``placements`` after seq ``after`` that no
    other transaction holds, as ``(seq, id)`` rows in seq order, locked on PostgreSQL; to
    ``peek``: locked or not, none locked here, as ``(seq, id, digest)`` rows (their function)."""
    connection = session.connection()
    # SQLite: the transaction holds the write lock
    query = _TAKE[(connection.dialect.name == "postgresql" and not peek, peek)]
    rows: list[Any] = []
    for placement in placements:
        rows += connection.execute(query, {"placement": placement, "user": user_id, "after": after, "n": n}).all()
    return sorted(rows, key=lambda row: row.seq)[:n]


def _take_capped(
    session: Session, placements: Sequence[int], user_id: int, n: int, after: int, caps: Caps, taken: dict[str, int]
) -> tuple[list[Any], bool, bool]:
    """:func:`_take` within ``caps``' limits per function (see :func:`_functions`); whether a
    limit cut the rows, and whether fewer than ``n`` were there to take (none left, or the
    rest are other claims').

    Only the tasks taken are locked. A concurrent claim skips locked tasks: had this one
    locked ``n`` and leased one (a worker taking one long call), the others would have been
    hidden from every other claim until this one commits, and an idle worker woken for them
    would find nothing and wait for its next claim. So the next tasks are read first, unlocked
    with their functions, and only those within the limits are locked; when other claims
    hold some of those, the ones locked instead are checked against the limits again."""
    if not caps.by_function:
        got = _take(session, placements, user_id, n, after)
        return got, False, len(got) < n
    ahead = _take(session, placements, user_id, n, after, peek=True)
    before = dict(taken)
    fit, cut = _functions(ahead, {row.seq: row.digest for row in ahead}, caps, taken)
    got = _take(session, placements, user_id, len(fit), after) if fit else []
    if [row.seq for row in got] == [row.seq for row in fit]:
        return got, cut, len(ahead) < n
    taken.clear()
    taken.update(before)
    kept, cut = _functions(got, _digests(session, [row.seq for row in got]), caps, taken)
    return kept, cut, True


def _digests(session: Session, seqs: Sequence[int]) -> dict[int, str]:
    """The function digest of each task ``seqs``."""
    if not seqs:
        return {}
    return dict(
        session.execute(
            select(Task.seq, Function.digest)
            .join(Chunk, Chunk.id == Task.chunk_id)
            .join(Function, Function.id == Chunk.function_id)
            .where(Task.seq.in_(seqs))
        ).all()
    )


def _functions(
    rows: Sequence[Any], digests: Mapping[int, str], caps: Caps, taken: dict[str, int]
) -> tuple[list[Any], bool]:
    """The leading ``rows`` (one user's, in seq order; ``digests`` by seq) within ``caps``'
    limits per function, counting what the claim ``taken`` of each so far; and whether a limit
    cut them (the user's next task is of a function the claim may take no more of: their later
    tasks wait, so that a user's tasks still go in submission order)."""
    if not rows or not caps.by_function:
        return list(rows), False
    kept: list[Any] = []
    for row in rows:
        digest = digests[row.seq]
        cap = caps.function(digest)
        if cap is not None and taken.get(digest, 0) >= cap:
            return kept, True
        taken[digest] = taken.get(digest, 0) + 1
        kept.append(row)
    return kept, False


def choose(session: Session, placements: Sequence[int], n: int, caps: Caps = NO_CAPS) -> list[Any]:
    """Up to ``n`` pending tasks of ``placements``, shared between the waiting users, as
    ``(seq, id)`` rows in seq order (locked on PostgreSQL), within ``caps``' limits per user and
    per function."""
    waiting = waiting_users(session, placements, caps)
    after = dict.fromkeys(waiting, 0)
    taken: dict[str, int] = {}  # tasks of each function taken so far
    rows: list[Any] = []
    while n > 0 and waiting:
        for user_id, count in divide(waiting, n).items():
            kept, cut, short = _take_capped(session, placements, user_id, count, after[user_id], caps, taken)
            rows += kept
            n -= len(kept)
            w = waiting[user_id]
            if cut or short or (w.cap is not None and w.cap <= len(kept)):
                del waiting[user_id]  # none left (or the rest is another claim's), or all they may have
            else:
                w.held += len(kept)
                after[user_id] = kept[-1].seq
                w.cap = None if w.cap is None else w.cap - len(kept)
    return sorted(rows, key=lambda row: row.seq)
