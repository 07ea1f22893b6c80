"""HTTP for the client and the worker: signed JSON requests to the API, presigned transfers.

Requests go over kept ``http.client`` connections (:mod:`hmq._http`: a quarter of httpx's CPU
per request), shared by threads; through the transport's ``httpx.Client`` instead when a proxy is
configured (httpx honours the ``*_PROXY`` variables) or the client has event hooks.

The one retry loop is :meth:`Transport._send`. A request that got no answer (refused, reset,
timed out) or a 502/503/504 is sent again, with jittered exponential backoff
(:func:`backoff_delay`) and at least the server's ``Retry-After``, until ``retry_deadline``
seconds (``defaults.REQUEST_RETRY_DEADLINE_SECONDS``) after its first attempt; then the last
error is raised. Every retry is signed afresh (new timestamp and nonce). While an outage lasts
the transport says so once, as a ``hmq`` logging warning naming the URL and the reason, and once
more when it is over. Requests that must not be repeated (a claim) are sent once.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import random
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Optional, TypeVar
from urllib.parse import urlencode, urlparse

import httpx
from pydantic import BaseModel

from hmq import crypto, defaults
from hmq._errors import (
    TRANSIENT_STATUSES,
    ConfigurationError,
    HmqError,
    StorageError,
    Unreachable,
    error_for_status,
)
from hmq._http import ConnectionPool, Interrupt, Response
from hmq._version import __version__

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("hmq")


def backoff_delay(
    attempt: int,
    first: float = defaults.REQUEST_RETRY_BACKOFF_SECONDS,
    cap: float = defaults.REQUEST_RETRY_MAX_BACKOFF_SECONDS,
) -> float:
    """Seconds to wait before retry ``attempt`` (0 for the first): ``first * 2**attempt`` up to
    ``cap``, drawn at random between half and all of it."""
    ceiling = min(cap, first * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


def _retry_after(response: Optional[Response]) -> float:
    """The ``Retry-After`` of a response in seconds (0 when there is none or it is unreadable)."""
    value = response.headers.get("retry-after", "").strip() if response is not None else ""
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


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
        retry_deadline: float = defaults.REQUEST_RETRY_DEADLINE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        relocate: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.identity = identity
        self.retry_deadline = retry_deadline
        self.clock = clock
        self.sleep = sleep
        self.relocate = relocate
        self.client = httpx.Client(
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            headers={"user-agent": f"hmq/{__version__}"},
        )
        self._pool = ConnectionPool(timeout, {"user-agent": f"hmq/{__version__}"})
        self._lean = not urllib.request.getproxies()  # a proxy: httpx's handling of it
        self._outages: dict[str, float] = {}  # what is down -> since when (by ``clock``)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()
        self._pool.close()

    def _request(self, method: str, url: str, kwargs: dict[str, Any]) -> Response:
        """One attempt: on a kept connection of the pool, or through ``self.client`` (a proxy
        is configured, or event hooks watch the client)."""
        hooks = self.client.event_hooks
        interrupt: Optional[Interrupt] = kwargs.get("interrupt")
        if not self._lean or hooks["request"] or hooks["response"]:  # not interruptible: it runs its course
            return self.client.request(method, url, **{k: v for k, v in kwargs.items() if k != "interrupt"})
        return self._pool.request(method, url, kwargs.get("headers"), kwargs.get("content"), interrupt)

    def _send(self, method: str, target: str, retry: bool, **kwargs: Any) -> Response:
        """One request, retried (when ``retry``) on no answer and 502/503/504 until the retry
        deadline; see the module docstring. ``target`` is a URL, or a path of the API (which may
        move: a refused connection asks ``relocate`` for its new URL first). ``fresh_headers`` (a
        callable) makes the headers afresh per attempt (a signed request gets a new timestamp and
        nonce each time). Returns the last response; raises ``httpx.TransportError`` when the
        last attempt got none."""
        fresh_headers = kwargs.pop("fresh_headers", None)
        deadline = self.clock() + (self.retry_deadline if retry else 0.0)
        api = target.startswith("/")
        for attempt in itertools.count():
            url = self.url + target if api else target
            if fresh_headers is not None:
                kwargs["headers"] = fresh_headers()
            failure: Optional[httpx.TransportError] = None
            response: Optional[Response] = None
            try:
                response = self._request(method, url, kwargs)
            except httpx.TransportError as exc:
                if retry and isinstance(exc, httpx.ConnectError) and self._relocated():
                    if api:
                        continue
                    raise StaleURL(f"{self._part(url)} refused a URL presigned before the API moved") from None
                failure, problem = exc, str(exc) or type(exc).__name__
            else:
                if response.status_code not in TRANSIENT_STATUSES:
                    self._answered(self._part(url))
                    return response
                problem = f"HTTP {response.status_code}: {_reason(response)}"
            delay = max(backoff_delay(attempt), _retry_after(response))
            if self.clock() + delay > deadline:
                if failure is not None:
                    raise failure
                assert response is not None
                return response
            self._waiting(self._part(url), problem, deadline)
            self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _relocated(self) -> bool:
        """Whether the API moved (``relocate`` names another URL); if so, use it from now on."""
        moved = self.relocate() if self.relocate is not None else None
        if not moved or moved.rstrip("/") == self.url:
            return False
        log.warning("the hmq API moved from %s to %s", self.url, moved)
        self.url = moved.rstrip("/")
        return True

    def _part(self, url: str) -> str:
        """What a URL reaches, as the outage warnings name it."""
        if url.startswith(self.url):
            return f"the hmq API at {self.url}"
        parsed = urlparse(url)
        return f"the object store at {parsed.scheme}://{parsed.netloc}"

    def _waiting(self, what: str, problem: str, deadline: float) -> None:
        """The first failed attempt of an outage: say what is awaited, once for all requests."""
        with self._lock:
            if what in self._outages:
                return
            self._outages[what] = self.clock()
        left = max(0.0, deadline - self.clock())
        log.warning("%s is unavailable (%s); retrying for up to %.0f s", what, problem, left)

    def _answered(self, what: str) -> None:
        if what not in self._outages:  # the common case: no lock
            return
        with self._lock:
            since = self._outages.pop(what, None)
        if since is not None:
            log.warning("%s answers again after %.0f s", what, self.clock() - since)

    def _retried(self, retry: bool) -> str:
        return f", retried for {self.retry_deadline:.0f} s" if retry and self.retry_deadline > 0 else ""

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
        interrupt: Optional[Interrupt] = None,
    ) -> Any:
        """Send one API request; return the decoded JSON (or ``model``); raise the mapped error.
        ``interrupt`` can end it from another thread (:class:`hmq._http.Interrupt`)."""
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
            response = self._send(
                method, target, retry, content=data or None, fresh_headers=headers, interrupt=interrupt
            )
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the hmq API at {self.url} ({exc or type(exc).__name__}{self._retried(retry)}): "
                "is it running? (`hmq status`)"
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

    def _transfer(self, method: str, url: str, **kwargs: Any) -> Response:
        try:
            response = self._send(method, url, True, **kwargs)
        except httpx.TransportError as exc:
            raise StorageError(
                f"the object store is unreachable ({exc or type(exc).__name__}{self._retried(True)})"
            ) from None
        if response.status_code >= 400:
            raise StorageError(
                f"object store refused {method} ({response.status_code}): {_reason(response)}", response.status_code
            )
        return response


class StaleURL(StorageError):
    """A presigned URL of the API's old address was refused: the API moved (``hmq down; hmq
    up`` found its port taken, :meth:`Transport._relocated`). Ask the API for a new URL."""


def _reason(response: Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300].strip() or response.reason_phrase


def _api_error(response: Response) -> HmqError:
    code = "error"
    try:
        err = response.json()["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:300].strip() or response.reason_phrase
    return error_for_status(response.status_code, code, message)
