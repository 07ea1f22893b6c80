"""A worker's life under a batch scheduler: it leaves when idle, after enough tasks, before its
time is up, and drains on SIGTERM (running calls finish within the grace, the rest go back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hmq
from hmq import ConfigurationError, defaults
from tests.helpers import HttpLedger, Server, reporting_sleeper, submit, wait_for
from worker.life import Life
from worker.settings import WorkerSettings


@pytest.fixture
def ledger() -> Iterator[HttpLedger]:
    book = HttpLedger()
    yield book
    book.close()


def _pull(tag: hmq.Tag, timeout: float = 90) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=timeout, interval=0.1, what=f"tag {tag.name} to finish")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _life(**settings: float) -> tuple[Life, Clock]:
    clock = Clock()
    return Life(WorkerSettings(url="http://127.0.0.1:9", **settings), clock), clock  # type: ignore[arg-type]


def test_idle_time_counts_from_the_last_task_held() -> None:
    life, clock = _life(idle_timeout=10)
    clock.now += 9
    life.observe(busy=True)  # a task arrived just before the timeout
    clock.now += 100
    life.observe(busy=True)
    assert life.leaving is None
    life.observe(busy=False)
    clock.now += 9.5
    life.observe(busy=False)
    assert life.leaving is None
    clock.now += 0.5
    life.observe(busy=False)
    assert life.leaving == "it was idle for 10 s" and life.deadline is None and life.budget(5) == 0


def test_max_tasks_limits_claims_and_then_leaves_without_a_deadline() -> None:
    life, _ = _life(max_tasks=5)
    assert life.budget(8) == 5
    life.took(3)
    assert life.budget(8) == 2
    life.observe(busy=True)
    assert life.leaving is None
    life.took(2)
    life.observe(busy=True)  # it runs what it took
    assert life.leaving is None and life.budget(8) == 0
    life.observe(busy=False)
    assert life.leaving == "it has taken its 5 task(s)" and not life.overdue()


def test_max_runtime_stops_claiming_grace_seconds_before_the_end() -> None:
    life, clock = _life(max_runtime=100, grace=30)
    clock.now += 69
    life.observe(busy=True)
    assert life.leaving is None
    clock.now += 1
    life.observe(busy=True)
    assert life.leaving is not None and life.deadline == clock.now + 30 and life.wait(60) == 30
    clock.now += 30
    assert life.overdue() and life.wait(60) == 0


def test_a_signal_gives_running_calls_the_grace() -> None:
    life, clock = _life(grace=10)
    life.leave("SIGTERM received")
    life.leave("again")  # the first reason and deadline stand
    assert (life.leaving, life.deadline) == ("SIGTERM received", clock.now + 10)


def test_max_runtime_must_leave_room_for_the_grace() -> None:
    with pytest.raises(ConfigurationError, match="must be longer than grace"):
        WorkerSettings(url="http://127.0.0.1:9", max_runtime=20, grace=30)


def test_idle_timeout_ends_the_worker(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x * 2, [(1,), (2,)])
    started = time.monotonic()
    proc = server.start_worker(tmp_path, extra=("--idle-timeout", "3"))
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - started >= 3
    tag.pull()
    assert list(tag.results) == [2, 4]  # it ran the tag before it idled out
    assert "leaving: it was idle for 3 s" in proc.log_path.read_text()  # type: ignore[attr-defined]


def test_max_tasks_ends_the_worker_after_that_many(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(5)])
    proc = server.start_worker(tmp_path, extra=("--max-tasks", "3"))
    assert proc.wait(timeout=60) == 0
    status = user.get_tag_status(tag.name)
    assert (status["completed"], status["pending"], status["running"]) == (3, 2, 0)
    assert "leaving: it has taken its 3 task(s)" in proc.log_path.read_text()  # type: ignore[attr-defined]


def test_sigterm_lets_a_running_call_finish_within_the_grace(
    server: Server, tmp_path: Path, ledger: HttpLedger
) -> None:
    user = server.user()
    proc = server.start_worker(tmp_path, extra=("--grace", "10"))
    tag = submit(user, reporting_sleeper, [(ledger.url, "call", 5)])
    wait_for(lambda: ledger.count("start") == 1, what="the call to start")
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert ledger.count("done") == 1  # it finished before the worker left
    status = user.get_tag_status(tag.name)
    assert (status["completed"], status["pending"], status["running"]) == (1, 0, 0)  # and it was reported
    tag.pull()
    assert list(tag.results) == ["call"]


def test_sigterm_hands_back_a_call_that_outlasts_the_grace(server: Server, tmp_path: Path, ledger: HttpLedger) -> None:
    user = server.user()
    first = server.start_worker(tmp_path, extra=("--grace", "1"))
    tag = submit(user, reporting_sleeper, [(ledger.url, "call", 5)])
    wait_for(lambda: ledger.count("start") == 1, what="the call to start")
    first.terminate()
    assert first.wait(timeout=60) == 0
    status = user.get_tag_status(tag.name)
    assert (status["pending"], status["running"], ledger.count("done")) == (1, 0, 0)  # handed back, not run out
    server.start_worker(tmp_path)
    _pull(tag)
    assert list(tag.results) == ["call"]
    assert (ledger.count("start"), ledger.count("done")) == (2, 1)  # completed elsewhere, exactly once


def test_an_idle_worker_waits_for_work_no_longer_than_it_may_stay() -> None:
    """The claim of an idle worker waits on the API, but never past its idle timeout or the
    moment it stops claiming before its run time is up."""
    life, clock = _life(idle_timeout=12, max_runtime=100, grace=10)
    assert life.patience(5) == 5
    clock.now += 9
    assert life.patience(5) == 3  # idle for 9 of 12 s
    life.observe(True)
    clock.now += 80
    life.observe(False)
    assert life.patience(5) == 1  # 89 s in: claiming ends at 100 - 10
    clock.now += 2
    assert life.patience(5) == 0
    settings = WorkerSettings(url="http://127.0.0.1:9")
    assert settings.claim_wait_seconds == defaults.MAX_WAIT_SECONDS
    assert settings.idle_claim_wait(lambda: 0.0) == settings.claim_wait_seconds
    assert settings.idle_claim_wait(lambda: 0.5) == 0.875 * settings.claim_wait_seconds  # a quarter at most less
    for wrong in ({"claim_wait_seconds": -1}, {"claim_wait_jitter": 1.0}, {"claim_wait_jitter": -0.1}):
        with pytest.raises(ConfigurationError):
            WorkerSettings(url="http://127.0.0.1:9", **wrong)  # type: ignore[arg-type]


def _waiting_worker(server: Server, directory: Path) -> Any:
    """A worker process that holds nothing and waits on the API for work (its claim waits
    ``claim_wait_seconds``, 20 s)."""
    proc = server.start_worker(directory)
    wait_for(lambda: "registered as" in proc.log_path.read_text(), what="the worker to register")
    time.sleep(1.5)  # its first claim found nothing and waits
    return proc


def test_sigterm_ends_a_waiting_claim_at_once(server: Server, tmp_path: Path) -> None:
    """A worker told to stop while its claim waits on the API does not sit out the wait."""
    proc = _waiting_worker(server, tmp_path)
    stopped = time.monotonic()
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    assert time.monotonic() - stopped < 12  # the claim waits 20 s
    assert "leaving: SIGTERM received" in proc.log_path.read_text()  # type: ignore[attr-defined]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_a_task_submitted_as_a_waiting_worker_stops_is_not_lost(server: Server, tmp_path: Path, delay: float) -> None:
    """The submit wakes the waiting claim while the worker hangs up on it: whether the API
    leased the task for it or not, the task is pending again as soon as the worker is gone
    (not when a lease runs out, 120 s), and the next worker runs it."""
    user = server.user()
    proc = _waiting_worker(server, tmp_path / "first")
    stopper = threading.Timer(delay, proc.terminate)
    stopper.start()
    tag = submit(user, lambda x: x * 3, [(5,)])
    stopper.join()
    assert proc.wait(timeout=60) == 0
    wait_for(lambda: user.get_tag_status(tag.name)["running"] == 0, timeout=20, what="the task to be handed back")
    status = user.get_tag_status(tag.name)
    assert (status["pending"] + status["completed"], status["failed"]) == (1, 0)
    server.start_worker(tmp_path / "second")
    _pull(tag)
    assert list(tag.results) == [15]
