"""The transport's kept connections (``hmq._http``) against a real HTTP/1.1 server: reused
between requests, replaced when the server closed them meanwhile, dropped when the server says
so, shared by threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from hmq._http import ConnectionPool, split
from hmq._transport import Transport


class Counting(ThreadingHTTPServer):
    """Answers ``{"path": ...}``; counts the connections it accepted; ``close_after`` answers
    per connection, then closes it without saying so (as an idle timeout does)."""

    daemon_threads = True

    def __init__(self, close_after: int = 0, say_close: bool = False) -> None:
        self.connections = 0
        self.close_after, self.say_close = close_after, say_close
        self.bodies: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Counting
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.answered = 0

    def _answer(self) -> None:
        body = f'{{"path": "{self.path}"}}'.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        if self.server.say_close:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.answered += 1
        if self.server.close_after and self.answered >= self.server.close_after:
            self.close_connection = True

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self.server.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self._answer()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[type[Counting]]:
    servers: list[Counting] = []

    def start(*args: object, **kwargs: object) -> Counting:
        server = Counting(*args, **kwargs)  # type: ignore[arg-type]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_urls_split_into_origin_and_target() -> None:
    assert split("http://h:1/a/b?x=1&y=%2F#frag") == ("http", "h:1", "/a/b?x=1&y=%2F")
    assert split("https://h") == ("https", "h", "/")
    with pytest.raises(httpx.UnsupportedProtocol):
        split("ftp://h/x")


def test_requests_share_one_kept_connection(serve: type[Counting]) -> None:
    server = serve()
    transport = Transport(server.url, None, retry_deadline=0)
    assert [transport.call("GET", f"/n/{i}", signed=False)["path"] for i in range(5)] == [f"/n/{i}" for i in range(5)]
    transport.put_object(server.url + "/blob", b"\x00payload")
    assert server.bodies == [b"\x00payload"]
    assert server.connections == 1
    transport.close()


def test_a_connection_the_server_closed_meanwhile_is_replaced(serve: type[Counting]) -> None:
    server = serve(close_after=1)
    pool = ConnectionPool(10.0, {})
    for i in range(3):
        response = pool.request("GET", f"{server.url}/again/{i}", None, None)
        assert response.status_code == 200 and response.json() == {"path": f"/again/{i}"}
    assert server.connections == 3
    pool.close()


def test_a_connection_the_server_says_it_closes_is_not_kept(serve: type[Counting]) -> None:
    server = serve(say_close=True)
    pool = ConnectionPool(10.0, {})
    pool.request("GET", f"{server.url}/x", None, None)
    assert not any(pool._idle.values())


def test_threads_share_the_pool(serve: type[Counting]) -> None:
    server = serve()
    pool = ConnectionPool(10.0, {"user-agent": "test"})
    with ThreadPoolExecutor(4) as threads:
        paths = list(
            threads.map(lambda i: pool.request("GET", f"{server.url}/t/{i}", None, None).json()["path"], range(40))
        )
    assert paths == [f"/t/{i}" for i in range(40)]
    assert 1 <= server.connections <= 4
    pool.close()


def test_a_refused_connection_is_a_connect_error() -> None:
    server = Counting()
    url = server.url
    server.server_close()  # nobody listens there now
    with pytest.raises(httpx.ConnectError):
        ConnectionPool(10.0, {}).request("GET", url + "/x", None, None)
