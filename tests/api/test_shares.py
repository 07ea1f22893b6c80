"""Claims shared between users: round robin, shares the admin sets, tag order, per-user caps,
and pending tasks no worker can run costing a claim nothing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

import hmq
from lambdas.service.shares import Waiting, divide
from tests.helpers import ManualClock, ManualWorker, Server, raw_request, signed, submit


def _users(groups: list[Any]) -> list[str]:
    """The user of each task claimed, in the order the claim lists them (oldest first)."""
    return [g.certificate["name"] for g in groups for _ in g.tasks]


def _claim_one_at_a_time(worker: ManualWorker, n: int) -> list[str]:
    return [name for _ in range(n) for name in _users(worker.claim(1))]


@pytest.fixture
def clocked(make_server: Any) -> Server:
    """An API whose clock stands still: no lease runs out while a test holds tasks."""
    return make_server(clock=ManualClock())


def test_equal_users_are_served_in_turn(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    submit(ada, lambda x: x, [(i,) for i in range(6)])  # ada's tasks are all older than bob's
    submit(bob, lambda x: x, [(i,) for i in range(6)])
    worker = ManualWorker(clocked, tmp_path)
    assert _claim_one_at_a_time(worker, 6) == ["ada", "bob"] * 3
    # One claim of several is shared the same way: each holds 3, so 2 more each.
    assert sorted(_users(worker.claim(4))) == ["ada", "ada", "bob", "bob"]


def test_a_user_who_just_submitted_is_served_first(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    submit(ada, lambda x: x, [(i,) for i in range(100)])
    worker = ManualWorker(clocked, tmp_path)
    assert _users(worker.claim(30)) == ["ada"] * 30  # alone: all of it
    submit(bob, lambda x: x, [(i,) for i in range(5)])
    # ada holds 30: bob's five all go in the next claim, however old ada's pending tasks are.
    assert sorted(_users(worker.claim(10))) == ["ada"] * 5 + ["bob"] * 5


def test_shares_weigh_users(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    with clocked.admin() as admin:
        assert admin.share("ada", 2).share == 2
        assert {u.name: u.share for u in admin.users()}["bob"] == 1  # the default
    submit(ada, lambda x: x, [(i,) for i in range(20)])
    submit(bob, lambda x: x, [(i,) for i in range(20)])
    worker = ManualWorker(clocked, tmp_path)
    assert _claim_one_at_a_time(worker, 6) == ["ada", "bob", "ada", "ada", "bob", "ada"]
    got = _users(worker.claim(9))  # ada holds 4, bob 2: ada reaches 10 and bob 5
    assert (got.count("ada"), got.count("bob")) == (6, 3)


def test_a_users_tags_are_served_in_submission_order(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    first = submit(ada, lambda x: x, [(i,) for i in range(3)], tag="first")
    submit(bob, lambda x: x, [(i,) for i in range(3)], tag="bobs")
    second = submit(ada, lambda x: -x, [(i,) for i in range(3)], tag="second")
    worker = ManualWorker(clocked, tmp_path)
    order = [(g.certificate["name"], g.tag, str(t.id)) for _ in range(6) for g in worker.claim(1) for t in g.tasks]
    adas = [(tag, task) for name, tag, task in order if name == "ada"]
    assert [name for name, _, _ in order] == ["ada", "bob"] * 3
    assert adas == [(first.name, t) for t in first.task_ids]  # second waits for first
    later = [(g.tag, str(t.id)) for g in worker.claim(100) for t in g.tasks if g.certificate["name"] == "ada"]
    assert later == [(second.name, t) for t in second.task_ids]


def test_a_claim_takes_no_more_of_a_user_than_the_worker_asks(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    submit(ada, lambda x: x, [(i,) for i in range(20)])
    submit(bob, lambda x: x, [(i,) for i in range(20)])
    worker = ManualWorker(clocked, tmp_path)
    ada_key = ada.identity.public.key_id
    got = _users(worker.session.claim(10, 1, per_user={ada_key: 8}, others=1).groups)
    assert (got.count("ada"), got.count("bob")) == (8, 1)  # bob, not measured: one
    none_of_bob = _users(worker.session.claim(10, 1, per_user={ada_key: 3}, others=0).groups)
    assert none_of_bob == ["ada"] * 3


def _short(x: int) -> int:
    return x


def _long(x: int) -> int:
    return -x


def test_a_claim_takes_no_more_of_a_function_than_the_worker_asks(clocked: Server, tmp_path: Path) -> None:
    """Caps are per function: a user whose short calls the worker measured and who then submits
    long ones gets one long call per free core, in submission order."""
    ada = clocked.user("ada")
    short = submit(ada, _short, [(i,) for i in range(3)], tag="short")
    long = submit(ada, _long, [(i,) for i in range(4)], tag="long")
    worker = ManualWorker(clocked, tmp_path)
    first = worker.session.claim(10, 1, unmeasured=1).groups  # nothing measured: one
    assert [(g.tag, len(g.tasks)) for g in first] == [(short.name, 1)]
    digest = first[0].function
    got = worker.session.claim(10, 1, per_function={digest: 8}, unmeasured=1).groups
    # The rest of the short calls (measured: up to 8), then one long call (not measured).
    assert [(g.tag, len(g.tasks)) for g in got] == [(short.name, 2), (long.name, 1)]
    # A long function capped at 0: the user's next task is of it, so nothing of theirs comes
    # (a later task of a function with room would break submission order).
    assert worker.session.claim(10, 1, per_function={got[1].function: 0}, unmeasured=5).groups == []
    rest = worker.session.claim(10, 1, per_function={got[1].function: 2}).groups
    assert [(g.tag, len(g.tasks)) for g in rest] == [(long.name, 2)]
    path = f"/v1/workers/{worker.session.worker_id}/claim"
    for bad in ({digest: -1}, {"f" * 65: 1}, {f"{i:064x}": 1 for i in range(300)}):
        body = json.dumps({"max_tasks": 10, "available": 1, "per_function": bad}).encode()
        answer = raw_request(clocked.url, "POST", path, body, signed(worker.creds.identity, "POST", path, body))
        assert answer.status_code == 422, answer.text
        assert "invalid request: per_function" in answer.json()["error"]["message"], answer.text
    assert [len(g.tasks) for g in worker.claim(10)] == [1]  # the bad claims took nothing


def test_tasks_no_worker_can_run_do_not_block_others(clocked: Server, tmp_path: Path) -> None:
    ada, bob = clocked.user("ada"), clocked.user("bob")
    submit(ada, lambda x: x, [(i,) for i in range(300)], datacenters=["nowhere"])
    submit(ada, lambda x: x, [(i,) for i in range(2)], datacenters=["here"])
    mine = submit(bob, lambda x: x, [(i,) for i in range(3)])
    worker = ManualWorker(clocked, tmp_path, datacenter="here")
    groups = worker.claim(100)
    assert sorted(_users(groups)) == ["ada", "ada", "bob", "bob", "bob"]
    assert {str(t.id) for g in groups for t in g.tasks if g.tag == mine.name} == set(mine.task_ids)
    assert worker.claim(100) == []


def test_share_errors_are_clear_and_change_nothing(clocked: Server, tmp_path: Path) -> None:
    clocked.user("ada")
    ManualWorker(clocked, tmp_path)
    with clocked.admin() as admin:
        with pytest.raises(hmq.NotFound, match="unknown user 'nobody'"):
            admin.share("nobody", 2)
        worker_name = next(u.name for u in admin.users() if u.role == "worker")
        with pytest.raises(hmq.BadRequest, match="is a worker: only users submit tasks"):
            admin.share(worker_name, 2)
        with pytest.raises(ValueError, match="greater than 0"):
            admin.share("ada", 0)
        assert {u.name: u.share for u in admin.users()}["ada"] == 1
    body = b'{"share": -1}'
    target = "/v1/users/ada/share"
    answer = httpx.post(
        clocked.url + target, content=body, headers=signed(clocked.admin_key.identity, "POST", target, body)
    )
    assert answer.status_code == 422
    user = clocked.user("eve")
    with pytest.raises(hmq.PermissionDenied, match="admin"):
        user.transport.call("POST", "/v1/users/ada/share", {"share": 5})
    with clocked.admin() as admin:
        assert {u.name: u.share for u in admin.users()}["ada"] == 1


def _one_at_a_time(waiting: dict[int, Waiting], n: int) -> dict[int, int]:
    """The rule :func:`divide` computes in closed form, applied literally: each task to the
    user with the fewest held per unit of share (ties: the oldest pending task), within caps."""
    given = dict.fromkeys(waiting, 0)
    for _ in range(n):
        open_ = [u for u, w in waiting.items() if w.cap is None or given[u] < w.cap]
        if not open_:
            break
        u = min(open_, key=lambda u: ((waiting[u].held + given[u]) / waiting[u].share, waiting[u].first, u))
        given[u] += 1
    return {u: c for u, c in given.items() if c}


def test_divide_gives_what_one_at_a_time_would() -> None:
    rng = random.Random(7)
    shares = [1.0, 2.0, 0.5, 3.0, 0.1, 1e-3, 7.25, 1000.0]
    for _ in range(3000):
        users = rng.randint(1, 6)
        waiting = {
            u: Waiting(
                share=rng.choice(shares),
                first=rng.randint(1, 50),
                held=rng.choice([0, 0, 1, 3, 10, 100, rng.randint(0, 2000)]),
                cap=rng.choice([None, None, 1, 2, 5, 40, rng.randint(1, 3000)]),
            )
            for u in range(1, users + 1)
        }
        n = rng.choice([0, 1, 2, 3, 10, 128, rng.randint(0, 2000)])
        assert divide(waiting, n) == _one_at_a_time(waiting, n), (waiting, n)
