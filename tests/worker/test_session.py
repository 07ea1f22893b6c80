"""The worker's session, its one function cache, and the settings a worker starts with."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

import hmq
from tests.helpers import ManualWorker, Server, submit
from worker.prepare import Preparer
from worker.session import FunctionCache, WorkerSession
from worker.settings import WorkerSettings


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def test_the_function_cache_is_bounded_least_recently_used_first() -> None:
    cache = FunctionCache(2)
    a, b, c = b"a", b"b", b"c"
    cache.put("alice", _digest(a), a)
    cache.put("alice", _digest(b), b)
    assert cache.get("alice", _digest(a)) == a  # a is now the most recently used
    cache.put("alice", _digest(c), c)
    assert len(cache) == 2
    assert cache.get("alice", _digest(b)) is None
    assert cache.get("alice", _digest(a)) == a and cache.get("alice", _digest(c)) == c


def test_the_function_cache_is_keyed_per_user_and_checks_the_digest() -> None:
    cache = FunctionCache(8)
    cache.put("alice", _digest(b"f"), b"f")
    assert cache.get("bob", _digest(b"f")) is None
    with pytest.raises(hmq.IntegrityError):
        cache.put("bob", _digest(b"f"), b"not f")
    with pytest.raises(hmq.UsageError):
        FunctionCache(0)


def test_users_do_not_share_cached_functions(server: Server, tmp_path: Path) -> None:
    def triple(x):
        return 3 * x

    alice, bob = server.user(), server.user()
    submit(alice, triple, [(1,)])
    submit(bob, triple, [(2,)])
    worker = ManualWorker(server, tmp_path)
    groups = worker.claim(10)
    assert len(groups) == 2
    preparer = Preparer(worker.session, worker.creds, header_cache=4)
    for group in groups + groups:  # the second round is served from the cache
        jobs, rejected, released = preparer.prepare(group)
        assert rejected == released == [] and len(jobs) == 1
    users = {preparer.user(g.certificate).key_id for g in groups}
    assert len(users) == 2 and len(worker.session.functions) == 2  # same digest, one entry per user
    assert all(worker.session.functions.get(u, groups[0].function) is not None for u in users)


def test_a_session_must_register_before_it_claims(server: Server, tmp_path: Path) -> None:
    creds = ManualWorker(server, tmp_path).creds
    session = WorkerSession.connect(server.url, creds.identity)
    try:
        with pytest.raises(hmq.UsageError, match="register"):
            session.claim(1, 1)
        session.register("default", 1)
        assert session.claim(1, 1).groups == []
    finally:
        session.close()


def test_the_user_client_holds_no_worker_state_until_a_worker_method_is_used(server: Server) -> None:
    client = server.user()
    assert not hasattr(client, "worker_id")
    assert client._session is None
    with pytest.raises(hmq.PermissionDenied, match="worker role"):
        client.dequeue_tasks("default")


def test_worker_settings_are_validated_once_and_frozen(tmp_path: Path) -> None:
    settings = WorkerSettings.from_options(url="http://api/", cores=None, cache_dir=tmp_path, pip_args=["-q"])
    assert (settings.url, settings.cores >= 1, settings.pip_args) == ("http://api", True, ("-q",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.cores = 2  # type: ignore[misc]
    with pytest.raises(hmq.ConfigurationError, match="no API URL"):
        WorkerSettings(url="")
    with pytest.raises(hmq.ConfigurationError, match="datacenter"):
        WorkerSettings(url="http://api", datacenter="a b")
    with pytest.raises(hmq.ConfigurationError, match="claim_max_tasks"):
        WorkerSettings(url="http://api", claim_max_tasks=10**6)
    with pytest.raises(hmq.ConfigurationError, match="result_batch"):
        WorkerSettings(url="http://api", result_batch=0)
    with pytest.raises(hmq.ConfigurationError, match="unknown worker settings: colour"):
        WorkerSettings.from_options(url="http://api", colour="blue")


def test_spare_result_upload_urls_serve_later_reports_until_they_are_too_old(server: Server, tmp_path: Path) -> None:
    worker = ManualWorker(server, tmp_path)
    now = [0.0]
    session = WorkerSession(worker.session.transport, clock=lambda: now[0])
    session.worker_id = worker.session.worker_id
    requests = []
    call = session.transport.call

    def counted(*args, **kwargs):
        requests.append(args[1])
        return call(*args, **kwargs)

    session.transport.call = counted  # type: ignore[method-assign]
    first = session.result_slots(1, spare=3)
    later = session.result_slots(2, spare=3) + session.result_slots(1, spare=3)
    assert len(requests) == 1  # one request for four URLs
    assert len({s.key for s in first + later}) == 4
    session.result_slots(1, spare=3)  # none left: a request again, three kept
    now[0] += 10**6  # the kept ones are too old now
    fresh = session.result_slots(1)
    assert len(requests) == 3 and len(fresh) == 1


def test_a_claim_that_leases_tasks_brings_the_spare_result_urls_its_session_lacks(
    server: Server, tmp_path: Path
) -> None:
    """A busy worker asks for result URLs with its claims, not with requests of their own: a
    claim asks when half the spares are used up and gets them only when it leases tasks."""
    worker = ManualWorker(server, tmp_path)
    session = worker.session
    requests = []
    call = session.transport.call

    def counted(*args, **kwargs):
        requests.append(args[1].rsplit("/", 1)[-1])
        return call(*args, **kwargs)

    session.transport.call = counted  # type: ignore[method-assign]
    empty = session.claim(10, 1, spare=4)  # nothing pending: no URLs either
    assert empty.groups == [] and empty.uploads is None and session.kept_result_slots == 0
    user = server.user()
    submit(user, lambda x: x, [(i,) for i in range(3)])
    out = session.claim(1, 1, spare=4)
    assert out.uploads is not None and len(out.uploads.slots) == 4 and session.kept_result_slots == 4
    (group,) = out.groups
    worker.complete(group, {str(t.id): 0 for t in group.tasks})  # its URL is a kept one
    assert requests == ["claim", "claim", "complete"]
    assert session.claim(1, 1, spare=4).uploads is None  # 3 of 4 kept: more than half, none asked
    session.result_slots(2, spare=0)
    again = session.claim(1, 1, spare=4)  # 1 kept: the other 3 come with the task
    assert again.uploads is not None and len(again.uploads.slots) == 3 and session.kept_result_slots == 4
    assert "uploads" not in requests
    assert len({s.key for s in session.result_slots(4, spare=0)}) == 4


def test_a_claim_brings_no_more_result_urls_than_the_worker_quota_leaves(make_server: Any, tmp_path: Path) -> None:
    server = make_server(max_pending_uploads=5)
    worker = ManualWorker(server, tmp_path)
    worker.session.result_slots(3, spare=0)  # 3 of its 5 outstanding
    submit(server.user(), lambda x: x, [(1,), (2,)])
    out = worker.session.claim(1, 1, spare=8)
    assert len(out.groups) == 1 and out.uploads is not None and len(out.uploads.slots) == 2  # what the quota left
    full = worker.session.claim(1, 1, spare=8)
    assert len(full.groups) == 1 and full.uploads is None  # at its quota: the tasks, no URLs, no error
    with pytest.raises(hmq.BadRequest) as info:  # a request of its own says why
        worker.session._new_slots(1, 1)
    assert info.value.code == "upload_quota" and info.value.status == 429


def test_result_objects_end_at_their_count_or_size(server: Server, tmp_path: Path) -> None:
    import os

    from worker.pool import Outcome
    from worker.report import _objects

    job = object()
    small = [(job, Outcome(f"t{i}", True, b"1")) for i in range(5)]
    assert [len(r) for _, r in _objects(small, batch=2, max_bytes=10**6)] == [2, 2, 1]  # type: ignore[arg-type]
    noise = [(job, Outcome(f"n{i}", True, os.urandom(1000))) for i in range(5)]  # incompressible
    parts = list(_objects(noise, batch=100, max_bytes=2500))  # type: ignore[arg-type]
    assert [len(r) for _, r in parts] == [3, 2] and all(j is job for j, _ in parts)
    assert [r.task_id for _, records in parts for r in records] == [f"n{i}" for i in range(5)]
