from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hmq import crypto
from tests.helpers import Server, local_settings, start_server


@pytest.fixture(scope="session")
def admin_key() -> crypto.AdminKey:
    return crypto.AdminKey.generate()


@pytest.fixture
def make_server(tmp_path: Path, admin_key: crypto.AdminKey) -> Iterator[Callable[..., Server]]:
    """Factory: an API under uvicorn on SQLite and the local store, with setting overrides."""
    servers: list[Server] = []

    def make(**overrides: Any) -> Server:
        root = tmp_path / f"server-{len(servers)}"
        server = start_server(local_settings(root, admin_key, **overrides), admin_key)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@pytest.fixture(scope="session")
def worker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Package environments shared by the session's workers (built once)."""
    return tmp_path_factory.mktemp("worker-cache")


def pytest_configure(config: pytest.Config) -> None:
    # Functions defined in test modules travel by value, like a user's __main__ code.
    import cloudpickle

    import tests

    cloudpickle.register_pickle_by_value(tests)
