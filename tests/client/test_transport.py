"""The one retry loop (``Transport._send``) against a real HTTP server that answers 503 for a
while, and against a port nobody listens on. Time is injected: the loop's clock moves by the
delays it asks to sleep."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import hmq
from hmq._transport import Transport, backoff_delay
from hmq.stack import free_port


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky(ThreadingHTTPServer):
    """Answers ``status`` (with ``Retry-After``) to the first ``failures`` requests, then 200."""

    def __init__(self, failures: int, status: int = 503, retry_after: str | None = "7") -> None:
        self.failures, self.status, self.retry_after = failures, status, retry_after
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Flaky

    def do_GET(self) -> None:
        self.server.requests += 1
        failing = self.server.requests <= self.server.failures
        body = json.dumps(
            {"error": {"code": "database", "message": "the index database is unreachable"}} if failing else {"ok": 1}
        ).encode()
        self.send_response(self.server.status if failing else 200)
        if failing and self.server.retry_after is not None:
            self.send_header("retry-after", self.server.retry_after)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky(request: pytest.FixtureRequest) -> Iterator[Flaky]:
    server = Flaky(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _transport(url: str, fake: FakeTime, deadline: float = 300.0) -> Transport:
    return Transport(url, None, retry_deadline=deadline, clock=fake.clock, sleep=fake.sleep)


@pytest.mark.parametrize("flaky", [(3,)], indirect=True)
def test_a_503_is_retried_after_its_retry_after_and_the_wait_is_said_once(
    flaky: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTime()
    url = f"http://127.0.0.1:{flaky.server_address[1]}"
    transport = _transport(url, fake)
    with caplog.at_level(logging.WARNING, logger="hmq"):
        assert transport.call("GET", "/v1/x", signed=False) == {"ok": 1}
    transport.close()
    assert flaky.requests == 4 and fake.slept == [7.0, 7.0, 7.0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"the hmq API at {url} is unavailable (HTTP 503: the index database is unreachable); retrying for up to 300 s",
        f"the hmq API at {url} answers again after 21 s",
    ]


@pytest.mark.parametrize("flaky", [(1000, 503, None)], indirect=True)
def test_retries_stop_at_the_deadline_with_the_servers_reason(flaky: Flaky) -> None:
    fake = FakeTime()
    transport = _transport(f"http://127.0.0.1:{flaky.server_address[1]}", fake, deadline=60)
    with pytest.raises(hmq.Unavailable, match="the index database is unreachable"):
        transport.call("GET", "/v1/x", signed=False)
    transport.close()
    assert sum(fake.slept) <= 60 < sum(fake.slept) + 10
    assert max(fake.slept) <= 10  # the backoff is capped
    assert flaky.requests == len(fake.slept) + 1


@pytest.mark.parametrize("flaky", [(1, 500)], indirect=True)
def test_an_internal_error_is_not_retried(flaky: Flaky) -> None:
    fake = FakeTime()
    transport = _transport(f"http://127.0.0.1:{flaky.server_address[1]}", fake)
    with pytest.raises(hmq.ServerError):
        transport.call("GET", "/v1/x", signed=False)
    transport.close()
    assert flaky.requests == 1 and fake.slept == []


@pytest.mark.parametrize("flaky", [(1,)], indirect=True)
def test_a_request_that_must_not_be_repeated_is_sent_once(flaky: Flaky) -> None:
    fake = FakeTime()
    transport = _transport(f"http://127.0.0.1:{flaky.server_address[1]}", fake)
    with pytest.raises(hmq.Unavailable):
        transport.call("GET", "/v1/x", signed=False, retry=False)
    transport.close()
    assert flaky.requests == 1


def test_a_closed_port_is_retried_with_jittered_backoff_until_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    url = f"http://127.0.0.1:{free_port()}"
    transport = _transport(url, fake, deadline=20)
    with caplog.at_level(logging.WARNING, logger="hmq"), pytest.raises(hmq.Unreachable) as info:
        transport.call("GET", "/v1/x", signed=False)
    transport.close()
    assert "retried for 20 s" in str(info.value) and "is it running?" in str(info.value)
    assert len(fake.slept) >= 4 and sum(fake.slept) <= 20
    for attempt, delay in enumerate(fake.slept):
        ceiling = min(10.0, 0.25 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"the hmq API at {url} is unavailable (") and "retrying for up to 20 s" in warning


def test_backoff_is_jittered_and_capped() -> None:
    delays = {backoff_delay(3) for _ in range(50)}
    assert len(delays) > 1 and all(1.0 <= d <= 2.0 for d in delays)
    assert all(5.0 <= backoff_delay(40) <= 10.0 for _ in range(50))
