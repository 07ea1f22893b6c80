from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hmq import stack
from tests.conftest import BACKENDS
from tests.helpers import REPO

EXAMPLES = REPO / "examples"


class Stack:
    def __init__(self, home: Path, state: stack.StackState, backend: str) -> None:
        self.home = home
        self.state = state
        self.backend = backend

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
        return {**env, "HMQ_HOME": str(self.home), "PYTHONPATH": str(EXAMPLES)}

    def run(self, *argv: str, cwd: Path | None = None, timeout: float = 300) -> str:
        """Run a script with this stack's HMQ_HOME, as a user would; return its stdout."""
        out = subprocess.run(
            [sys.executable, *argv],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=str(cwd or self.home),
            timeout=timeout,
        )
        assert out.returncode == 0, f"{argv} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout


@pytest.fixture(scope="session", params=BACKENDS)
def embedded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`hmq up` with two workers in a temporary HMQ_HOME, once per backend: the default
    {SQLite + local store}, and `hmq up --database postgresql://... --storage s3://...`."""
    home = tmp_path_factory.mktemp("hmq-home")
    database = storage = None
    if request.param == "postgres-s3":
        database, storage = request.getfixturevalue("postgres").database(), request.getfixturevalue("s3").bucket()
    state = stack.up(home, workers=2, cores=1, database=database, storage=storage)
    try:
        yield Stack(home, state, request.param)
    finally:
        stack.down(home)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never `playwright install`); skipped without
    either unless HMQ_REQUIRE_BROWSER=1 (then it fails)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing is None and not CHROMIUM.is_file():
        missing = f"chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    if missing is not None:
        if os.environ.get("HMQ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HMQ_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
