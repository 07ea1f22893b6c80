"""Bad input gets a clear 4xx with a reason, and loses nothing already stored."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

import hmq
from hmq import crypto
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


def test_oversize_chunked_body_is_413_too(make_server) -> None:
    server = make_server(max_request_bytes=10_000)
    user = server.user()
    body = b'{"tasks": [' + b'"x",' * 5000 + b'"x"]}'
    headers = signed(user.identity, "POST", "/v1/tasks/status", body)
    with httpx.Client() as client:  # no content-length: the body arrives in chunks
        r = client.post(server.url + "/v1/tasks/status", content=iter([body[:5000], body[5000:]]), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["message"] == "request body exceeds the limit of 10000 bytes"


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/tasks/status", "/v1/uploads"])
@pytest.mark.parametrize("body", [b'{"tag": ', b"[1, 2", b"{'single': 'quotes'}"])
def test_malformed_json_is_always_400_invalid_json(server: Server, path: str, body: bytes) -> None:
    user = server.user()
    r = raw_request(server.url, "POST", path, body, signed(user.identity, "POST", path, body))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


HUGE = 2**70


def test_integers_beyond_64_bits_are_422_not_500(server: Server, tmp_path) -> None:
    from tests.helpers import ManualWorker

    user = server.user()
    tag = submit(user, lambda: 1, [()])
    for path, query in (
        (f"/v1/tags/{tag.name}/tasks", f"after={HUGE}"),
        (f"/v1/tags/{tag.name}/done", f"cursor={HUGE}:1"),
    ):
        target = crypto.canonical_target(path, query)
        r = raw_request(server.url, "GET", target, headers=signed(user.identity, "GET", target))
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", target
    worker = ManualWorker(server, tmp_path)
    worker.session.register("default", 1)
    path = f"/v1/workers/{worker.session.worker_id}/claim"
    for field in ("max_tasks", "available", "allocated", "running", "used"):
        body = json.dumps({"max_tasks": 1, "available": 1, field: HUGE}).encode()
        r = raw_request(server.url, "POST", path, body, signed(worker.creds.identity, "POST", path, body))
        assert r.status_code == 422 and field in r.json()["error"]["message"], field
    chunk = {"key": f"u/{user.identity.key_id}/c/x", "header_len": 8, "function": "0" * 64, "python": "3.11"}
    body = json.dumps({"tag": "t", "chunks": [{**chunk, "ncores": 1, "tasks": [[str(uuid.uuid4()), HUGE, 1]]}]})
    r = raw_request(
        server.url, "POST", "/v1/tasks", body.encode(), signed(user.identity, "POST", "/v1/tasks", body.encode())
    )
    assert r.status_code == 422


def test_unknown_tag_is_404(server: Server) -> None:
    user = server.user()
    with pytest.raises(hmq.NotFound, match="unknown tag 'nope_1'"):
        user.get_tag_status("nope_1")
    with pytest.raises(hmq.NotFound):
        hmq.Tag.from_queue("nope_1", api=user)


def test_unknown_route_is_json_404(server: Server) -> None:
    r = raw_request(server.url, "GET", "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


REFUSED_PACKAGES = {
    "x @ file:///tmp/pkg": "is a direct reference (name @ URL)",
    "x@https://example.com/x-1.0.tar.gz": "is a direct reference (name @ URL)",
    "https://example.com/x-1.0-py3-none-any.whl": "is a URL",
    "git+https://github.com/example/x": "is a URL",
    "/tmp/pkg": "is a local path",
    "./pkg[extra]": "is a local path",
    "x-1.0-py3-none-any.whl": "is a file name pip would install from disk",
    "--index-url=http://evil": "is a pip option",
    "-e .": "is a pip option",
    "numpy; rm -rf /": "is not a PEP 508 requirement",
    "a b c": "is not a PEP 508 requirement",
    "": "is empty",
}


def _index_rows(server: Server) -> dict[str, int]:
    from sqlalchemy import func, select

    from lambdas.db.models import Chunk, Function, Tag, Task

    with server.app.state.ctx.index.read() as session:
        return {
            m.__tablename__: session.scalar(select(func.count()).select_from(m)) for m in (Function, Tag, Chunk, Task)
        }


@pytest.mark.parametrize("entry", sorted(REFUSED_PACKAGES))
def test_packages_other_than_index_names_are_refused_before_anything_is_stored(server: Server, entry: str) -> None:
    user = server.user()
    with pytest.raises(hmq.UsageError, match="PEP 508") as refused:
        submit(user, lambda: 1, [()], packages=["numpy>=1.20; python_version >= '3.8'", entry])
    assert str(refused.value).startswith(f"packages entry {entry!r} {REFUSED_PACKAGES[entry]}")
    assert user.list_tags() == [] and server.object_keys() == []  # no function, no chunk uploaded
    assert _index_rows(server) == {"functions": 0, "tags": 0, "chunks": 0, "tasks": 0}


def test_the_api_refuses_a_direct_reference_from_a_client_that_does_not_check(server: Server) -> None:
    user = server.user()
    tag = submit(user, lambda: 1, [()], packages=["six"])  # a real function and chunk to point at
    chunk = {
        "key": f"u/{user.identity.key_id}/c/anything",
        "header_len": 8,
        "function": "0" * 64,
        "python": "3.11",
        "ncores": 1,
        "packages": ["six", "x @ file:///tmp/pkg"],
        "tasks": [["00000000-0000-4000-8000-000000000000", 10, 5]],
    }
    body = json.dumps({"tag": "direct_1", "chunks": [chunk]}).encode()
    r = raw_request(server.url, "POST", "/v1/tasks", body, signed(user.identity, "POST", "/v1/tasks", body))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "packages entry 'x @ file:///tmp/pkg' is a direct reference (name @ URL)" in r.json()["error"]["message"]
    assert [t.tag for t in user.list_tags()] == [tag.name] and _index_rows(server)["tasks"] == 1


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


def test_the_openapi_schema_lists_each_routes_error_answers(local_server: Server) -> None:
    schema = local_server.app.openapi()
    envelope = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answers = operation["responses"]
            if path == "/v1/health":
                continue
            assert "503" in answers, (method, path)
            assert answers["503"]["content"]["application/json"]["schema"] == envelope
            if path != "/v1/info":
                assert {"400", "401", "403", "413", "422"} <= set(answers), (method, path)
            if "{tag}" in path or "{worker_id}" in path or "{digest}" in path:
                assert "404" in answers, (method, path)
    assert "409" in schema["paths"]["/v1/tasks"]["post"]["responses"]


def _leaf_routes(routes: list) -> list:
    leaves = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        leaves.extend(_leaf_routes(inner.routes) if inner is not None else [route])
    return leaves


def test_each_request_matches_one_route_whatever_their_order(local_server: Server) -> None:
    """The app orders its routes by how often they are called (blobs first, the schema pages
    last), which is only safe while no request could match two of them: each route is tried
    with its parameters set to a plain value and to every fixed segment of the other routes
    (a tag named ``done``, a worker id ``packagesets``)."""
    import itertools
    import re

    from starlette.routing import Match

    leaves = _leaf_routes(local_server.app.router.routes)
    plain = {"name": "alice", "digest": "0" * 64, "tag": "t", "worker_id": str(uuid.uuid4()), "key": "u/k/f/x"}
    fixed = {seg for route in leaves for seg in route.path.split("/") if seg and "{" not in seg}
    checked = 0
    for route in leaves:
        params = re.findall(r"{(\w+)(?::path)?}", route.path)
        assert set(params) <= set(plain), route.path
        for chosen in itertools.product(*[[plain[name], *sorted(fixed)] for name in params]):
            path = route.path
            for name, value in zip(params, chosen, strict=True):
                path = path.replace("{" + name + "}", value).replace("{" + name + ":path}", value)
            for method in sorted(route.methods or ()):
                scope = {
                    "type": "http",
                    "path": path,
                    "root_path": "",
                    "method": method,
                    "headers": [],
                    "query_string": b"",
                }
                full = [other.path for other in leaves if other.matches(scope)[0] == Match.FULL]
                assert route.path in full and len(full) == 1, (method, path, full)
                checked += 1
    assert checked >= 40
