"""The embedded stack's object store: a directory whose presigned URLs the API signs and serves.

A URL is ``{api}/v1/blobs/{key}?op=get|put&exp=UNIX&sig=HMAC`` where the HMAC-SHA256 (under
the deployment's storage secret) covers operation, key and expiry: a URL cannot be altered,
reused for another key or operation, or used after it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote, urlparse

from hmq._errors import AccessError, ConfigurationError, StorageError


@dataclass(frozen=True)
class LocalStore:
    root: Path
    secret: bytes
    max_object_bytes: int

    @classmethod
    def from_url(cls, url: str, *, secret: bytes, max_object_bytes: int) -> LocalStore:
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// storage URL must name a local path, got host {parsed.netloc!r}")
        root = Path(unquote(parsed.path))
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, secret, max_object_bytes)

    # --- presigning ------------------------------------------------------------------------
    def _signature(self, op: str, key: str, exp: int) -> str:
        return hmac.new(self.secret, f"{op}\n{key}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def _presign(self, op: str, key: str, expires: int, base_url: str) -> str:
        exp = int(time.time()) + expires
        return f"{base_url.rstrip('/')}/v1/blobs/{quote(key)}?op={op}&exp={exp}&sig={self._signature(op, key, exp)}"

    def presign_put(self, key: str, expires: int, base_url: str) -> str:
        return self._presign("put", key, expires, base_url)

    def presign_get(self, key: str, expires: int, base_url: str) -> str:
        return self._presign("get", key, expires, base_url)

    def check(self, op: str, key: str, exp: str, sig: str) -> None:
        """Refuse a presigned URL that was altered, is for another operation or has expired."""
        try:
            expiry = int(exp)
        except ValueError:
            raise AccessError("presigned URL is malformed") from None
        if not hmac.compare_digest(self._signature(op, key, expiry), sig):
            raise AccessError("presigned URL signature does not match (altered, or for another object)")
        if expiry < time.time():
            raise AccessError("presigned URL has expired")

    # --- objects ---------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"invalid object key {key!r}", 400)
        return self.root.joinpath(*parts)

    def size(self, key: str) -> Optional[int]:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def look_up(self, keys: list[str]) -> Callable[[], dict[str, Optional[int]]]:
        found = {key: self.size(key) for key in keys}  # a stat each: nothing to overlap
        return lambda: found

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.path(key).unlink()
            except FileNotFoundError:
                pass

    def temp_path(self, key: str) -> Path:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.part")
