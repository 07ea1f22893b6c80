"""HTTP for the client and the worker: signed JSON requests to the API, presigned transfers.

One ``httpx.Client`` per transport keeps connections alive and is shared by threads.
Idempotent calls are retried on connection errors and 502/503/504 with exponential backoff;
every retry is signed afresh (new timestamp and nonce).
"""

from __future__ import annotations

import json
import time
from typing import Any, Optional, TypeVar
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel

from hmq import crypto, defaults
from hmq._errors import ConfigurationError, HmqError, StorageError, Unreachable, error_for_status
from hmq._version import __version__

M = TypeVar("M", bound=BaseModel)
RETRY_STATUS = (502, 503, 504)


def _jsonable(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, BaseModel):
        return body.model_dump_json().encode()
    return json.dumps(body, separators=(",", ":")).encode()


class Transport:
    """Signed requests to one API, and presigned GET/PUT to wherever its URLs point."""

    def __init__(
        self,
        url: str,
        identity: Optional[crypto.Identity],
        *,
        timeout: float = defaults.REQUEST_TIMEOUT_SECONDS,
        retries: int = defaults.REQUEST_RETRIES,
    ) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self.retries = retries
        self.client = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"user-agent": f"hmq/{__version__}"},
        )

    def close(self) -> None:
        self.client.close()

    def _send(self, method: str, url: str, retry: bool, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors and 502/503/504 (when ``retry``) with
        exponential backoff; ``kwargs`` may be a callable ``headers`` made afresh per attempt
        (a signed request gets a new timestamp and nonce each time). Raises ``httpx.TransportError``
        when the last attempt could not connect."""
        attempts = self.retries + 1 if retry else 1
        fresh_headers = kwargs.pop("fresh_headers", None)
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            if fresh_headers is not None:
                kwargs["headers"] = fresh_headers()
            try:
                response = self.client.request(method, url, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
            else:
                if response.status_code not in RETRY_STATUS or last:
                    return response
            time.sleep(defaults.REQUEST_RETRY_BACKOFF_SECONDS * (2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Optional[dict[str, Any]] = None,
        signed: bool = True,
        retry: bool = True,
        model: Optional[type[M]] = None,
    ) -> Any:
        """Send one API request; return the decoded JSON (or ``model``); raise the mapped error."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        target = crypto.canonical_target(path, query)
        data = _jsonable(body)
        if signed and self.identity is None:
            raise ConfigurationError("this client has no key: run hmq.request_access(url) first")

        def headers() -> dict[str, str]:
            out = {"content-type": "application/json", "x-hmq-protocol": str(defaults.PROTOCOL_VERSION)}
            if signed:
                assert self.identity is not None
                out.update(crypto.sign_request(self.identity, method, target, data))
            return out

        try:
            response = self._send(method, self.url + target, retry, content=data or None, fresh_headers=headers)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the hmq API at {self.url} ({exc or type(exc).__name__}): is it running? (`hmq status`)"
            ) from None
        if response.status_code >= 400:
            raise _api_error(response)
        if model is not None:
            return model.model_validate_json(response.content)
        return response.json() if response.content else None

    def put_object(self, url: str, data: bytes) -> None:
        """Upload to a presigned PUT URL."""
        self._transfer("PUT", url, content=data)

    def get_object(self, url: str, start: Optional[int] = None, end: Optional[int] = None) -> bytes:
        """Download from a presigned GET URL; ``start``/``end`` (inclusive) ask for a byte range."""
        headers = {"range": f"bytes={start}-{end}"} if start is not None else None
        response = self._transfer("GET", url, headers=headers)
        if start is not None and response.status_code == 200:
            return response.content[start : end + 1 if end is not None else None]  # server ignored Range
        return response.content

    def _transfer(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._send(method, url, True, **kwargs)
        except httpx.TransportError as exc:
            raise StorageError(f"object store unreachable: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise StorageError(
                f"object store refused {method} ({response.status_code}): {_reason(response)}", response.status_code
            )
        return response


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300].strip() or response.reason_phrase


def _api_error(response: httpx.Response) -> HmqError:
    code = "error"
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:300].strip() or response.reason_phrase
    return error_for_status(response.status_code, code, message)
