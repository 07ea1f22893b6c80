from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture
def bwrap() -> str:
    """bubblewrap on PATH; skipped without it unless HMQ_REQUIRE_BWRAP=1 (then it fails)."""
    path = shutil.which("bwrap")
    if path is None:
        if os.environ.get("HMQ_REQUIRE_BWRAP") == "1":
            pytest.fail("HMQ_REQUIRE_BWRAP=1 but bubblewrap (bwrap) is not on PATH")
        pytest.skip("bubblewrap (bwrap) is not installed")
    return path
