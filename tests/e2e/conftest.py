from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hmq import stack
from tests.helpers import REPO

EXAMPLES = REPO / "examples"


class Stack:
    def __init__(self, home: Path, state: stack.StackState) -> None:
        self.home = home
        self.state = state

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


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`hmq up` with two workers in a temporary HMQ_HOME, for the whole session."""
    home = tmp_path_factory.mktemp("hmq-home")
    state = stack.up(home, workers=2, cores=1)
    try:
        yield Stack(home, state)
    finally:
        stack.down(home)
