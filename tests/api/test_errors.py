"""Bad input gets a clear 4xx with a reason, and loses nothing already stored."""

from __future__ import annotations

import pytest

import hmq
from tests.helpers import Server, raw_request, signed, submit


def test_malformed_json_is_422_with_reason(server: Server) -> None:
    user = server.user()
    body = b'{"tag": "x", "chunks": "nope"}'
    r = raw_request(server.url, "POST", "/v1/tasks", body, signed(user.identity, "POST", "/v1/tasks", body))
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("invalid request: chunks")


def test_not_json_at_all(server: Server) -> None:
    user = server.user()
    body = b"\x00\x01garbage"
    r = raw_request(server.url, "POST", "/v1/tasks", body, signed(user.identity, "POST", "/v1/tasks", body))
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "invalid_json",
        "message": "request body is not valid JSON",
    }


def test_oversize_body_is_413(make_server) -> None:
    server = make_server(max_request_bytes=10_000)
    user = server.user()
    body = b'{"tasks": [' + b'"x",' * 5000 + b'"x"]}'
    r = raw_request(
        server.url, "POST", "/v1/tasks/status", body, signed(user.identity, "POST", "/v1/tasks/status", body)
    )
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]


def test_unknown_tag_is_404(server: Server) -> None:
    user = server.user()
    with pytest.raises(hmq.NotFound, match="unknown tag 'nope_1'"):
        user.get_tag_status("nope_1")
    with pytest.raises(hmq.NotFound):
        hmq.Tag.from_queue("nope_1", api=user)


def test_unknown_route_is_json_404(server: Server) -> None:
    r = raw_request(server.url, "GET", "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_invalid_packages_are_refused_before_anything_is_stored(server: Server) -> None:
    user = server.user()
    for bad in (["numpy; rm -rf /"], ["--index-url=http://evil"], ["a b c"], [""]):
        with pytest.raises(hmq.UsageError, match="PEP 508"):
            submit(user, lambda: 1, [()], packages=bad)
    assert user.list_tags() == []


def test_submitting_unregistered_objects_is_refused_and_keeps_the_tag(server: Server) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    body = {
        "tag": tag.name,
        "chunks": [
            {
                "key": f"u/{user.identity.key_id}/c/missing",
                "header_len": 8,
                "function": "0" * 64,
                "python": "3.11",
                "ncores": 1,
                "tasks": [["00000000-0000-4000-8000-000000000000", 10, 5]],
            }
        ],
    }
    with pytest.raises(hmq.BadRequest, match="has not been uploaded"):
        user._call("POST", "/v1/tasks", body)
    assert user.get_tag_status(tag.name)["total"] == 1


def test_oversize_object_is_refused_and_store_intact(make_server, backend: str) -> None:
    server = make_server(max_object_bytes=1000)
    user = server.user()
    tag = submit(user, lambda x: x, [(1,)])
    before = server.object_keys()
    slot = user._upload_slots("function", 1)[0]
    if backend == "sqlite-local":  # the API-served store refuses the upload itself
        with pytest.raises(hmq.StorageError, match="413"):
            user.transport.put_object(slot.url, b"x" * 5000)
    else:  # a presigned S3 PUT cannot limit size: registration refuses it and deletes the object
        user.transport.put_object(slot.url, b"x" * 5000)
        with pytest.raises(hmq.BadRequest, match="limit is 1000"):
            user._call("POST", "/v1/functions", {"digest": "0" * 64, "key": slot.key, "size": 5000})
    assert server.store.size(slot.key) is None
    assert server.object_keys() == before
    assert user.get_tag_status(tag.name)["total"] == 1


@pytest.mark.parametrize("key", ["u/{k}/f/../../other/f/x", "u/{k}/f/./x", "u/{k}//f/x"])
def test_object_keys_with_dot_segments_are_refused(server: Server, key: str) -> None:
    user = server.user()
    with pytest.raises(hmq.BadRequest, match="segments"):
        user._call("POST", "/v1/functions", {"digest": "0" * 64, "key": key.format(k=user.identity.key_id), "size": 1})
