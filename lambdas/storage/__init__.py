"""Object stores: where function, chunk and result blobs live.

The API only ever hands out short-lived presigned URLs; clients and workers never hold storage
credentials, and no blob passes through the API (except in the local store, where the API is
the object server itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional, Protocol
from urllib.parse import urlparse

from hmq._errors import ConfigurationError


class ObjectStore(Protocol):
    """What the API needs from an object store."""

    def presign_put(self, key: str, expires: int, base_url: str) -> str: ...

    def presign_get(self, key: str, expires: int, base_url: str) -> str: ...

    def size(self, key: str) -> Optional[int]:
        """Size in bytes of the object at ``key``, or ``None`` when there is none."""
        ...

    def look_up(self, keys: list[str]) -> Callable[[], dict[str, Optional[int]]]:
        """Start looking up the :meth:`size` of each of ``keys``; the function returned waits for
        them (and raises the first failure, in ``keys``' order). A store whose look-ups are
        round trips runs them meanwhile, overlapped, so that the caller's other work (its
        index transaction) hides them."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete objects; keys that do not exist are ignored."""
        ...


def store_from_url(url: str, *, secret: bytes = b"", max_object_bytes: int = 0) -> ObjectStore:
    """``file:///dir`` for the local store, ``s3://bucket?...`` for any S3-compatible server."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from lambdas.storage.local import LocalStore

        return LocalStore.from_url(url, secret=secret, max_object_bytes=max_object_bytes)
    if scheme == "s3":
        from lambdas.storage.s3 import S3Store

        return S3Store.from_url(url)
    raise ConfigurationError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket")
