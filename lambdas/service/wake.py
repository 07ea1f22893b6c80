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

**Several API processes on PostgreSQL.** :func:`touch` also sends ``NOTIFY hmq_wake`` with the
channel inside the same transaction (PostgreSQL delivers it on commit, and only then), and each
process that has waiting requests keeps one connection that ``LISTEN``\\ s (:class:`Listener`,
started when the first request waits) and wakes its own waiters. LISTEN/NOTIFY rather than
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
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Optional, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

log = logging.getLogger("hmq.api")

WORK = "work"
"""The channel of pending tasks."""

PG_CHANNEL = "hmq_wake"
"""The PostgreSQL notification channel; the payload is the hmq channel."""

_PENDING = "hmq_wake"  # Session.info key: channels to wake once the transaction is committed
T = TypeVar("T")


def tag_channel(tag_id: int) -> str:
    """The channel of one tag's finished tasks."""
    return f"tag:{tag_id}"


def touch(session: Session, *channels: str) -> None:
    """Wake the requests waiting on ``channels`` once ``session``'s transaction is committed
    (here by :class:`Wakeups`, in other processes by PostgreSQL's NOTIFY)."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    fresh = [c for c in channels if c not in pending]
    if not fresh:
        return
    pending.update(fresh)
    if session.get_bind().dialect.name == "postgresql":
        for channel in fresh:
            session.execute(select(func.pg_notify(PG_CHANNEL, channel)))


def committed(session: Session) -> set[str]:
    """The channels :func:`touch`\\ ed in ``session`` (taken: asked once, after its commit)."""
    return session.info.pop(_PENDING, set())


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
        self._before_wait = before_wait
        self._lock = threading.Lock()
        self._versions: dict[str, int] = defaultdict(int)
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._engine = listen
        self._listener: Optional[Listener] = None

    def version(self, channel: str) -> int:
        with self._lock:
            return self._versions[channel]

    def notify(self, channels: Iterable[str]) -> None:
        """Bump ``channels`` and wake their waiters (from any thread)."""
        woken: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        with self._lock:
            for channel in channels:
                self._versions[channel] += 1
                woken += self._waiters.pop(channel, ())
        for loop, event in woken:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that request's loop is closed: nobody waits there any more
                pass

    def notify_all(self) -> None:
        """Wake every waiter (they read the index again): after a gap in the notifications."""
        with self._lock:
            channels = list(self._waiters)
        self.notify(channels)

    async def wait(self, channel: str, since: int, timeout: float) -> bool:
        """Wait until ``channel`` moves past version ``since``, at most ``timeout`` seconds;
        whether it did."""
        self._start_listener()
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._versions[channel] != since:
                return True
            self._waiters[channel].add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                self._waiters[channel].discard(waiter)

    async def until(
        self,
        channel: str,
        wait: float,
        attempt: Callable[[], T],
        found: Callable[[T], bool],
        gone: Optional[Callable[[], Awaitable[bool]]] = None,
    ) -> T:
        """Run ``attempt`` (in the threadpool: it opens its own transaction) until ``found``
        says its answer is worth giving, again after each wake-up of ``channel`` (or every
        ``recheck`` seconds), for up to ``wait`` seconds; return its last answer. Stops early
        when ``gone`` says the caller hung up (a claim must not lease tasks nobody receives)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            since = self.version(channel)
            answer = await anyio.to_thread.run_sync(attempt)
            left = deadline - loop.time()
            if left <= 0 or found(answer):
                return answer
            if self._before_wait is not None:
                self._before_wait()
            woken = await self.wait(channel, since, min(left, self.recheck))
            if not woken and deadline - loop.time() <= 0:
                return answer  # the wait is over and nothing changed: no need to read again
            if gone is not None and await gone():
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
                    self.wakeups.notify([note.payload])
        finally:
            conn.close()
