"""Submit, complete and the pull authenticate inside their own transaction: a request refused
by its authentication (unknown key, bad signature, replay, wrong role, revoked) stores nothing,
neither the route's work nor its nonce, and is answered as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from hmq import crypto
from lambdas.db.models import Nonce, Tag, Task, TaskStatus, Upload
from tests.helpers import ManualWorker, Server, raw_request, signed, submit


class _Kept(Exception):
    """Raised instead of sending the submit whose body a test keeps."""


def _submit_body(user: Any) -> bytes:
    """The body of a submit of two calls the API would accept (its chunk and function are
    uploaded and registered), not sent."""
    kept: dict[str, bytes] = {}
    real = user._call

    def keep(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        if path == "/v1/tasks":
            kept["body"] = body.model_dump_json().encode()
            raise _Kept
        return real(method, path, body, **kwargs)

    user._call = keep
    try:
        with pytest.raises(_Kept):
            submit(user, lambda x: x, [(1,), (2,)], tag="kept")
    finally:
        del user._call
    return kept["body"]


def _counts(server: Server) -> tuple[int, int, int, int]:
    """Rows of tags, tasks, nonces and unregistered uploads."""
    with server.app.state.ctx.index.read() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) for model in (Tag, Task, Nonce, Upload)
        )


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["message"]


def test_a_submit_refused_by_its_authentication_stores_nothing(server: Server, tmp_path) -> None:
    user = server.user("ada")
    body = _submit_body(user)
    before = _counts(server)
    assert before[:2] == (0, 0) and before[3] >= 1  # the chunk's upload is not registered yet

    stranger = crypto.Identity.generate()
    headers = signed(stranger, "POST", "/v1/tasks", body)
    headers[crypto.H_KEY] = stranger.key_id
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, headers))
    assert status == 401 and "has not been granted access" in message

    forged = signed(crypto.Identity.generate(), "POST", "/v1/tasks", body)
    forged[crypto.H_KEY] = user.identity.key_id  # claims to be ada
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, forged))
    assert status == 401 and "does not match" in message

    altered = signed(user.identity, "POST", "/v1/tasks", body + b" ")
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, altered))
    assert status == 401 and "altered" in message

    worker = ManualWorker(server, tmp_path)
    as_worker = signed(worker.creds.identity, "POST", "/v1/tasks", body)
    after_register = _counts(server)
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, as_worker))
    assert status == 403 and "needs the user role" in message
    assert _counts(server) == after_register
    assert after_register[:2] == before[:2] and after_register[3] == before[3]

    headers = signed(user.identity, "POST", "/v1/tasks", body)
    first = raw_request(server.url, "POST", "/v1/tasks", body, headers)
    assert first.status_code == 200 and first.json()["created"] == 2
    done = _counts(server)
    assert done[:2] == (1, 2) and done[2] == after_register[2] + 1  # its nonce, with its tasks
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, headers))
    assert status == 401 and "replayed" in message
    assert _counts(server) == done

    with server.admin() as admin:
        admin.revoke("ada")
    revoked = _counts(server)
    fresh = signed(user.identity, "POST", "/v1/tasks", body)
    status, message = _error(raw_request(server.url, "POST", "/v1/tasks", body, fresh))
    assert status == 403 and "revoked" in message
    assert _counts(server) == revoked


def test_a_report_refused_by_its_authentication_changes_no_task(server: Server, tmp_path) -> None:
    user, worker = server.user(), ManualWorker(server, tmp_path)
    tag = submit(user, lambda x: x, [(1,)])
    (group,) = worker.claim()
    path = f"/v1/workers/{worker.session.worker_id}/complete"
    body = json.dumps({"release": [str(group.tasks[0].id)]}).encode()
    before = _counts(server)

    for identity, status, words in (
        (crypto.Identity.generate(), 401, "has not been granted access"),
        (user.identity, 403, "needs the worker role"),
    ):
        answer = raw_request(server.url, "POST", path, body, signed(identity, "POST", path, body))
        assert _error(answer)[0] == status and words in _error(answer)[1]
        assert _counts(server) == before
        assert user.get_tag_status(tag.name)["running"] == 1
        before = _counts(server)  # the status request's nonce

    headers = signed(worker.creds.identity, "POST", path, body)
    assert raw_request(server.url, "POST", path, body, headers).status_code == 200
    assert user.get_tag_status(tag.name)["pending"] == 1
    status, message = _error(raw_request(server.url, "POST", path, body, headers))
    assert status == 401 and "replayed" in message
    with server.app.state.ctx.index.read() as session:
        assert session.scalar(select(Task.status)) == TaskStatus.PENDING


@pytest.mark.parametrize("wait", [0, 1])
def test_a_pull_is_authenticated_in_its_first_read(server: Server, wait: int) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    path = f"/v1/tags/{tag.name}/done?wait={wait}"
    headers = signed(user.identity, "GET", path)
    first = raw_request(server.url, "GET", path, headers=headers)
    assert first.status_code == 200 and first.json()["open"] == 1 and first.json()["wait"] == wait
    status, message = _error(raw_request(server.url, "GET", path, headers=headers))
    assert status == 401 and "replayed" in message
    unknown = f"/v1/tags/nope/done?wait={wait}"
    status, message = _error(raw_request(server.url, "GET", unknown, headers=signed(user.identity, "GET", unknown)))
    assert status == 404 and "unknown tag" in message
    stranger = signed(crypto.Identity.generate(), "GET", path)
    status, message = _error(raw_request(server.url, "GET", path, headers=stranger))
    assert status == 401 and "has not been granted access" in message
