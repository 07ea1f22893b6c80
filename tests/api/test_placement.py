"""Placement warnings: a submit no worker seen recently can run warns at once, naming what is
missing; the tag status carries the reason until a matching worker appears; the tasks stay
queued and run then."""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest
from sqlalchemy import create_engine, text

from hmq import wire
from tests.helpers import ManualClock, ManualWorker, Server, submit

GiB = 1024**3
OTHER_PYTHON = "3.10" if wire.PYTHON != "3.10" else "3.12"


def double(x):
    return 2 * x


# Each case: the only worker there is, what the submit asks for, what the warning says is
# missing, and the worker that can run it.
CASES = {
    "python": (
        {"python": OTHER_PYTHON},
        {},
        f"no worker seen in the last 10 min has Python {wire.PYTHON} (workers have {OTHER_PYTHON})",
        {},
    ),
    "cores": ({"cores": 1}, {"ncores": 2}, "no worker seen in the last 10 min has 2 cores (largest: 1)", {"cores": 2}),
    "memory": (
        {"memory": GiB},
        {"memory": "2GiB"},
        "no worker seen in the last 10 min has 2 GiB of memory (largest: 1 GiB)",
        {"memory": 4 * GiB},
    ),
    "datacenter": (
        {"datacenter": "default"},
        {"datacenters": ["gpu"]},
        "no worker seen in the last 10 min is in datacenter gpu (seen: default)",
        {"datacenter": "gpu"},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_submit_no_worker_can_run_warns_until_one_appears(server: Server, tmp_path: Path, case: str) -> None:
    seen, options, reason, fix = CASES[case]
    user = server.user()
    other = ManualWorker(server, tmp_path, **seen)
    with pytest.warns(UserWarning, match="no worker seen") as caught:
        tag = submit(user, double, [(1,), (2,), (3,)], **options)
    (warning,) = [str(w.message) for w in caught]
    assert warning.startswith(f"tag {tag.name}: {reason}: the tasks wait until a worker that can run them registers")
    assert "workers may be started on demand" in warning and "fail if none is seen within 24 h" in warning

    status = user.get_tag_status(tag.name)
    assert (status["pending"], status["total"]) == (3, 3)
    assert [w for w in status["warnings"] if reason in w] == status["warnings"] != []
    assert other.claim(available=2) == []  # nothing stored was touched: still pending for the right worker

    able = ManualWorker(server, tmp_path, **fix)
    assert user.get_tag_status(tag.name)["warnings"] == []  # it registered: the reason is gone
    (group,) = able.claim(available=2)
    values = {str(t.id): 2 * n for n, t in enumerate(group.tasks, 1)}
    assert able.complete(group, values).accepted == 3
    assert tag.pull() == 0
    assert list(tag.results) == [2, 4, 6]


def test_no_worker_at_all_warns_that_workers_may_be_started_on_demand(make_server: Callable[..., Server]) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_warning_seconds=60)
    user = server.user()
    with pytest.warns(UserWarning) as caught:
        tag = submit(user, double, [(1,)])
    assert [str(w.message) for w in caught] == [
        f"tag {tag.name}: no worker seen in the last 1 min: the tasks wait until a worker that can run them "
        "registers (workers may be started on demand), and fail if none is seen within 24 h"
    ]
    assert user.get_tag_status(tag.name)["warnings"] == [str(caught[0].message).split(": ", 1)[1]]


def test_the_warning_follows_the_workers_seen_recently(make_server: Callable[..., Server], tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_warning_seconds=60)
    user = server.user()
    worker = ManualWorker(server, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a worker that can run it was seen: no warning
        tag = submit(user, double, [(1,)])
    assert user.get_tag_status(tag.name)["warnings"] == []
    clock.advance(61)  # the worker went quiet
    (stale,) = user.get_tag_status(tag.name)["warnings"]
    assert stale.startswith("no worker seen in the last 1 min: the tasks wait")
    (group,) = worker.claim()  # it claims: seen again
    assert user.get_tag_status(tag.name)["warnings"] == []
    worker.complete(group, {str(group.tasks[0].id): 2})
    assert tag.pull() == 0 and list(tag.results) == [2]


def test_a_tag_made_before_placements_were_kept_still_warns(server: Server, tmp_path: Path) -> None:
    user = server.user()
    ManualWorker(server, tmp_path, datacenter="cpu")
    with pytest.warns(UserWarning, match="is in datacenter gpu"):
        tag = submit(user, double, [(1,), (2,)], datacenters=["gpu"])
    _forget_placements(server)  # as an index migrated from an earlier revision has them
    (reason,) = user.get_tag_status(tag.name)["warnings"]
    assert reason.startswith("no worker seen in the last 10 min is in datacenter gpu (seen: cpu)")
    with pytest.warns(UserWarning, match="is in datacenter gpu"):  # adding to such a tag keeps it working
        user.submit_tasks(
            tag.name, hashlib.sha256(cloudpickle.dumps(double)).hexdigest(), [((3,), {})], datacenters=["gpu"]
        )
    assert user.get_tag_status(tag.name)["pending"] == 3
    gpu = ManualWorker(server, tmp_path, datacenter="gpu")
    assert user.get_tag_status(tag.name)["warnings"] == []
    assert sum(len(group.tasks) for group in gpu.claim()) == 3


def test_a_cancelled_tag_and_a_kind_with_nothing_pending_say_nothing(server: Server, tmp_path: Path) -> None:
    user = server.user()
    ManualWorker(server, tmp_path)
    with pytest.warns(UserWarning, match="has 2 cores"):
        tag = submit(user, double, [(1,)], ncores=2)
    tag.cancel()
    assert user.get_tag_status(tag.name)["warnings"] == []


def _forget_placements(server: Server) -> None:
    engine = create_engine(server.settings.database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE tags SET placements = NULL"))
    engine.dispose()


def test_builds_reported_in_heartbeats_and_claims_show_in_the_tag_status(server: Server, tmp_path: Path) -> None:
    user = server.user()
    first, second = ManualWorker(server, tmp_path), ManualWorker(server, tmp_path)
    tag = submit(user, double, [(1,)], packages=["numpy"])
    plain = submit(user, double, [(1,)])
    assert user.get_tag_status(tag.name)["warnings"] == []
    first.session.heartbeat([], building=[(["numpy"], 3.0)])
    assert re.fullmatch(
        r"building numpy env on 1 worker \(for ([3-9]|\d\d+) s\)", *user.get_tag_status(tag.name)["warnings"]
    )
    assert user.get_tag_status(plain.name)["warnings"] == []  # another package set
    first.session.heartbeat([])  # no building field (an older worker): what it said stays
    assert len(user.get_tag_status(tag.name)["warnings"]) == 1
    (group,) = second.session.claim(1, 1, building=[(["numpy"], 0.0)]).groups  # the task runs meanwhile
    assert re.fullmatch(
        r"building numpy env on 2 workers \(for ([3-9]|\d\d+) s\)", *user.get_tag_status(tag.name)["warnings"]
    )
    first.session.heartbeat([], building=[])
    second.session.heartbeat([str(group.tasks[0].id)], building=[])
    assert user.get_tag_status(tag.name)["warnings"] == []


def test_missing_names_every_requirement_no_worker_meets() -> None:
    from types import SimpleNamespace

    from lambdas.service.lifecycle import encode_datacenters, missing

    small = SimpleNamespace(python="3.11", datacenter="cpu", cores=4, memory=GiB)
    big = SimpleNamespace(python="3.11", datacenter="gpu", cores=1, memory=None)
    gpu = encode_datacenters(["gpu"])
    assert missing([small, big], "3.11", None, 4, None, "10 min") is None
    assert missing([small], "3.12", encode_datacenters(["a", "b"]), 8, 2 * GiB, "1 h") == (
        "no worker seen in the last 1 h has Python 3.12 (workers have 3.11); none is in datacenter a or b "
        "(seen: cpu); none has 8 cores (largest: 4); none has 2 GiB of memory (largest: 1 GiB)"
    )
    assert missing([small, big], "3.11", gpu, 4, None, "10 min") == (
        "no worker seen in the last 10 min has all of Python 3.11 with 4 core(s) in datacenter(s) gpu"
    )
    assert missing([big], "3.11", None, 1, 64 * GiB, "10 min") is None  # a worker that did not say fits any memory
    assert missing([], "3.11", None, 1, None, "10 min") == "no worker seen in the last 10 min"
