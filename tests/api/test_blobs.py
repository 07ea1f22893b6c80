"""The local store's presigned URLs: fetched over real HTTP; altered or expired ones refused."""

from __future__ import annotations

import httpx
import pytest

import hmq
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
