"""Queue depth for autoscalers: open tasks grouped by placement, with the live workers per group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hmq import PermissionDenied, wire
from tests.helpers import ManualClock, ManualWorker, Server, submit


def _by_key(depth: wire.QueueDepth) -> dict[tuple, wire.QueueGroup]:
    return {(tuple(g.datacenters) if g.datacenters else None, g.python, g.ncores): g for g in depth.groups}


def test_open_tasks_are_grouped_by_what_decides_placement(make_server, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=60)
    user = server.user()
    submit(user, lambda: 1, [()] * 5)  # anywhere, 1 core
    submit(user, lambda: 2, [()] * 3, ncores=2, datacenters=["hpc"])
    submit(user, lambda: 3, [()] * 2, datacenters=["hpc", "cloud"])
    done = submit(user, lambda: 4, [()])
    hpc = ManualWorker(server, tmp_path, datacenter="hpc", cores=4)
    claimed = hpc.claim(3, available=1)  # the oldest 1-core tasks this worker may run
    assert sum(len(g.tasks) for g in claimed) == 3
    ManualWorker(server, tmp_path, datacenter="cloud", cores=1)
    with server.admin() as admin:
        depth = admin.queue()
    groups = _by_key(depth)
    py = wire.PYTHON
    assert set(groups) == {(None, py, 1), (("hpc",), py, 2), (("cloud", "hpc"), py, 1)}
    anywhere = groups[(None, py, 1)]
    assert (anywhere.pending, anywhere.running, anywhere.cores_needed) == (3, 3, 6)  # done's task is open too
    assert anywhere.running_in == {"hpc": 3} and anywhere.workers == 2 and anywhere.memory is None
    two_cores = groups[(("hpc",), py, 2)]
    assert (two_cores.pending, two_cores.running, two_cores.cores_needed, two_cores.workers) == (3, 0, 6, 1)
    assert groups[(("cloud", "hpc"), py, 1)].workers == 2
    assert depth.workers == 2 and depth.live_seconds == 60
    assert done.cancel()  # closed tasks leave the counts
    clock.advance(61)  # both workers fell silent: no longer live
    with server.admin() as admin:
        later = _by_key(admin.queue(datacenter="cloud"))
    assert set(later) == {(None, py, 1), (("cloud", "hpc"), py, 1)}  # the hpc-only group cannot run there
    assert later[(None, py, 1)].pending + later[(None, py, 1)].running == 5
    assert all(g.workers == 0 for g in later.values())


def test_workers_may_read_the_depth_and_users_may_not(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, lambda: 1, [()] * 2)
    worker = ManualWorker(server, tmp_path)
    (group,) = worker.session.queue_depth(python=wire.PYTHON).groups
    assert (group.pending, group.workers) == (2, 1)
    assert worker.session.queue_depth(python="2.7").groups == []
    with pytest.raises(PermissionDenied, match="admin or worker role"):
        user.transport.call("GET", "/v1/queue")


def test_package_sets_are_those_pending_tasks_runnable_here_need(server: Server, tmp_path: Path) -> None:
    user = server.user()
    long_set = [f"package-number-{i:03d}>=1.0" for i in range(40)]  # past the indexed length of a set
    submit(user, lambda: 7, [()], packages=["toml"], ncores=4, datacenters=["hpc"])  # the oldest: leased
    hpc = ManualWorker(server, tmp_path, datacenter="hpc", cores=4)
    assert len(hpc.claim(1, available=4)) == 1
    submit(user, lambda: 1, [()] * 2, packages=["six"])
    submit(user, lambda: 2, [()], packages=["six"], ncores=2)  # another placement, the same set
    submit(user, lambda: 3, [()], packages=["attrs", "idna"], datacenters=["hpc"])
    submit(user, lambda: 4, [()], packages=long_set)
    submit(user, lambda: 5, [()] * 3)  # no packages: nothing to build
    with pytest.warns(UserWarning, match="datacenter cloud"):
        submit(user, lambda: 6, [()], packages=["pyyaml"], datacenters=["cloud"])  # not runnable in hpc
    sets = hpc.session.missing_dependencies("hpc", [], wire.PYTHON)
    assert sorted(sets) == sorted([["six"], ["attrs", "idna"], sorted(long_set)])
    assert hpc.session.missing_dependencies("hpc", [["six"]], "2.7") == []
    assert sorted(hpc.session.missing_dependencies("cloud", [["six"]], wire.PYTHON)) == [sorted(long_set), ["pyyaml"]]


def test_claims_read_no_more_of_the_index_with_a_large_pending_set_elsewhere(postgres: Any) -> None:
    """Claims stay O(claimed) however many tasks are pending that the worker cannot run: the
    pages (PostgreSQL buffers, by ``EXPLAIN (ANALYZE, BUFFERS)``, not a timing) an empty claim
    and a claim of 10 read, before and after 50,000 tasks pinned to a datacenter no worker has."""
    from bench import pending

    out = pending.measure(postgres.database(), 50_000, repeats=1)
    before, after = out["before"], out["after"]
    assert after["empty_blocks"] <= 2 * before["empty_blocks"] + 10, out
    assert after["ten_blocks"] <= 2 * before["ten_blocks"] + 10, out
