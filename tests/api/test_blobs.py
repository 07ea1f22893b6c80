"""The local store's presigned URLs: fetched over real HTTP; altered or expired ones refused."""

from __future__ import annotations

import httpx
import pytest

import hmq
from lambdas.routes.blobs import SMALL_OBJECT
from tests.helpers import Server


@pytest.fixture
def stored(local_server: Server) -> tuple[Server, str, str]:
    server = local_server
    user = server.user()
    slot = user._upload_slots("chunk", 1)[0]
    user.transport.put_object(slot.url, b"0123456789" * 100)
    return server, slot.key, user.url


def _get(url: str, **kw) -> httpx.Response:
    with httpx.Client() as c:
        return c.get(url, **kw)


def test_presigned_get_with_range(stored) -> None:
    server, key, base = stored
    url = server.app.state.ctx.store.presign_get(key, 60, base)
    assert _get(url).content == b"0123456789" * 100
    part = _get(url, headers={"range": "bytes=10-14"})
    assert part.status_code == 206 and part.content == b"01234"


@pytest.mark.parametrize("size", [1000, SMALL_OBJECT, SMALL_OBJECT + 1, 3 * SMALL_OBJECT])
def test_objects_small_and_large_are_stored_and_served_alike(local_server: Server, size: int) -> None:
    """Small objects are read and written in one piece, large ones streamed: the same bytes,
    statuses and ranges either way, and what neither path answers from memory (several
    ranges, a suffix, one past the end) as HTTP says."""
    user = local_server.user()
    slot = user._upload_slots("chunk", 1)[0]
    data = bytes(i % 251 for i in range(size))
    user.transport.put_object(slot.url, data)
    url = local_server.app.state.ctx.store.presign_get(slot.key, 60, user.url)
    whole = _get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    for asked, start, end in [("bytes=10-14", 10, 15), ("bytes=7-", 7, size), ("bytes=-5", size - 5, size)]:
        part = _get(url, headers={"range": asked})
        assert (part.status_code, part.content) == (206, data[start:end]), asked
        assert part.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    end_past = _get(url, headers={"range": f"bytes={size - 3}-{size + 100}"})
    assert (end_past.status_code, end_past.content) == (206, data[-3:])
    several = _get(url, headers={"range": "bytes=0-1,5-6"})
    assert several.status_code == 206 and several.headers["content-type"].startswith("multipart/byteranges")
    assert _get(url, headers={"range": f"bytes={size}-"}).status_code == 416


@pytest.mark.parametrize("change", ["signature", "key", "expiry", "operation"])
def test_altered_presigned_urls_are_refused(stored, change: str) -> None:
    server, key, base = stored
    store = server.app.state.ctx.store
    url = store.presign_get(key, 60, base)
    if change == "signature":
        url = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    elif change == "key":
        url = url.replace(key, key[:-1] + ("a" if key[-1] != "a" else "b"))
    elif change == "expiry":
        url = url.replace("exp=", "exp=9")
    else:
        url = url.replace("op=get", "op=put")
    r = _get(url)
    assert r.status_code == 403
    assert "presigned URL" in r.json()["error"]["message"]
    assert store.size(key) == 1000  # the object is intact


def test_expired_presigned_url_is_refused(stored) -> None:
    server, key, base = stored
    url = server.app.state.ctx.store.presign_get(key, -1, base)
    r = _get(url)
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]


def test_put_url_cannot_read_and_get_url_cannot_write(stored) -> None:
    server, key, base = stored
    store = server.app.state.ctx.store
    with httpx.Client() as c:
        assert c.put(store.presign_get(key, 60, base), content=b"evil").status_code == 403
        assert c.get(store.presign_put(key, 60, base)).status_code == 403
    assert store.size(key) == 1000


def test_storage_errors_reach_the_client_clearly(stored) -> None:
    server, key, base = stored
    user = server.user()
    with pytest.raises(hmq.StorageError, match="403"):
        user.transport.get_object(server.app.state.ctx.store.presign_get(key, -1, base))


def _refusal(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("request_of", "status", "answer"),
    [
        (lambda s, k, b: ("GET", s.presign_get(k, -1, b)), 403, _refusal("forbidden", "presigned URL has expired")),
        (
            lambda s, k, b: ("GET", s.presign_get(k, 60, b)[:-4] + "0000"),
            403,
            _refusal("forbidden", "presigned URL signature does not match (altered, or for another object)"),
        ),
        (
            lambda s, k, b: ("GET", s.presign_get(k, 60, b).replace("exp=", "exp=x")),
            403,
            _refusal("forbidden", "presigned URL is malformed"),
        ),
        (lambda s, k, b: ("GET", s.presign_put(k, 60, b)), 403, _refusal("forbidden", "presigned URL is not for GET")),
        (lambda s, k, b: ("PUT", s.presign_get(k, 60, b)), 403, _refusal("forbidden", "presigned URL is not for PUT")),
        (lambda s, k, b: ("GET", f"{b}/v1/blobs/{k}"), 403, _refusal("forbidden", "presigned URL is not for GET")),
        (
            lambda s, k, b: ("GET", s.presign_get(k + "x", 60, b)),
            404,
            None,  # filled in below: names the key
        ),
        (
            lambda s, k, b: ("POST", s.presign_get(k, 60, b)),
            405,
            _refusal("method_not_allowed", "Method Not Allowed"),
        ),
        (
            lambda s, k, b: ("HEAD", s.presign_get(k, 60, b)),
            405,
            None,
        ),
    ],
)
def test_refused_blob_requests_get_the_error_envelope(stored, request_of, status: int, answer) -> None:
    """Blobs are served outside FastAPI's routes, and answered as every other route is."""
    server, key, base = stored
    method, url = request_of(server.app.state.ctx.store, key, base)
    with httpx.Client() as c:
        r = c.request(method, url)
    assert r.status_code == status
    if method == "HEAD":
        assert r.content == b""
        return
    assert r.headers["content-type"] == "application/json"
    assert r.json() == (answer or _refusal("no_such_object", f"no object {key + 'x'!r}"))


@pytest.mark.parametrize("chunked", [False, True])
def test_a_blob_over_the_limit_is_refused_and_not_stored(make_local_server, chunked: bool) -> None:
    server = make_local_server(max_object_bytes=100)
    user = server.user()
    store = server.app.state.ctx.store
    key = user._upload_slots("chunk", 1)[0].key
    too_big = b"x" * 101
    with httpx.Client() as c:
        content = iter([too_big[:50], too_big[50:]]) if chunked else too_big
        r = c.put(store.presign_put(key, 60, user.url), content=content)
    assert r.status_code == 413
    message = "object exceeds the limit of 100 bytes" if chunked else "object of 101 bytes exceeds the limit of 100"
    assert r.json() == _refusal("object_too_large", message)
    assert store.size(key) is None
