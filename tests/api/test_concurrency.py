"""Concurrent workers never get the same task: every task runs exactly once."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import select

from lambdas.db.models import Placement
from lambdas.service.shares import Caps, choose
from tests.helpers import ManualWorker, Server, submit, wait_for


def test_concurrent_claims_partition_the_tag(server: Server, tmp_path: Path) -> None:
    user = server.user()
    n = 1200
    submit(user, lambda x: x, [(i,) for i in range(n)])
    workers = [ManualWorker(server, tmp_path) for _ in range(6)]
    claimed: list[list[str]] = [[] for _ in workers]
    errors: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def claim_all(i: int) -> None:
        try:
            start.wait()
            while groups := workers[i].claim(37):
                claimed[i] += [str(t.id) for g in groups for t in g.tasks]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    every = [t for c in claimed for t in c]
    assert len(every) == n and len(set(every)) == n  # all claimed, none twice
    assert sum(1 for c in claimed if c) > 1  # the claimers really competed


def test_a_claim_hides_no_task_it_does_not_take_from_concurrent_claims(pg_server: Server, tmp_path: Path) -> None:
    """A claim for one call of a function not measured yet (a worker about to run a long call),
    still open, leaves the user's other tasks to a concurrent claim: it locked only its own.
    Had it locked all it looked at, the other claim would find nothing, and an idle worker
    woken for those tasks would wait for its next claim."""
    submit(pg_server.user(), lambda x: x, [(i,) for i in range(4)])
    worker = ManualWorker(pg_server, tmp_path)
    with pg_server.app.state.ctx.index.write() as session:
        placements = list(session.scalars(select(Placement.id)))
        mine = choose(session, placements, 10, Caps(unmeasured=1))  # its transaction stays open
        assert len(mine) == 1
        other = worker.session.claim(10, 1, unmeasured=1).groups
        assert [len(g.tasks) for g in other] == [1]
        assert other[0].tasks[0].id != mine[0].id


def test_worker_processes_run_every_task_exactly_once(pg_server: Server, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()

    def record(i, directory):
        import os

        fd = os.open(os.path.join(directory, "runs"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{i}\n".encode())
        os.close(fd)
        return i

    user = pg_server.user()
    for _ in range(4):  # unsandboxed: the tasks append to the test's own file
        pg_server.start_worker(tmp_path, cores=1, extra=("--isolation", "none"))
    n = 800
    tag = submit(user, record, [(i, str(ledger)) for i in range(n)])
    wait_for(lambda: tag.pull() == 0, timeout=240, interval=0.2, what="all tasks")
    runs = (ledger / "runs").read_text().split()
    assert sorted(map(int, runs)) == list(range(n))  # each exactly once
    assert list(tag.results) == list(range(n))
