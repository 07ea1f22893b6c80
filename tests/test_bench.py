"""``make bench``'s side-by-side table, in a smoke run: ``python -m bench --quick --only compare``
against real local queues (SQLite, then PostgreSQL and moto's S3) and RQ with Debian's
``redis-server`` in the peers' own virtual environment (made by the bench when missing). Where
redis-server is missing, the bench prints the one-line reason instead of RQ's column."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.mark.timeout(1500)
def test_quick_compare_prints_the_table() -> None:
    if shutil.which("redis-server") is None and os.environ.get("HMQ_REQUIRE_REDIS") == "1":
        pytest.fail("redis-server is required (HMQ_REQUIRE_REDIS=1) but not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "bench", "--quick", "--only", "compare", "--peers", "rq"]
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1400)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.strip() for line in out.stdout.splitlines()]
    redis = shutil.which("redis-server") is not None
    header = (
        "| workload | hmq | RQ | hmq/RQ | hmq PG+S3 | PG+S3/hmq |"
        if redis
        else "| workload | hmq | hmq PG+S3 | PG+S3/hmq |"
    )
    assert header in lines, out.stdout
    rows = [line for line in lines if line.startswith("| ") and line != header]
    labels = ["one no-op call, warm", "500 no-op calls", "2,000 no-op calls", "500 calls returning 1 KB"]
    for label in labels:
        row = next(r for r in rows if r.startswith(f"| {label}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(c and c != "-" for c in cells), row  # every figure and ratio is there
    if not redis:
        assert any(line.startswith("RQ: left out: no redis-server") for line in lines), out.stdout
    floor = next(line for line in lines if line.startswith("floor: a warm call's eight requests"))
    assert re.search(r"p50 / p95 [\d.]+ / [\d.]+ ms", floor), floor
    assert ("x RQ's p50" in floor) == redis, floor
