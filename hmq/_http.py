"""Keep-alive HTTP/1.1 connections on the standard library, for the transport's hot path.

A warm call is eight small requests (submit, claim, fetch, upload, report, pull); through
``httpx.Client`` each costs ~0.8 ms of CPU in URL parsing, header models and cookie handling
before and after the bytes move (``http.client`` on a kept connection: ~0.2 ms), on a machine
whose cores the API, the workers and the client share. :class:`ConnectionPool` sends a request
on a kept ``http.client`` connection and answers with an :class:`Answer` (the part of an
``httpx.Response`` the transport reads), raising ``httpx`` transport errors, so that
:class:`hmq._transport.Transport` treats both paths alike.
TLS uses the context httpx would make (the same CA bundle and ``SSL_CERT_*`` variables).

A request in flight can be ended from another thread (:class:`Interrupt`): a worker told to stop
while its claim waits on the API does not sit the wait out.
"""

from __future__ import annotations

import http
import http.client
import json
import select
import socket
import ssl
import threading
from collections import defaultdict
from typing import Any, Optional, Union

import httpx

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
"""What a kept connection the server has closed meanwhile raises before any answer."""


class Answer:
    """A whole answer: status, headers (lower-case names) and body, read as ``httpx.Response``
    is (``status_code``, ``headers.get``, ``content``, ``text``, ``json()``, ``reason_phrase``)."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def reason_phrase(self) -> str:
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        return json.loads(self.content)


Response = Union[httpx.Response, Answer]
"""What a request answers: an ``httpx.Response`` (through ``httpx``) or an :class:`Answer`."""


def split(url: str) -> tuple[str, str, str]:
    """``(scheme, host[:port], path?query)`` of an absolute ``http(s)`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise httpx.UnsupportedProtocol(f"unsupported URL {url[:80]!r}")
    slash = rest.find("/")
    netloc, target = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    query = target.find("#")
    return scheme, netloc, target if query < 0 else target[:query]


class Interrupt:
    """Ends one request in flight from another thread (a waiting claim, when the worker is told
    to stop). :meth:`fire` half-closes the request's connection: the server sees its client hang
    up, while an answer already on its way is still read; ``grace`` seconds later the reading
    stops too (a server that does not notice). A request that starts after :meth:`fire` is not
    sent. The connection is not kept afterwards."""

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self.fired = False
        self._sock: Optional[socket.socket] = None
        self._lock = threading.RLock()  # fire() may run in a signal handler while attach() holds it

    def fire(self) -> None:
        """End the request (from any thread; safe from a signal handler's thread too)."""
        with self._lock:
            self.fired, sock = True, self._sock
        if sock is not None:
            _shut(sock, socket.SHUT_WR)
            timer = threading.Timer(self.grace, _shut, (sock, socket.SHUT_RDWR))
            timer.daemon = True
            timer.start()

    def attach(self, sock: Optional[socket.socket]) -> None:
        """The request is about to be sent on ``sock``; raises if it was ended already."""
        with self._lock:
            self._sock = sock  # first: a fire() from a signal handler landing here then ends it
            if self.fired:
                self._sock = None
                raise httpx.ReadError("the request was interrupted")

    def detach(self) -> None:
        with self._lock:
            self._sock = None


def _shut(sock: socket.socket, how: int) -> None:
    try:
        socket.socket.shutdown(sock, how)  # not SSLSocket.shutdown: it drops the TLS state the answer needs
    except OSError:  # closed meanwhile: nothing left to end
        pass


class ConnectionPool:
    """Idle connections per origin (at most ``max_idle`` each), shared by threads."""

    def __init__(self, timeout: float, headers: dict[str, str], max_idle: int = 32) -> None:
        self.timeout = timeout
        self.headers = headers
        self.max_idle = max_idle
        self._idle: defaultdict[tuple[str, str], list[http.client.HTTPConnection]] = defaultdict(list)
        self._lock = threading.Lock()
        self._tls: Optional[ssl.SSLContext] = None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, defaultdict(list)
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def request(
        self,
        method: str,
        url: str,
        headers: Optional[dict[str, str]],
        content: Optional[bytes],
        interrupt: Optional[Interrupt] = None,
    ) -> Answer:
        """Send one request; its whole answer. A kept connection found closed by the server is
        replaced by a new one once (unless the request was interrupted); other failures raise
        ``httpx.TransportError``."""
        scheme, netloc, target = split(url)
        sent = {**self.headers, **(headers or {})}
        while True:
            conn, reused = self._take(scheme, netloc)
            try:
                if interrupt is not None:
                    interrupt.attach(conn.sock)
                conn.request(method, target, body=content, headers=sent)
                response = conn.getresponse()
                body = response.read()
            except _STALE as exc:
                conn.close()
                if reused and not (interrupt is not None and interrupt.fired):
                    continue
                raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from None
            except BaseException as exc:
                conn.close()
                raise _transport_error(exc) from None
            finally:
                if interrupt is not None:
                    interrupt.detach()
            if response.will_close or (interrupt is not None and interrupt.fired):
                conn.close()
            else:
                self._keep(scheme, netloc, conn)
            fields: dict[str, str] = {}
            for name, value in response.getheaders():
                name = name.lower()
                fields[name] = f"{fields[name]}, {value}" if name in fields else value
            return Answer(response.status, fields, body)

    def _take(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection to the origin that the server has not closed, or a new one."""
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            while idle:
                conn = idle.pop()
                if conn.sock is not None and not _readable(conn.sock):
                    return conn, True
                conn.close()  # readable while idle: closed by the server (or garbage)
        return self._open(scheme, netloc), False

    def _open(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout)
        try:
            conn.connect()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, (TimeoutError, socket.timeout)):
                raise httpx.ConnectTimeout(str(exc) or "connect timed out") from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
            raise
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _keep(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle[(scheme, netloc)]
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read (an end of stream, when the server closed
    it). ``poll``, not ``select``: a process with many open files has descriptors above 1023."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _transport_error(exc: BaseException) -> BaseException:
    """The ``httpx`` error of a failure while a request was sent or its answer read (anything
    else, e.g. ``KeyboardInterrupt``, as it is)."""
    if isinstance(exc, httpx.TransportError):
        return exc
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return httpx.ReadTimeout(str(exc) or "timed out")
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return httpx.ReadError(f"{type(exc).__name__}: {exc}")
    return exc
