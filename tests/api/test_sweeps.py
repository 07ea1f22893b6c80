"""The sweeps' one trigger: an authenticated request, at most once per interval of the API's clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import hmq
from lambdas.db.models import Task, TaskStatus
from tests.helpers import ManualClock, ManualWorker, Server, raw_request, submit


def _states(server: Server) -> list[str]:
    """Task states read from the index directly: no request, so no sweep."""
    with server.app.state.ctx.index.read() as session:
        return [TaskStatus(s).label for s in session.scalars(select(Task.status).order_by(Task.seq))]


@pytest.mark.parametrize(("settings", "interval"), [({}, 5.0), ({"lease_sweep_seconds": 12}, 10.0)])
def test_the_lease_sweep_runs_at_most_once_per_interval(
    make_server: Any, tmp_path: Path, settings: dict[str, float], interval: float
) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=40, **settings)  # a quarter lease: 10 s
    user = server.user()
    submit(user, lambda: 1, [()])
    ManualWorker(server, tmp_path).claim()  # leased until now + 40
    clock.advance(39)
    user.whoami()  # a sweep: nothing ran out yet
    clock.advance(2)
    user.whoami()  # the lease ran out, but the last sweep was 2 s ago
    assert _states(server) == ["running"]
    clock.advance(interval - 2)
    user.whoami()
    assert _states(server) == ["pending"]


def test_only_authenticated_requests_sweep(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=40)
    user = server.user()
    submit(user, lambda: 1, [()])
    ManualWorker(server, tmp_path).claim()
    clock.advance(60)
    for path in ("/v1/health", "/v1/info"):
        assert raw_request(server.url, "GET", path).status_code == 200
    assert raw_request(server.url, "GET", "/v1/whoami").status_code == 401  # unsigned
    assert _states(server) == ["running"]
    user.whoami()
    assert _states(server) == ["pending"]


def test_the_placement_sweep_runs_at_most_once_per_interval(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_timeout_seconds=200, placement_sweep_seconds=30)
    user = server.user()
    submit(user, lambda: 1, [()], datacenters=["nowhere"])
    clock.advance(190)
    user.whoami()  # a sweep: the task is 190 s old
    clock.advance(20)
    user.whoami()  # 210 s old, but the last placement sweep was 20 s ago
    assert _states(server) == ["pending"]
    clock.advance(10)
    user.whoami()
    assert _states(server) == ["failed"]


def test_a_placement_timeout_of_zero_waits_forever(make_server: Any) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_timeout_seconds=0, request_max_skew_seconds=10**8)
    user = server.user()
    tag = submit(user, lambda: 1, [()], datacenters=["nowhere"], ncores=64)
    for _ in range(3):
        clock.advance(365 * 24 * 3600)
        assert user.get_tag_status(tag.name)["pending"] == 1


def test_uploads_never_registered_are_deleted_after_the_grace_period(make_server: Any, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, presign_expiry_seconds=60, upload_grace_seconds=200, upload_sweep_seconds=0)
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])  # registered: its function and chunk stay
    kept = server.object_keys()
    # a client killed mid-submit: it uploaded two chunks and registered neither
    slots = user._upload_slots("chunk", 3)
    for slot in slots[:2]:
        user.transport.put_object(slot.url, b"half a submit")
    assert len(server.object_keys()) == len(kept) + 2
    clock.advance(199)
    user.whoami()  # within the grace period: nothing is deleted
    assert len(server.object_keys()) == len(kept) + 2
    clock.advance(2)
    user.whoami()
    assert server.object_keys() == kept
    assert user.get_tag_status(tag.name)["pending"] == 1


def test_unregistered_upload_urls_are_bounded_per_caller(make_server: Any) -> None:
    server = make_server(max_pending_uploads=5)
    user = server.user()
    user._upload_slots("chunk", 4)
    with pytest.raises(hmq.BadRequest) as info:
        user._upload_slots("chunk", 2)
    assert info.value.status == 429 and info.value.code == "upload_quota"
    assert info.value.reason.startswith("4 upload URLs of yours are not registered yet and at most 5 may be")
    assert "register what you uploaded, or wait" in info.value.reason
    assert len(server.user()._upload_slots("chunk", 5)) == 5  # another user has a quota of her own


def test_result_upload_urls_are_bounded_per_worker_not_per_worker_identity(make_server: Any, tmp_path: Path) -> None:
    """The workers of a fleet share one identity and each keeps spare result URLs: one worker
    at its quota does not stop the others from reporting."""
    server = make_server(max_pending_uploads=5)
    first = ManualWorker(server, tmp_path)
    first.session.result_slots(4, spare=0)
    with pytest.raises(hmq.BadRequest) as info:
        first.session.result_slots(2, spare=0)
    assert info.value.status == 429 and info.value.code == "upload_quota"
    assert info.value.reason.startswith("4 upload URLs of this worker are not registered yet and at most 5 may be")
    second = first.api._worker_session()  # the same identity, another worker
    second.register("default", 1, None)
    assert len(second.result_slots(5, spare=0)) == 5
    # a user's quota is its own: the workers' URLs do not count against it
    assert len(server.user()._upload_slots("chunk", 5)) == 5
    # and what is reported still works for the worker at its quota once it registers one
    user = server.user()
    submit(user, lambda x: x, [(1,)])
    (group,) = first.claim()
    with pytest.raises(hmq.BadRequest):
        first.complete(group, {str(t.id): 1 for t in group.tasks})  # no URL left for its result
    assert user.get_tag_status(group.tag)["running"] == 1  # nothing lost: still its lease


def test_result_upload_urls_need_the_callers_own_registered_worker(make_server: Any, tmp_path: Path) -> None:
    import uuid

    from hmq import wire

    server = make_server()
    mine, other = ManualWorker(server, tmp_path), ManualWorker(server, tmp_path)  # two identities
    body = wire.UploadsIn(kind="results", count=1)
    for worker_id, code in ((uuid.uuid4(), "unknown_worker"), (other.session.worker_id, "forbidden")):
        with pytest.raises(hmq.HmqError) as info:
            mine.session.transport.call("POST", f"/v1/workers/{worker_id}/uploads", body, model=wire.UploadsOut)
        assert getattr(info.value, "code", None) == code, info.value
