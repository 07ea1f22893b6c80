"""Outages of each part a run depends on, injected on the real stacks mid-run: the object store
refusing connections, the index database stopped, the API process killed and restarted.

Each leaves the tag exact (every result, no error) and every task run exactly once: tasks report
each execution to a ledger over loopback (a sandboxed task cannot write into the test's files).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hmq
from hmq import crypto
from tests.backends import PostgresCluster, S3Server, TcpProxy, Unavailable
from tests.helpers import (
    Ledger,
    Server,
    local_settings,
    raw_request,
    signed,
    start_server,
    start_server_process,
    submit,
    tell,
    wait_for,
)

N = 300
OUTAGE_SECONDS = 20.0


def _work(port: int, x: int) -> int:
    import time

    tell(port, "ran", x=x)
    time.sleep(0.05)
    return x * x


def _start(server: Server, tmp_path: Path, ledger: Ledger, *worker_args: str) -> hmq.Tag:
    """Two one-core workers and a tag of N calls; returns once the run is under way."""
    for i in range(2):
        server.start_worker(tmp_path / f"w{i}", extra=worker_args)
    tag = submit(server.user(), _work, [(ledger.port, x) for x in range(N)])
    ledger.wait("ran", 40)
    return tag


def _pull_in_background(tag: hmq.Tag) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def pull() -> None:
        try:
            out["left"] = tag.pull(blocking=True)
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=pull, name="blocking-pull")
    thread.start()
    return thread, out


def _assert_exact(tag: hmq.Tag, ledger: Ledger) -> None:
    errors = [e for e in tag.errors if e]
    assert errors == [] and tag.n_errors == 0
    assert list(tag.results) == [x * x for x in range(N)]
    runs = Counter(r["x"] for r in ledger.of("ran"))
    assert runs == Counter(range(N))  # every task ran, and only once


def _worker_logs(server: Server) -> str:
    return "".join(Path(p.log_path).read_text(errors="replace") for p in server.workers)  # type: ignore[attr-defined]


@pytest.fixture
def tmp_dirs(tmp_path: Path) -> Path:
    for i in range(2):
        (tmp_path / f"w{i}").mkdir()
    return tmp_path


def test_the_object_store_refusing_connections_fails_no_task(
    tmp_dirs: Path, admin_key: crypto.AdminKey, postgres: PostgresCluster, s3: S3Server, ledger: Ledger
) -> None:
    proxy = TcpProxy(s3.endpoint.removeprefix("http://"))
    storage = s3.bucket(endpoint=proxy.url)
    settings = local_settings(tmp_dirs / "api", admin_key, database_url=postgres.database(), storage_url=storage)
    server = start_server(settings, admin_key)
    try:
        # A short retry deadline: the workers give up on single requests during the outage, so
        # they hand tasks back and keep results, rather than only waiting inside one request.
        tag = _start(server, tmp_dirs, ledger, "--retry-deadline", "3")
        proxy.refuse()
        stopped = time.monotonic()
        user = server.clients[-1]
        body = json.dumps({"digest": "0" * 64, "key": f"u/{user.identity.key_id}/f/{'0' * 32}", "size": 1}).encode()
        headers = signed(user.identity, "POST", "/v1/functions", body)
        response = raw_request(server.url, "POST", "/v1/functions", body, headers)  # the API looks at the object
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        error = response.json()["error"]
        assert error["code"] == "storage" and error["message"].startswith("the object store is unreachable")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        proxy.accept()
        assert tag.pull(blocking=True) == 0
        _assert_exact(tag, ledger)
        assert server.clients[-1].get_tag_status(tag.name)["failed"] == 0
        logs = _worker_logs(server)
        assert "handing back" in logs and "the object store is unreachable" in logs
    finally:
        server.stop()
        proxy.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this test's own, which it stops and starts again."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except Unavailable as exc:
        cluster.stop()
        if os.environ.get("HMQ_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but cannot start: {exc}")
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    if not cluster.local:
        pytest.skip("HMQ_TEST_DATABASE_URL names a server this test cannot stop")
    yield cluster
    cluster.stop()


def test_the_index_database_stopped_for_a_while(
    tmp_dirs: Path, admin_key: crypto.AdminKey, own_postgres: PostgresCluster, ledger: Ledger
) -> None:
    settings = local_settings(tmp_dirs / "api", admin_key, database_url=own_postgres.database())
    server = start_server(settings, admin_key)
    try:
        tag = _start(server, tmp_dirs, ledger)
        pull, pulled = _pull_in_background(tag)  # started before the outage
        user = server.clients[-1]
        path = f"/v1/tags/{tag.name}"
        own_postgres.halt()
        stopped = time.monotonic()

        def answer() -> Any:
            response = raw_request(server.url, "GET", path, headers=signed(user.identity, "GET", path))
            return response if response.status_code != 200 else None

        response = wait_for(answer, timeout=30, interval=0.5, what="the API to notice the database is down")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == {
            "code": "database",
            "message": "the index database is unreachable; retry later",
        }
        assert int(response.headers["retry-after"]) > 0
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        own_postgres.resume()
        pull.join(timeout=240)
        assert not pull.is_alive() and pulled == {"left": 0}, pulled
        _assert_exact(tag, ledger)
    finally:
        server.stop()


def test_a_blocking_pull_rides_through_an_api_restart(
    tmp_dirs: Path, admin_key: crypto.AdminKey, ledger: Ledger
) -> None:
    settings = local_settings(tmp_dirs / "api", admin_key)  # SQLite, and the API serves the objects too
    server = start_server_process(settings, admin_key, tmp_dirs / "api.log")
    try:
        tag = _start(server, tmp_dirs, ledger)
        pull, pulled = _pull_in_background(tag)
        server.kill()
        time.sleep(5)  # clients and workers find the port closed for a while
        server.restart()
        pull.join(timeout=240)
        assert not pull.is_alive() and pulled == {"left": 0}, pulled
        _assert_exact(tag, ledger)
    finally:
        server.stop()
