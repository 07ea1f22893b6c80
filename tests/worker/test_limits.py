"""Timeouts, memory limits and retries on real workers against a real API.

Tasks that must tell the test something (how often they ran) report to the ``ledger`` over
loopback: a sandboxed task cannot write the test's files.
"""

from __future__ import annotations

import os
import resource
import time
import uuid
from pathlib import Path

import pytest

import hmq
from hmq import ConfigurationError
from tests.helpers import Ledger, Server, submit, tell, wait_for
from worker.settings import WorkerSettings


def _pull(tag: hmq.Tag, timeout: float = 60) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=timeout, interval=0.1, what=f"tag {tag.name} to finish")


def _processes_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def hang_or_echo(x, marker=""):
    import subprocess
    import sys
    import time

    if x == "hang":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker], start_new_session=True)
        time.sleep(10**6)
    return x


def test_a_hanging_call_times_out_while_quick_calls_complete(server: Server, tmp_path: Path) -> None:
    marker = f"hmq-timeout-{uuid.uuid4().hex}"
    workers = [server.start_worker(tmp_path) for _ in range(2)]  # one core each
    started = time.monotonic()
    tag = submit(server.user(), hang_or_echo, [("hang", marker), *((i,) for i in range(10))], timeout=3)
    _pull(tag, timeout=50)
    assert time.monotonic() - started < 50
    results, errors = list(tag.results), list(tag.errors)
    assert results[1:] == list(range(10)) and errors[1:] == [None] * 10
    assert results[0] is None and "timed out after 3 s" in errors[0]
    wait_for(lambda: not _processes_with(marker), timeout=10, what="the processes of the killed call to end")
    assert all(w.poll() is None for w in workers)


def test_calls_queued_behind_a_long_call_do_not_wait_for_it(server: Server, tmp_path: Path) -> None:
    for _ in range(2):
        server.start_worker(tmp_path)
    user = server.user()
    tag = submit(user, hang_or_echo, [("hang",), *((i,) for i in range(10))], timeout=600)
    wait_for(lambda: user.get_tag_status(tag.name)["completed"] == 10, timeout=60, what="the 10 quick calls")
    assert user.get_tag_status(tag.name)["running"] == 1  # the long one still runs, 10 minutes are far
    tag.cancel()


def test_a_call_runs_under_its_memory_limit_and_the_next_one_under_its_own(server: Server, tmp_path: Path) -> None:
    def allocate(mib):
        import builtins
        import resource
        import uuid

        data = bytearray(mib << 20)
        return {
            "executor": builtins.__dict__.setdefault("hmq_executor", uuid.uuid4().hex),
            "as": resource.getrlimit(resource.RLIMIT_AS),
            "mib": len(data) >> 20,
        }

    server.start_worker(tmp_path)  # one core: one executor for the user
    user = server.user()
    limited = submit(user, allocate, [(20,), (1024,)], memory="200MiB")
    _pull(limited)
    fits, over = list(limited.results)
    assert fits["mib"] == 20 and fits["as"][0] == 200 << 20
    assert over is None
    error = list(limited.errors)[1]
    assert "exceeded its memory limit of 200 MiB" in error and "MemoryError" in error

    after = submit(user, allocate, [(1024,)])  # no limit
    _pull(after)
    (unlimited,) = list(after.results)
    assert unlimited["executor"] == fits["executor"]  # the same executor...
    assert unlimited["mib"] == 1024 and unlimited["as"] == list(resource.getrlimit(resource.RLIMIT_AS))  # ...as it was


def test_retries_run_a_failed_call_again_and_the_error_counts_the_attempts(
    server: Server, tmp_path: Path, ledger: Ledger
) -> None:
    def flaky(port, kind, succeed_on):
        attempt = tell(port, kind)
        if attempt < succeed_on:
            raise RuntimeError(f"attempt {attempt} failed")
        return attempt

    for _ in range(2):
        server.start_worker(tmp_path)
    user = server.user()
    tag = submit(user, flaky, [(ledger.port, "flaky", 3), (ledger.port, "hopeless", 99)], retries=2)
    _pull(tag)
    assert list(tag.results) == [3, None]  # the third attempt succeeded
    assert len(ledger.of("flaky")) == 3 and len(ledger.of("hopeless")) == 3
    error = list(tag.errors)[1]
    assert error.splitlines()[0] == "failed on attempt 3 of 3"
    assert "RuntimeError: attempt 3 failed" in error and "attempt 2 failed" not in error  # the last attempt's


def test_a_call_that_kills_its_executor_every_time_fails_after_its_tries(
    server: Server, tmp_path: Path, ledger: Ledger
) -> None:
    def poison(port, x):
        import os
        import signal

        if x == "poison":
            tell(port, "poison")
            os.kill(os.getppid(), signal.SIGKILL)  # its parent: bubblewrap's init, or the worker without a sandbox
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    workers = [server.start_worker(tmp_path) for _ in range(2)]
    tag = submit(server.user(), poison, [(ledger.port, x) for x in (1, "poison", 2, 3)], retries=1)
    _pull(tag)
    assert len(ledger.of("poison")) == 2
    results, errors = list(tag.results), list(tag.errors)
    assert [results[i] for i in (0, 2, 3)] == [1, 2, 3]
    assert errors[1].startswith("failed on attempt 2 of 2\n") and "died" in errors[1]
    assert all(w.poll() is None for w in workers)  # it took no worker down


def test_a_worker_registers_the_memory_it_offers(server: Server, tmp_path: Path) -> None:
    server.start_worker(tmp_path, extra=("--memory", "3GiB"))
    server.start_worker(tmp_path)
    with server.admin() as admin:
        workers = wait_for(lambda: len(admin.workers()) == 2 and admin.workers(), what="two workers")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert sorted(w.memory for w in workers) == sorted([3 << 30, total])


def test_worker_memory_setting() -> None:
    assert WorkerSettings(url="http://x", memory="2GiB").memory == 2 << 30
    assert WorkerSettings(url="http://x", memory=1 << 30).memory == 1 << 30
    assert WorkerSettings(url="http://x").memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with pytest.raises(ConfigurationError, match="worker memory"):
        WorkerSettings(url="http://x", memory="lots")
