"""Any S3-compatible object store (AWS S3, MinIO, LocalStack, Ceph, R2) through boto3.

``s3://bucket[/prefix]?region=R&endpoint_url=U&addressing_style=path|virtual|auto
&presign_endpoint_url=P``. Credentials come from the standard AWS chain (environment, shared
config, the Lambda role). URLs are presigned with SigV4 (``s3v4``), which AWS and LocalStack
check: an altered or expired URL is refused. ``presign_endpoint_url`` names the endpoint as
clients see it when it differs from the API's (e.g. a container network).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qs, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hmq._batching import batched
from hmq._errors import ConfigurationError, StorageError

DELETE_BATCH = 1000  # S3's limit per DeleteObjects request
HEAD_THREADS = 8
"""Object look-ups (HEAD) one request overlaps: under botocore's connection pool (10)."""


def _look_up_threads() -> ThreadPoolExecutor:
    """The threads a store looks objects up on (started on first use)."""
    return ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="hmq-head")


def _failed(what: str, exc: Exception) -> StorageError:
    """A StorageError for a failed S3 call, with the store's HTTP status when it answered: no
    status (connection refused, reset, timed out) and 5xx are outages the API answers with 503."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return StorageError(f"cannot {what}: {exc}", int(status) if status else 500)
    return StorageError(f"cannot {what}: the object store is unreachable ({exc})")


@dataclass
class S3Store:
    bucket: str
    prefix: str = ""
    region: Optional[str] = None
    endpoint_url: Optional[str] = None
    presign_endpoint_url: Optional[str] = None
    addressing_style: str = "auto"
    _client: Any = field(default=None, init=False, repr=False)
    _presigner: Any = field(default=None, init=False, repr=False)
    _heads: ThreadPoolExecutor = field(default_factory=_look_up_threads, init=False, repr=False)

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ConfigurationError(f"storage URL {url!r} names no bucket (s3://bucket?...)")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        unknown = set(query) - {"region", "endpoint_url", "presign_endpoint_url", "addressing_style"}
        if unknown:
            raise ConfigurationError(f"unknown storage URL parameter(s): {', '.join(sorted(unknown))}")
        style = query.get("addressing_style", "auto")
        if style not in ("auto", "path", "virtual"):
            raise ConfigurationError("addressing_style must be auto, path or virtual")
        prefix = parsed.path.strip("/")
        return cls(
            bucket=parsed.netloc,
            prefix=prefix + "/" if prefix else "",
            region=query.get("region"),
            endpoint_url=query.get("endpoint_url"),
            presign_endpoint_url=query.get("presign_endpoint_url"),
            addressing_style=style,
        )

    def _make(self, endpoint: Optional[str]) -> Any:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": self.addressing_style},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        )
        return boto3.session.Session().client("s3", region_name=self.region, endpoint_url=endpoint, config=config)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make(self.endpoint_url)
        return self._client

    @property
    def presigner(self) -> Any:
        if self._presigner is None:
            self._presigner = self._make(self.presign_endpoint_url) if self.presign_endpoint_url else self.client
        return self._presigner

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _presign(self, method: str, key: str, expires: int) -> str:
        try:
            return str(
                self.presigner.generate_presigned_url(
                    method, Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires
                )
            )
        except (BotoCoreError, ClientError) as exc:
            raise _failed(f"presign {key!r}", exc) from None

    def presign_put(self, key: str, expires: int, base_url: str) -> str:
        return self._presign("put_object", key, expires)

    def presign_get(self, key: str, expires: int, base_url: str) -> str:
        return self._presign("get_object", key, expires)

    def size(self, key: str) -> Optional[int]:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _failed(f"inspect object {key!r}", exc) from None
        except BotoCoreError as exc:
            raise _failed(f"inspect object {key!r}", exc) from None

    def look_up(self, keys: list[str]) -> Callable[[], dict[str, Optional[int]]]:
        """One HEAD per key on the store's look-up threads, up to :data:`HEAD_THREADS` at a time:
        a submit of many chunks waits about one round trip, not one per chunk, and that round
        trip runs while the caller's transaction does its work."""
        if not keys:
            return dict
        assert self.client is not None  # made once, before the threads share it (boto3 clients are thread-safe)
        futures = [(key, self._heads.submit(self.size, key)) for key in keys]
        return lambda: {key: future.result() for key, future in futures}

    def delete(self, keys: list[str]) -> None:
        for part in batched(keys, DELETE_BATCH):
            objects = [{"Key": self._key(k)} for k in part]
            try:
                out = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
            except (BotoCoreError, ClientError) as exc:
                raise _failed("delete objects", exc) from None
            errors = [e for e in out.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise StorageError(f"cannot delete {len(errors)} object(s): {errors[0].get('Message')}", 500)
