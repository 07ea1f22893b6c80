"""Every request is signed; the API refuses the unsigned, the wrong, the stale and the replayed."""

from __future__ import annotations

import json

import pytest

import hmq
from hmq import crypto
from tests.helpers import ManualClock, Server, raw_request, signed


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["message"]


def test_health_and_info_need_no_signature(server: Server) -> None:
    assert raw_request(server.url, "GET", "/v1/health").json() == {"status": "ok"}
    info = raw_request(server.url, "GET", "/v1/info").json()
    assert info["admin_public_key"] == server.admin_key.identity.public.to_text() and info["protocol"] == 1


def test_unsigned_request_is_refused(server: Server) -> None:
    status, message = _error(raw_request(server.url, "GET", "/v1/whoami"))
    assert status == 401 and "not signed" in message


def test_ungranted_key_is_refused(server: Server) -> None:
    stranger = server.client(crypto.Identity.generate())
    with pytest.raises(hmq.AuthenticationError, match="has not been granted access"):
        stranger.whoami()


def test_signature_from_another_key_is_refused(server: Server) -> None:
    user = server.user("ada")
    headers = signed(crypto.Identity.generate(), "GET", "/v1/whoami")
    headers[crypto.H_KEY] = user.identity.key_id  # claim to be ada
    status, message = _error(raw_request(server.url, "GET", "/v1/whoami", headers=headers))
    assert status == 401 and "does not match" in message


def test_altered_body_is_refused(server: Server) -> None:
    user = server.user()
    body = json.dumps({"tasks": []}).encode()
    headers = signed(user.identity, "POST", "/v1/tasks/status", body)
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks/status", b'{"tasks": null}', headers))
    assert status == 401 and "altered" in message


def test_replayed_request_is_refused(server: Server) -> None:
    user = server.user()
    headers = signed(user.identity, "GET", "/v1/whoami")
    first = raw_request(server.url, "GET", "/v1/whoami", headers=headers)
    assert first.status_code == 200 and first.json()["role"] == "user"
    status, message = _error(raw_request(server.url, "GET", "/v1/whoami", headers=headers))
    assert status == 401 and "replayed" in message


@pytest.mark.parametrize(("shift", "word"), [(3600, "stale"), (-3600, "future")])
def test_stale_and_future_requests_are_refused(make_server, shift: float, word: str) -> None:
    clock = ManualClock()
    server = make_server(clock=clock)
    user = server.user()
    clock.advance(shift)  # the API's clock, not the client's, moves
    headers = signed(user.identity, "GET", "/v1/whoami")
    status, message = _error(raw_request(server.url, "GET", "/v1/whoami", headers=headers))
    assert status == 401 and word in message


def test_expired_nonces_are_purged_by_the_api_clock(make_server) -> None:
    from lambdas.db.models import Nonce

    clock = ManualClock()
    server = make_server(clock=clock, nonce_purge_seconds=30)
    user = server.user()  # the first request purged
    index = server.app.state.ctx.index
    with index.write() as session:
        session.add(Nonce(nonce="long-expired", expires=clock() - 1))

    def remembered() -> bool:
        with index.read() as session:
            return session.get(Nonce, "long-expired") is not None

    clock.advance(29)
    user.whoami()
    assert remembered()  # the last purge was 29 s ago
    clock.advance(2)
    user.whoami()
    assert not remembered()


def test_users_cannot_administer(server: Server) -> None:
    user = server.user()
    with pytest.raises(hmq.PermissionDenied, match="needs the admin role"):
        user._call("GET", "/v1/users")


def test_grant_with_a_foreign_admin_key_is_refused(server: Server) -> None:
    api = server.client()
    request = crypto.make_signing_request(crypto.Identity.generate(), server.url)
    with pytest.raises(hmq.PermissionDenied, match="admin key"):
        api.grant_access(request, crypto.AdminKey.generate().to_text(), "mallory")
    with pytest.raises(ValueError, match="admin key not supported"):
        api.grant_access(request, "not-a-key", "mallory")


def test_revoked_user_is_refused_and_their_queue_cancelled(server: Server) -> None:
    from tests.helpers import submit

    user = server.user("bob")
    tag = submit(user, lambda x: x, [(1,), (2,)])
    with server.admin() as admin:
        out = admin.revoke("bob")
    assert out.cancelled == 2
    with pytest.raises(hmq.PermissionDenied, match="revoked"):
        user.get_tag_status(tag.name)
    with server.admin() as admin:
        assert [u.revoked for u in admin.users() if u.name == "bob"] == [True]


def test_a_replay_is_refused_by_another_api_instance_on_the_same_index(server: Server) -> None:
    """Nonces live in the index, not in one process: a request seen by one API instance is a
    replay to every other (and after a restart)."""
    from tests.helpers import start_server

    other = start_server(server.settings.replace(migrate_on_start=False), server.admin_key)
    try:
        user = server.user()
        headers = signed(user.identity, "GET", "/v1/whoami")
        assert raw_request(server.url, "GET", "/v1/whoami", headers=headers).status_code == 200
        status, message = _error(raw_request(other.url, "GET", "/v1/whoami", headers=headers))
        assert status == 401 and "replayed" in message
    finally:
        other.stop()


def test_a_replayed_claim_is_refused_and_leases_nothing(server: Server, tmp_path) -> None:
    """A claim authenticates inside its own transaction: a replay is refused before anything is leased."""
    from tests.helpers import ManualWorker, submit

    user, w = server.user(), ManualWorker(server, tmp_path)
    tag = submit(user, lambda x: x, [(1,), (2,)])
    path = f"/v1/workers/{w.session.worker_id}/claim"
    body = json.dumps({"max_tasks": 1, "available": 1}).encode()
    headers = signed(w.creds.identity, "POST", path, body)
    first = raw_request(server.url, "POST", path, body, headers)
    assert first.status_code == 200 and len(first.json()["groups"][0]["tasks"]) == 1
    status, message = _error(raw_request(server.url, "POST", path, body, headers))
    assert status == 401 and "replayed" in message
    status_now = user.get_tag_status(tag.name)
    assert (status_now["pending"], status_now["running"]) == (1, 1)
