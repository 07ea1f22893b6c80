"""What the scenarios run against: a local queue (``hmq up``) on SQLite and the local object
store, or on a throwaway PostgreSQL cluster and an S3 server (moto's server mode), the same ones
the suite starts (:mod:`tests.backends`); and the runner of one scenario in a process of its own."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from hmq import stack

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
"""Credentials for moto's S3 server (it accepts any): never real AWS."""


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.system()}; load average {load}"
    )


@contextmanager
def postgres_s3() -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database and S3 bucket: ``(database URL, storage URL)``."""
    from tests.backends import PostgresCluster, S3Server

    os.environ.update(AWS_TEST_ENV)  # read by the API process `hmq up` starts
    cluster, s3 = PostgresCluster(), S3Server()
    try:
        cluster.start()
        s3.start()
        yield cluster.database(), s3.bucket()
    finally:
        s3.stop()
        cluster.stop()


@contextmanager
def local_queue(
    workers: int, isolation: Optional[str] = None, database: Optional[str] = None, storage: Optional[str] = None
) -> Iterator[dict[str, str]]:
    """A local queue (`hmq up`) in a temporary HMQ_HOME, its workers isolated as ``isolation``
    says (default: theirs), its index and objects where ``database`` and ``storage`` say
    (default: SQLite and a local directory); yields the environment of a client of it."""
    with tempfile.TemporaryDirectory(prefix="hmq-bench-") as tmp:
        home = Path(tmp)
        saved = os.environ.get("HMQ_ISOLATION")
        if isolation is not None:
            os.environ["HMQ_ISOLATION"] = isolation  # read by the workers `hmq up` starts
        try:
            stack.up(home, workers=workers, cores=1, database=database, storage=storage)
        finally:
            if saved is None:
                os.environ.pop("HMQ_ISOLATION", None)
            else:
                os.environ["HMQ_ISOLATION"] = saved
        try:
            yield {**os.environ, "HMQ_HOME": str(home)}
        finally:
            stack.down(home)


def scenario(name: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    """Run one scenario of :mod:`bench.scenarios` in a process of its own; its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scenarios", name, str(n)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        print(f"{name}: FAILED\n{out.stderr}", file=sys.stderr)
        sys.exit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def figure(value: Any) -> str:
    """A number as the tables print it."""
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
