"""Waiting on the API: long-polling claims and pulls, and the wake-ups that end them.

A claim or a pull may ask the API to hold it (``wait``) until there is something to answer:
tasks to hand out, a tag's finished tasks. The request reads the index, and when it found
nothing, it waits, holding no database connection or transaction and no thread, on a
*channel*, then reads again:

- ``work``: tasks became pending (submitted, handed back, requeued after a lost lease or a
  failed try with retries left);
- ``tag:<id>``: tasks of that tag finished, were cancelled or deleted.

Whoever changes the index that way calls :func:`touch` on its session; once the transaction is
committed, :class:`Wakeups` bumps the channel's version and wakes the requests waiting on it in
this process (their event loop is woken thread-safely: services run in the threadpool). A
waiter remembers the version *before* it reads the index, so a change committed between its
read and its wait still wakes it.

**Only as many as can use it.** A change of ``work`` says how many tasks became pending, and
wakes at most that many waiting claims, those waiting longest first: a thousand idle workers
cost one claim, not a thousand, when one task is submitted. A wake-up is never lost on a waiter
that cannot use it: a woken claim that leased nothing while tasks are still pending (tasks it
cannot run: another datacenter, more cores; or any pending task at all, since the probe is one
cheap query) hands its wake-up on to the next waiter, which does the same; a wake-up goes only
to requests that were waiting when it was sent, so it visits each at most once and the chain
ends (at worst, with a backlog no waiting worker can run, a wake-up another claim used up costs
one read per waiter, as every wake-up did before). A woken request that hangs up or fails hands
its wake-up on as well. Tag channels wake all their waiters (a tag has few pulls).

**Several API processes on PostgreSQL.** Before the commit, :meth:`Wakeups.announce` sends
``NOTIFY hmq_wake`` with each touched channel and its count (PostgreSQL delivers it on commit,
and only then), and each process that has waiting requests keeps one connection that
``LISTEN``\\ s (:class:`Listener`, started when the first request waits) and wakes as many of its
own waiters (each process hands wake-ups on among its own; a process ignores its own notices,
having woken its waiters already). LISTEN/NOTIFY rather than
short polling: a wake-up arrives within a millisecond of the commit, and idle waiting costs
nothing per waiter, where polling would cost one query per waiting request per interval (200
idle workers polling every 0.25 s would be 800 queries a second). As a safety net (a
notification lost while the listening connection was being re-established), a waiter reads
the index again at least every ``Settings.wait_recheck_seconds``.

**AWS Lambda** (``serverless``): an invocation serves one request and no other process can wake
it (a LISTEN connection would have to stay open while waiting, which is what waiting must not
do), so a waiting request reads the index again every quarter of its wait; the wait is capped by
``Settings.serverless_max_wait_seconds`` (1 s), since a waiting invocation is billed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

log = logging.getLogger("hmq.api")

WORK = "work"
"""The channel of pending tasks."""

PG_CHANNEL = "hmq_wake"
"""The PostgreSQL notification channel; the payload is ``CHANNEL COUNT ORIGIN`` (``COUNT``
``*``: every waiter; a payload of the channel alone, from older processes, wakes every waiter)."""

_PENDING = "hmq_wake"  # Session.info key: channels to wake once the transaction is committed
T = TypeVar("T")

Changes = Mapping[str, Optional[int]]
"""Channels touched, each with how many waiters could use the change (``None``: all)."""


def tag_channel(tag_id: int) -> str:
    """The channel of one tag's finished tasks."""
    return f"tag:{tag_id}"


def touch(session: Session, *channels: str, count: Optional[int] = None) -> None:
    """Wake the requests waiting on ``channels`` once ``session``'s transaction is committed
    (here by :class:`Wakeups`, in other processes by PostgreSQL's NOTIFY): ``count`` of them
    (the tasks that became pending; touches in one transaction add up), or all (``None``)."""
    pending: dict[str, Optional[int]] = session.info.setdefault(_PENDING, {})
    for channel in channels:
        before = pending.get(channel, 0)
        pending[channel] = None if before is None or count is None else before + count


def committed(session: Session) -> dict[str, Optional[int]]:
    """The channels :func:`touch`\\ ed in ``session`` and their counts (taken: asked once, after
    its commit)."""
    return session.info.pop(_PENDING, {})


def _payload(channel: str, count: Optional[int], origin: str) -> str:
    return f"{channel} {'*' if count is None else count} {origin}"


def _parse(payload: str) -> tuple[str, Optional[int], str]:
    """A notice's channel, count and origin (older processes send the channel alone)."""
    parts = payload.split(" ")
    if len(parts) != 3 or not (parts[1] == "*" or parts[1].isdigit()):
        return payload, None, ""
    return parts[0], None if parts[1] == "*" else int(parts[1]), parts[2]


@dataclass(eq=False)
class _Waiter:
    """One waiting request: its loop and event; ``seq`` orders the waiters (oldest first);
    ``token``, once woken by a counted wake-up, the newest ``seq`` that wake-up may go to."""

    loop: asyncio.AbstractEventLoop
    event: asyncio.Event
    seq: int
    woken: bool = False
    token: Optional[int] = None


class Wakeups:
    """The channels of one API process: versions, and the requests waiting on them.

    Args:
        recheck: longest a waiter goes without reading the index again.
        listen: on PostgreSQL (not serverless), the engine to LISTEN on for other processes'
            changes; ``None``: this process's own changes only.
        before_wait: called before a request starts waiting (on Lambda: close the idle
            connection, so none stays open while the invocation waits).
    """

    def __init__(
        self, recheck: float, listen: Optional[Engine] = None, before_wait: Optional[Callable[[], None]] = None
    ) -> None:
        self.recheck = recheck
        self.origin = uuid.uuid4().hex[:12]  # names this process's notices, which it skips
        self._before_wait = before_wait
        self._lock = threading.Lock()
        self._versions: dict[str, int] = defaultdict(int)
        self._waiters: dict[str, dict[_Waiter, None]] = {}  # per channel, oldest first
        self._seq = 0
        self._engine = listen
        self._listener: Optional[Listener] = None

    def version(self, channel: str) -> int:
        with self._lock:
            return self._versions[channel]

    def announce(self, session: Session) -> None:
        """Before ``session`` commits (PostgreSQL): NOTIFY the other processes of what it touched."""
        for channel, count in session.info.get(_PENDING, {}).items():
            session.execute(select(func.pg_notify(PG_CHANNEL, _payload(channel, count, self.origin))))

    def notify(self, changes: Changes) -> None:
        """Bump the ``changes``' channels and wake as many of their waiters as each says,
        oldest first (from any thread)."""
        with self._lock:
            woken: list[_Waiter] = []
            for channel, count in changes.items():
                self._versions[channel] += 1
                woken += self._take(channel, count, self._seq)
        self._wake(woken)

    def notify_all(self) -> None:
        """Wake every waiter (they read the index again): after a gap in the notifications."""
        with self._lock:
            channels = list(self._waiters)
        self.notify(dict.fromkeys(channels))

    def pass_on(self, channel: str, token: int) -> None:
        """Hand a wake-up its waiter could not use to the next one waiting since before it was sent."""
        with self._lock:
            woken = self._take(channel, 1, token)
        self._wake(woken)

    def _take(self, channel: str, count: Optional[int], token: int) -> list[_Waiter]:
        """Under the lock: remove up to ``count`` (``None``: all) of ``channel``'s oldest
        waiters, those waiting since before ``token``, marked woken."""
        queue = self._waiters.get(channel, {})
        taken = list(itertools.islice(itertools.takewhile(lambda w: w.seq <= token, queue), count))
        for waiter in taken:
            del queue[waiter]
            waiter.woken, waiter.token = True, None if count is None else token
        return taken

    @staticmethod
    def _wake(waiters: list[_Waiter]) -> None:
        for waiter in waiters:
            try:
                waiter.loop.call_soon_threadsafe(waiter.event.set)
            except RuntimeError:  # that request's loop is closed: nobody waits there any more
                pass

    async def wait(self, channel: str, since: int, timeout: float) -> tuple[bool, Optional[int]]:
        """Wait until ``channel`` moves past version ``since``, at most ``timeout`` seconds;
        whether it did, and the token of the counted wake-up that woke this waiter (which it
        must :meth:`pass_on` unless it used it)."""
        self._start_listener()
        with self._lock:
            if self._versions[channel] != since:
                return True, None
            self._seq += 1
            waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event(), self._seq)
            self._waiters.setdefault(channel, {})[waiter] = None
        try:
            await asyncio.wait_for(waiter.event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        except BaseException:  # cancelled: a wake-up this waiter took goes to the next one
            woken, token = self._leave(channel, waiter)
            if token is not None:
                self.pass_on(channel, token)
            raise
        return self._leave(channel, waiter)

    def _leave(self, channel: str, waiter: _Waiter) -> tuple[bool, Optional[int]]:
        with self._lock:
            queue = self._waiters.get(channel)
            if queue is not None:
                queue.pop(waiter, None)
                if not queue:
                    del self._waiters[channel]
            return waiter.woken, waiter.token

    async def until(
        self,
        channel: str,
        wait: float,
        attempt: Callable[[], T],
        found: Callable[[T], bool],
        gone: Optional[Callable[[], Awaitable[bool]]] = None,
        more: Optional[Callable[[], bool]] = None,
        after: Optional[tuple[T, int]] = None,
    ) -> T:
        """Run ``attempt`` (in the threadpool: it opens its own transaction) until ``found``
        says its answer is worth giving, again after each wake-up of ``channel`` (or every
        ``recheck`` seconds), for up to ``wait`` seconds; return its last answer. Stops early
        when ``gone`` says the caller hung up (a claim must not lease tasks nobody receives).
        A counted wake-up whose attempt found nothing goes on to the next waiter when ``more``
        (in the threadpool) says something is still there for others (no ``more``: always).
        ``after``: a first answer the caller read itself, with the version of ``channel``
        before it read it (a pull reads its first page in the transaction that authenticates it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        token: Optional[int] = None
        while True:
            if after is None:
                since = self.version(channel)
                answer = await self._attempt(channel, token, attempt, found, more)
            else:
                (answer, since), after = after, None
            left = deadline - loop.time()
            if left <= 0 or found(answer):
                return answer
            if self._before_wait is not None:
                self._before_wait()
            woken, token = await self.wait(channel, since, min(left, self.recheck))
            if not woken and deadline - loop.time() <= 0:
                return answer  # the wait is over and nothing changed: no need to read again
            if gone is not None and await gone():
                if token is not None:
                    self.pass_on(channel, token)
                return answer

    async def _attempt(
        self,
        channel: str,
        token: Optional[int],
        attempt: Callable[[], T],
        found: Callable[[T], bool],
        more: Optional[Callable[[], bool]],
    ) -> T:
        """One ``attempt``; after a counted wake-up (``token``), hand it on unless it was used."""
        try:
            answer = await anyio.to_thread.run_sync(attempt)
        except BaseException:
            if token is not None:
                self.pass_on(channel, token)
            raise
        if token is not None and not found(answer) and (more is None or await anyio.to_thread.run_sync(more)):
            self.pass_on(channel, token)
        return answer

    def _start_listener(self) -> None:
        if self._engine is None or self._listener is not None:
            return
        with self._lock:
            if self._listener is None:
                self._listener = Listener(self._engine, self)
                self._listener.start()

    def close(self) -> None:
        """Stop listening (the app is going away)."""
        if self._listener is not None:
            self._listener.stop()


class Listener(threading.Thread):
    """One PostgreSQL connection per process that LISTENs for other processes' changes and
    wakes this process's waiters; reconnects (waking every waiter, who read again) after a loss."""

    def __init__(self, engine: Engine, wakeups: Wakeups) -> None:
        super().__init__(name="hmq-listen", daemon=True)
        self.engine = engine
        self.wakeups = wakeups
        self._stop = threading.Event()
        self._failures = 0  # in a row: the first is logged, retries back off

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except Exception as exc:  # the database is down or restarted: listen again
                if self._failures == 0:
                    log.warning("listening for wake-ups failed, waiting requests poll meanwhile: %s", exc)
                self._failures += 1
                self._stop.wait(min(30.0, 0.5 * 2**self._failures))
            self.wakeups.notify_all()

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        conn: Any = raw.driver_connection
        raw.detach()  # this connection is the listener's own, not the pool's
        try:
            if not hasattr(conn, "notifies"):
                log.warning("the database driver cannot LISTEN; waiting requests poll the index")
                self._stop.set()
                return
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {PG_CHANNEL}")
            if self._failures:
                log.warning("listening for wake-ups again")
            self._failures = 0
            self.wakeups.notify_all()  # what changed before we listened
            while not self._stop.is_set():
                for note in conn.notifies(timeout=1.0):  # yields each as it arrives
                    channel, count, origin = _parse(note.payload)
                    if origin != self.wakeups.origin:  # this process woke its own already
                        self.wakeups.notify({channel: count})
        finally:
            conn.close()
