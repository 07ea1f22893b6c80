"""Presigned S3 URLs against a server that checks SigV4 (opt-in: ``HMQ_TEST_S3_URL`` names a
LocalStack endpoint started with S3_SKIP_SIGNATURE_VALIDATION=0). moto, the default S3 server of
the suite, accepts any signature, so this needs LocalStack (or real S3)."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from lambdas.storage.s3 import S3Store
from tests.backends import S3Server

pytestmark = pytest.mark.skipif(
    not os.environ.get("HMQ_TEST_S3_URL"),
    reason="opt-in: set HMQ_TEST_S3_URL to a LocalStack endpoint that checks signatures",
)


def _status(method: str, url: str, content: bytes = b"") -> int:
    with httpx.Client() as client:
        return client.request(method, url, content=content or None).status_code


def test_sigv4_presigned_urls_are_checked(s3: S3Server) -> None:
    store = S3Store.from_url(s3.bucket())
    put = store.presign_put("u/k/c/one", 60, "")
    assert _status("PUT", put, b"payload") == 200
    get = store.presign_get("u/k/c/one", 60, "")
    with httpx.Client() as client:
        assert client.get(get).content == b"payload"
    sig_at = get.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    tampered = get[:sig_at] + ("0" if get[sig_at] != "0" else "1") + get[sig_at + 1 :]
    assert _status("GET", tampered) == 403
    assert _status("GET", get.replace("u/k/c/one", "u/k/c/two")) == 403  # another object
    assert _status("PUT", get, b"overwrite") == 403  # a GET URL cannot write
    short = store.presign_get("u/k/c/one", 1, "")
    time.sleep(2.5)
    assert _status("GET", short) == 403  # expired
    assert store.size("u/k/c/one") == len(b"payload")  # intact
