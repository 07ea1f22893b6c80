"""Waiting on the API: claims and pulls that the API holds until there is something to answer.

Time bounds here are generous (seconds where the answer takes milliseconds), and each test
could fail: a claim that only polled would answer after its whole wait, not at the submit.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

import hmq
from hmq import wire
from hmq._http import Interrupt
from lambdas.db import make_engine
from lambdas.db.models import Upload, Worker
from tests.helpers import ManualClock, ManualWorker, Server, signed, start_server, submit, wait_for
from worker.session import WorkerSession


class Claim(threading.Thread):
    """A claim waiting in a thread; ``out`` and ``seconds`` once it answered."""

    def __init__(self, session: WorkerSession, wait: float, available: int = 1, n: int = 10, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.session, self.wait, self.available, self.n, self.kwargs = session, wait, available, n, kwargs
        self.out: wire.ClaimOut | None = None
        self.error: BaseException | None = None
        self.answered = 0.0

    def run(self) -> None:
        try:
            self.out = self.session.claim(self.n, self.available, wait=self.wait, **self.kwargs)
        except BaseException as exc:  # shown by the test
            self.error = exc
        self.answered = time.monotonic()

    def result(self, timeout: float = 60) -> wire.ClaimOut:
        self.join(timeout)
        assert not self.is_alive(), "the claim did not answer"
        assert self.error is None, self.error
        assert self.out is not None
        return self.out


def test_a_waiting_claim_answers_as_soon_as_tasks_are_submitted(server: Server, tmp_path: Path) -> None:
    user, w = server.user(), ManualWorker(server, tmp_path)
    claim = Claim(w.session, wait=20)
    claim.start()
    time.sleep(0.5)  # it is waiting now (if not, it claims the task at once: the test still holds)
    tag = submit(user, lambda x: x, [(1,)])
    submitted = time.monotonic()
    out = claim.result()
    assert [len(g.tasks) for g in out.groups] == [1] and out.wait == 20
    assert claim.answered - submitted < 10  # not after its 20 s wait
    assert user.get_tag_status(tag.name)["running"] == 1


def test_a_waiting_claim_times_out_with_an_empty_answer(server: Server, tmp_path: Path) -> None:
    w = ManualWorker(server, tmp_path)
    started = time.monotonic()
    out = w.session.claim(10, 1, wait=1.0)
    assert out.groups == [] and out.wait == 1.0
    assert 0.9 <= time.monotonic() - started < 15


def test_the_api_cuts_the_wait_to_its_limit(make_server: Any, tmp_path: Path) -> None:
    server = make_server(max_wait_seconds=0.5)
    w = ManualWorker(server, tmp_path)
    started = time.monotonic()
    out = w.session.claim(10, 1, wait=300)
    assert out.groups == [] and out.wait == 0.5 and time.monotonic() - started < 15
    none = make_server(max_wait_seconds=0)
    assert ManualWorker(none, tmp_path / "none").session.claim(10, 1, wait=5).wait == 0


def test_a_claim_without_wait_answers_at_once(server: Server, tmp_path: Path) -> None:
    """Workers that predate waiting send no ``wait`` (nor ``held``): answered as before."""
    w = ManualWorker(server, tmp_path)
    out = w.api.transport.call(
        "POST", f"/v1/workers/{w.session.worker_id}/claim", {"max_tasks": 5, "available": 1}, model=wire.ClaimOut
    )
    assert out.groups == [] and out.wait == 0 and out.held_until is None and out.drop == []


def test_many_waiting_claims_do_not_stall_other_requests(server: Server, tmp_path: Path) -> None:
    user, w = server.user(), ManualWorker(server, tmp_path)
    sessions = []
    for _ in range(50):
        session = WorkerSession.connect(server.url, w.creds.identity)
        session.register("default", 1)
        sessions.append(session)
    claims = [Claim(s, wait=8) for s in sessions]
    for c in claims:
        c.start()
    time.sleep(1.0)
    started = time.monotonic()
    tag = submit(user, lambda x: x, [(1,)])
    status = user.get_tag_status(tag.name)
    assert time.monotonic() - started < 10  # answered while 50 claims wait
    assert status["total"] == 1
    outs = [c.result() for c in claims]
    assert sum(len(g.tasks) for out in outs for g in out.groups) == 1  # leased once
    for s in sessions:
        s.close()


def test_a_claim_names_the_held_tasks_and_extends_their_leases(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=30)
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    w = ManualWorker(server, tmp_path)
    kept, cancelled = (str(t.id) for t in w.claim(2)[0].tasks)
    user.cancel_tasks([cancelled])
    for _ in range(4):  # 40 s without a heartbeat: only the claims extend the lease
        clock.advance(10)
        out = w.session.claim(5, 1, held=[kept, cancelled])
        assert out.held_until == pytest.approx(clock() + 30) and [str(t) for t in out.drop] == [cancelled]
    assert user.get_tasks_status([kept]) == {kept: "running"}
    assert user.get_tag_status(tag.name)["cancelled"] == 1


def test_a_waiting_claim_on_one_api_process_wakes_for_a_submit_to_another(pg_server: Server, tmp_path: Path) -> None:
    """Two API processes on one PostgreSQL database: LISTEN/NOTIFY carries the wake-up."""
    other = start_server(pg_server.settings.replace(wait_recheck_seconds=60), pg_server.admin_key)
    try:
        user, w = pg_server.user(), ManualWorker(other, tmp_path)
        claim = Claim(w.session, wait=20)
        claim.start()
        time.sleep(1.0)  # the listener of the other process is up by now
        submit(user, lambda x: x, [(1,)])
        submitted = time.monotonic()
        out = claim.result()
        assert sum(len(g.tasks) for g in out.groups) == 1
        assert claim.answered - submitted < 10  # neither its wait (20 s) nor a recheck (60 s)
    finally:
        other.stop()


def _waiting(server: Server, tmp_path: Path, n: int, **register: Any) -> list[WorkerSession]:
    """``n`` more registered workers of one identity (their sessions)."""
    creds = ManualWorker(server, tmp_path).creds
    sessions = []
    for _ in range(n):
        session = WorkerSession.connect(server.url, creds.identity)
        session.register(register.get("datacenter", "default"), register.get("cores", 1))
        sessions.append(session)
    return sessions


def _seen_at(server: Server, sessions: list[WorkerSession], at: float) -> int:
    """How many of ``sessions``' workers the API saw (a claim read the index for them) at ``at``."""
    mine = {s.worker_id for s in sessions}
    with server.admin() as admin:
        return sum(1 for w in admin.workers() if w.id in mine and w.last_seen >= at)


def _one_wakes_one(server: Server, other: Server, clock: ManualClock, tmp_path: Path) -> None:
    """Six claims wait on ``other`` (whose clock is ``clock``); tasks are submitted to ``server``."""
    user, sessions = server.user(), _waiting(other, tmp_path, 6)
    claims = [Claim(s, wait=10, n=1) for s in sessions]
    for c in claims:
        c.start()
    time.sleep(1.5)  # all wait now
    later = clock.advance(1)
    submit(user, lambda x: x, [(1,)])
    submitted = time.monotonic()
    wait_for(lambda: any(not c.is_alive() for c in claims), timeout=30, what="one claim to answer")
    assert time.monotonic() - submitted < 10
    time.sleep(1.0)  # time for any other claim to read the index again
    answered = [c for c in claims if not c.is_alive()]
    assert len(answered) == 1 and sum(len(g.tasks) for g in answered[0].result().groups) == 1
    assert _seen_at(other, sessions, later) == 1  # the others did not read the index again
    submit(user, lambda x: x, [(2,), (3,)])  # two more: two more claims answer, one task each
    wait_for(lambda: sum(not c.is_alive() for c in claims) == 3, timeout=30, what="two more claims to answer")
    time.sleep(1.0)
    assert sum(not c.is_alive() for c in claims) == 3 and _seen_at(other, sessions, later) == 3
    assert sum(len(g.tasks) for c in claims for g in c.result().groups) == 3  # the others time out
    for c in claims:
        c.session.close()


def test_one_submitted_task_wakes_one_of_many_waiting_claims(make_server: Any, tmp_path: Path) -> None:
    """The others go on waiting without reading the index again (each claim that reads it marks
    its worker as seen): not a thousand claim queries for one task."""
    clock = ManualClock()
    server = make_server(clock=clock, wait_recheck_seconds=60)
    _one_wakes_one(server, server, clock, tmp_path)


def test_a_submit_to_one_api_process_wakes_one_waiting_claim_of_another(pg_server: Server, tmp_path: Path) -> None:
    """The NOTIFY carries the count; the process that sent it does not wake its own twice."""
    clock = ManualClock()
    other = start_server(pg_server.settings.replace(wait_recheck_seconds=60), pg_server.admin_key, clock)
    try:
        _one_wakes_one(pg_server, other, clock, tmp_path)
        _one_wakes_one(other, other, clock, tmp_path / "same")  # its own notices come back: ignored
    finally:
        other.stop()


def test_a_woken_claim_that_cannot_use_the_task_hands_the_wake_up_on(make_server: Any, tmp_path: Path) -> None:
    """The claim waiting longest is woken first; its worker has one core, the task needs two:
    it passes the wake-up on, and the two-core worker's claim gets the task at once, not at
    the next recheck (60 s) nor at the end of its wait (20 s)."""
    server = make_server(wait_recheck_seconds=60)
    user = server.user()
    (small,) = _waiting(server, tmp_path / "small", 1, cores=1)
    (big,) = _waiting(server, tmp_path / "big", 1, cores=2)
    first = Claim(small, wait=8)
    first.start()
    time.sleep(0.5)
    second = Claim(big, wait=20, available=2)
    second.start()
    time.sleep(1.0)  # both wait, the one-core claim longest
    submit(user, lambda x: x, [(1,)], ncores=2)
    submitted = time.monotonic()
    out = second.result()
    assert sum(len(g.tasks) for g in out.groups) == 1
    assert second.answered - submitted < 10
    assert first.is_alive()  # still waiting: the task was not for it
    assert first.result().groups == []
    for s in (small, big):
        s.close()


def test_claims_woken_together_split_the_tasks_at_once(make_server: Any, tmp_path: Path) -> None:
    """Two idle one-core workers wait; four calls of a function neither has measured come: one
    each, at once. The claim asking for up to 20 tasks (but one of an unmeasured function)
    leaves the other three to the claim woken with it (on PostgreSQL it once locked all four
    while it took one: the other found nothing and answered only at the end of its wait)."""
    server = make_server(wait_recheck_seconds=60)
    user = server.user()
    claims = [Claim(s, wait=20, n=n, unmeasured=1) for s, n in zip(_waiting(server, tmp_path, 2), (20, 1), strict=True)]
    for c in claims:
        c.start()
    time.sleep(1.0)  # both wait
    submit(user, lambda x: x, [(i,) for i in range(4)])
    submitted = time.monotonic()
    assert [sum(len(g.tasks) for g in c.result().groups) for c in claims] == [1, 1]
    assert max(c.answered for c in claims) - submitted < 10  # not after a 20 s wait
    for c in claims:
        c.session.close()


def test_a_woken_claim_whose_worker_hung_up_hands_the_wake_up_on(make_server: Any, tmp_path: Path) -> None:
    """The claim waiting longest has been given up by its client (the API learns it only once
    woken); the task goes to the next waiting claim at once, not at its recheck (60 s)."""
    server = make_server(wait_recheck_seconds=60)
    user = server.user()
    gone, (waiting,) = ManualWorker(server, tmp_path), _waiting(server, tmp_path / "waiting", 1)
    path = f"/v1/workers/{gone.session.worker_id}/claim"
    body = json.dumps({"max_tasks": 1, "available": 1, "wait": 20}).encode()
    headers = signed(gone.creds.identity, "POST", path, body)
    with httpx.Client() as client, pytest.raises(httpx.ReadTimeout):
        client.post(server.url + path, content=body, headers=headers, timeout=1.0)
    claim = Claim(waiting, wait=20)
    claim.start()
    time.sleep(1.0)  # the given-up claim has waited longest
    submit(user, lambda x: x, [(1,)])
    submitted = time.monotonic()
    assert sum(len(g.tasks) for g in claim.result().groups) == 1
    assert claim.answered - submitted < 10
    waiting.close()


def _claim_over_socket(server: Server, w: ManualWorker, wait: float, result_slots: int = 0) -> socket.socket:
    """A waiting claim of ``w``'s worker for one task (and ``result_slots`` result upload URLs
    with it), signed, sent over a connection of its own."""
    path = f"/v1/workers/{w.session.worker_id}/claim"
    body = json.dumps({"max_tasks": 1, "available": 1, "wait": wait, "result_slots": result_slots}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    headers = {
        "host": f"{host}:{port}",
        **signed(w.creds.identity, "POST", path, body),
        "content-length": str(len(body)),
    }
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def _hang_up(sock: socket.socket) -> bytes:
    """Half-close, as a worker told to stop does, and read until the API closes the connection
    (uvicorn marks the request disconnected before it closes the socket): what it answered."""
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return answer


@contextlib.contextmanager
def _holding_up(server: Server, worker_id: uuid.UUID) -> Iterator[Callable[[], None]]:
    """Hold up the claims of ``worker_id`` in the index: on PostgreSQL, lock its worker row
    (a claim's first statement updates it); on SQLite, take the write lock (each write waits).
    Yields a function that returns once a claim waits for it (PostgreSQL: seen waiting on the
    lock; SQLite, where no one can see that: after a second)."""
    engine = make_engine(server.settings.database_url)

    def lock_waits() -> bool:
        with engine.connect() as conn:
            return bool(conn.scalar(text(_LOCK_WAITS)))

    def until_waiting() -> None:
        if engine.dialect.name == "postgresql":
            wait_for(lock_waits, timeout=30, what="the claim to wait for the locked worker row")
        else:
            time.sleep(1.0)

    try:
        with engine.begin() as conn:
            conn.execute(select(Worker.id).where(Worker.id == worker_id).with_for_update())
            yield until_waiting
    finally:
        engine.dispose()


def _uploads_of(server: Server, worker_id: uuid.UUID) -> int:
    """How many unregistered upload URLs the index counts for the worker."""
    engine = make_engine(server.settings.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(Upload).where(Upload.worker_id == worker_id)) or 0)
    finally:
        engine.dispose()


_LOCK_WAITS = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"


def _handed_back(server: Server, user: hmq.API, tag: Any, gone: ManualWorker, since: float, tmp_path: Path) -> None:
    """Once the claim of ``gone``'s worker (which hung up) leased the task (its worker seen
    after ``since``), the task is pending again within 10 s, its lease (120 s) still running,
    and another worker's claim gets it; the result upload URLs issued with it (the worker never
    got them) no longer count against the worker's quota."""
    assert server.settings.lease_seconds == 120
    wait_for(lambda: _seen_at(server, [gone.session], since) == 1, timeout=30, what="the claim to lease the task")
    wait_for(lambda: user.get_tag_status(tag.name)["pending"] == 1, timeout=10, what="the task to be handed back")
    assert _uploads_of(server, gone.session.worker_id) == 0
    (other,) = _waiting(server, tmp_path / "other", 1)
    assert sum(len(g.tasks) for g in other.claim(1, 1, wait=5).groups) == 1
    assert user.get_tag_status(tag.name)["running"] == 1
    other.close()


def test_a_task_leased_for_a_worker_that_hung_up_meanwhile_is_handed_back_at_once(
    server: Server, tmp_path: Path
) -> None:
    """A waiting claim whose worker hangs up while the claim is leasing (here: while it waits
    for the index) leases the pending task all the same; the API, finding its worker gone,
    hands the task back at once, not when its lease runs out (that worker never heard of it)."""
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    gone = ManualWorker(server, tmp_path / "gone")
    sent = time.time()
    with _holding_up(server, gone.session.worker_id) as until_waiting:
        sock = _claim_over_socket(server, gone, wait=20, result_slots=4)
        until_waiting()
        assert _hang_up(sock) == b""  # no answer: the API has seen the hang-up
    _handed_back(server, user, tag, gone, sent, tmp_path)


def test_a_task_a_woken_claim_leased_for_a_worker_that_hung_up_is_handed_back_at_once(
    pg_server: Server, tmp_path: Path
) -> None:
    """The claim waits; the submit wakes it, and its worker hangs up while the woken claim is
    leasing (it waits for its worker's row): the task is pending again at once. (PostgreSQL:
    on SQLite the submit would wait for the held write lock too.)"""
    user = pg_server.user()
    gone = ManualWorker(pg_server, tmp_path / "gone")
    sent = time.time()
    sock = _claim_over_socket(pg_server, gone, wait=20, result_slots=4)
    wait_for(lambda: _seen_at(pg_server, [gone.session], sent) == 1, timeout=30, what="the claim's first read")
    woken = time.time()
    with _holding_up(pg_server, gone.session.worker_id) as until_waiting:
        tag = submit(user, lambda x: x, [(1,)])
        until_waiting()  # woken, it waits for the worker row
        assert _hang_up(sock) == b""
    _handed_back(pg_server, user, tag, gone, woken, tmp_path)


# --- pulls -----------------------------------------------------------------------------------
@pytest.fixture
def completing(server: Server, tmp_path: Path) -> Iterator[Callable[[float], threading.Thread]]:
    """A worker that, after ``delay`` seconds, claims every pending task and completes it with x * 10."""
    w = ManualWorker(server, tmp_path)
    threads: list[threading.Thread] = []

    def start(delay: float) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)
            for group in w.claim():
                w.complete(group, {str(t.id): 10 for t in group.tasks})
            thread.done = time.monotonic()  # type: ignore[attr-defined]

        thread = threading.Thread(target=run, daemon=True)
        threads.append(thread)
        thread.start()
        return thread

    yield start
    for t in threads:
        t.join(30)


def test_a_blocking_pull_returns_as_soon_as_the_results_are_reported(
    server: Server, completing: Callable[[float], threading.Thread]
) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    worker = completing(3.6)  # a pull that slept 0.5, 1, 2, 4 s would see it only at 7.5 s
    assert tag.pull(blocking=True, timeout=60) == 0
    returned = time.monotonic()
    worker.join(10)
    assert list(tag.results) == [10]
    assert returned - worker.done < 2.5  # type: ignore[attr-defined]


def test_a_blocking_pull_that_runs_out_of_time_says_what_is_left(server: Server) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    started = time.monotonic()
    with pytest.raises(hmq.PullTimeout, match=r"2 task\(s\) still open after waiting 1 s \(in the queue: 2 pending\)"):
        tag.pull(blocking=True, timeout=1)
    assert time.monotonic() - started < 15
    with pytest.raises(TimeoutError):  # the builtin, too
        tag.pull(blocking=True, timeout=0)
    assert len(tag) == 2 and tag.n_results == 0  # nothing lost: the tag goes on
    assert user.get_tag_status(tag.name)["pending"] == 2


def test_a_waiting_pull_answers_when_tasks_are_cancelled(server: Server) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    page = user.done_page(tag.name)
    timer = threading.Timer(1.0, lambda: user.cancel_tasks(tag=tag.name))
    timer.start()
    started = time.monotonic()
    page = user.done_page(tag.name, page.cursor, wait=20)
    timer.join()
    assert [c.status for c in page.closed] == ["cancelled"] and page.open == 0 and page.wait == 20
    assert time.monotonic() - started < 10


def test_a_waiting_pull_for_another_users_tag_is_an_unknown_tag(server: Server) -> None:
    ada, bob = server.user("ada"), server.user("bob")
    tag = submit(ada, lambda x: x, [(1,)])
    with pytest.raises(hmq.NotFound, match="unknown tag"):
        bob.done_page(tag.name, wait=5)
    assert ada.get_tag_status(tag.name)["pending"] == 1


def test_a_waiting_claim_ends_as_soon_as_its_worker_hangs_up(server: Server, tmp_path: Path) -> None:
    """A worker told to stop ends its waiting claim (it half-closes the connection): the API
    closes it at once, well before the worker would stop reading (30 s) and the wait would end
    (20 s); the claim answers empty, and the next claim gets the next task."""
    (session,) = _waiting(server, tmp_path, 1)
    interrupt = Interrupt(grace=30)
    claim = Claim(session, wait=20, interrupt=interrupt)
    claim.start()
    time.sleep(1.0)  # it waits
    ended = time.monotonic()
    interrupt.fire()
    assert claim.result().groups == []
    assert claim.answered - ended < 10
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    (other,) = _waiting(server, tmp_path / "other", 1)
    assert sum(len(g.tasks) for g in other.claim(1, 1, wait=5).groups) == 1
    assert user.get_tag_status(tag.name)["running"] == 1
    for s in (session, other):
        s.close()
