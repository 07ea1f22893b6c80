"""Waiting on the API: claims and pulls that the API holds until there is something to answer.

Time bounds here are generous (seconds where the answer takes milliseconds), and each test
could fail: a claim that only polled would answer after its whole wait, not at the submit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hmq
from hmq import wire
from tests.helpers import ManualClock, ManualWorker, Server, start_server, submit
from worker.session import WorkerSession


class Claim(threading.Thread):
    """A claim waiting in a thread; ``out`` and ``seconds`` once it answered."""

    def __init__(self, session: WorkerSession, wait: float, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.session, self.wait, self.kwargs = session, wait, kwargs
        self.out: wire.ClaimOut | None = None
        self.error: BaseException | None = None
        self.answered = 0.0

    def run(self) -> None:
        try:
            self.out = self.session.claim(10, 1, wait=self.wait, **self.kwargs)
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
