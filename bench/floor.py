"""The floor under one warm call on this machine: its eight HTTP requests, in order, sent as hmq's
client and worker send them (kept ``http.client`` connections, :class:`hmq._http.ConnectionPool`)
to the server stack hmq's API runs on (uvicorn, Starlette), whose handlers do nothing but read the
body and answer a few bytes.

A warm hmq call is these eight requests and more (signatures, encryption, the index, waking a
waiting claim and pull, two processes); the floor is what the requests alone cost, with none of
that. Printed under ``compare``'s table beside RQ's one-call p50 from the same run: a p50 target
below the floor cannot be met by any protocol of eight requests over this stack here.

``python -m bench.floor PORT`` serves the empty handlers (what :func:`measure` starts).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.peers import percentiles
from hmq._http import ConnectionPool
from hmq.stack import free_port

BLOB = b"\0" * 600
"""A small chunk or result object, as a one-call tag has."""
BODY = b'{"x": "' + b"a" * 300 + b'"}'
"""A JSON request body of about the size of a one-call submit, claim, report or pull."""
REQUESTS = (  # a warm call's requests: the client's chunk PUT and submit, the claim's answer,
    ("PUT", "/blob/chunk", BLOB),  # the worker's chunk GET, result PUT and report, the pull's
    ("POST", "/v1/submit", BODY),  # answer and the client's result GET
    ("POST", "/v1/claim", BODY),
    ("GET", "/blob/chunk", None),
    ("PUT", "/blob/result", BLOB),
    ("POST", "/v1/complete", BODY),
    ("POST", "/v1/pull", BODY),
    ("GET", "/blob/result", None),
)
WARM_UP = 20


def app() -> Any:
    """Handlers that read the request and answer a few bytes (a GET: a small blob)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def empty(request: Request) -> Response:
        await request.body()
        if request.method == "GET":
            return Response(BLOB, media_type="application/octet-stream")
        return Response(b'{"ok": true}', media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", empty, methods=["GET", "POST", "PUT"])])


def serve(port: int) -> None:
    """The empty handlers under uvicorn, configured as ``lambdas.serve`` runs the API."""
    import uvicorn

    uvicorn.run(app(), host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=30)


@contextmanager
def empty_server() -> Iterator[str]:
    """:func:`serve` in a process of its own; yields its base URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.floor", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/up", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the empty server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(repeats: int) -> dict[str, float]:
    """p50 and p95 (ms) of a warm call's eight requests to handlers that do nothing, ``repeats``
    times after a warm-up."""
    times = []
    pool = ConnectionPool(timeout=10, headers={})
    with empty_server() as url:
        try:
            for i in range(WARM_UP + repeats):
                t0 = time.perf_counter()
                for method, path, body in REQUESTS:
                    answer = pool.request(method, url + path, None, body)
                    if answer.status_code != 200:
                        raise RuntimeError(f"the empty server answered {method} {path} with {answer.status_code}")
                if i >= WARM_UP:
                    times.append(time.perf_counter() - t0)
        finally:
            pool.close()
    return percentiles(times)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
