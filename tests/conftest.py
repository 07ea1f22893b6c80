from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hmq import crypto
from tests import slurm as slurm_cluster
from tests.backends import PostgresCluster, S3Server, Unavailable
from tests.helpers import Ledger, Server, local_settings, start_server

BACKENDS = ["sqlite-local", "postgres-s3"]
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def admin_key() -> crypto.AdminKey:
    return crypto.AdminKey.generate()


@pytest.fixture(scope="session", autouse=True)
def aws_test_credentials() -> Iterator[None]:
    """Never reach real AWS: S3 and Secrets Manager clients get test credentials."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the session (CI sets HMQ_REQUIRE_POSTGRES=1: failing, not skipping)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
    except Unavailable as exc:
        cluster.stop()
        if os.environ.get("HMQ_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required but cannot start: {exc}")
        pytest.skip(f"PostgreSQL cannot start here: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def slurm() -> Iterator[slurm_cluster.SlurmCluster]:
    """A real single-node Slurm cluster (munge, slurmctld, slurmd) for the session; every job and
    process of it is gone after. Skipped where Slurm is not installed, unless CI requires it
    (HMQ_REQUIRE_SLURM=1: failing, not skipping)."""
    cluster = slurm_cluster.SlurmCluster()
    try:
        cluster.start()
    except slurm_cluster.Unavailable as exc:
        cluster.stop()
        if os.environ.get("HMQ_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm is required but cannot start: {exc}")
        pytest.skip(f"Slurm cannot start here: {exc}")
    yield cluster
    cluster.stop()
    left = cluster.processes()
    assert left == [], f"Slurm processes left behind: {left}"


@pytest.fixture(scope="session")
def s3(aws_test_credentials: None) -> Iterator[S3Server]:
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that runs a server runs on both {SQLite + local store} and {PostgreSQL + S3}."""
    return request.param


def backend_urls(backend: str, request: pytest.FixtureRequest, root: Path) -> tuple[str, str]:
    if backend == "postgres-s3":
        return request.getfixturevalue("postgres").database(), request.getfixturevalue("s3").bucket()
    return f"sqlite:///{root / 'index.db'}", (root / "objects").as_uri()


def _server_factory(
    tmp_path: Path, admin_key: crypto.AdminKey, backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(clock: Any = None, **overrides: Any) -> Server:
        root = tmp_path / f"server-{len(servers)}"
        database, storage = backend_urls(backend, request, root)
        settings = local_settings(root, admin_key, database_url=database, storage_url=storage, **overrides)
        server = start_server(settings, admin_key, clock)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_server(
    tmp_path: Path, admin_key: crypto.AdminKey, backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Server]]:
    """Factory: an API under uvicorn (on each backend), with setting overrides and an optional
    ``clock`` (e.g. :class:`tests.helpers.ManualClock`)."""
    yield from _server_factory(tmp_path, admin_key, backend, request)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture
def make_local_server(
    tmp_path: Path, admin_key: crypto.AdminKey, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Server]]:
    """Factory for tests about the local store itself (SQLite and the API-served directory)."""
    yield from _server_factory(tmp_path, admin_key, "sqlite-local", request)


@pytest.fixture
def pg_server(tmp_path: Path, admin_key: crypto.AdminKey, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An API on PostgreSQL and S3 only (for what only that path has, e.g. SKIP LOCKED claims)."""
    factory = _server_factory(tmp_path, admin_key, "postgres-s3", request)
    yield next(factory)()
    next(factory, None)


@pytest.fixture
def local_server(make_local_server: Callable[..., Server]) -> Server:
    return make_local_server()


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    """What tasks report over loopback (a sandboxed task cannot write into the test's files)."""
    server = Ledger()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def worker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Package environments shared by the session's workers (built once)."""
    return tmp_path_factory.mktemp("worker-cache")


def pytest_configure(config: pytest.Config) -> None:
    # Functions defined in test modules travel by value, like a user's __main__ code.
    import cloudpickle

    import tests

    cloudpickle.register_pickle_by_value(tests)
