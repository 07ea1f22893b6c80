"""Claims against a large pending set nobody can run: ``measure(database_url)``.

One worker claims from an index holding ``n`` pending tasks pinned to a datacenter no worker
has (1,000,000 by default, inserted in bulk straight through SQLAlchemy): an empty claim and a
claim that finds 10 tasks it can run, each timed before and after those tasks are added. Claims
stay O(claimed): the figures after should be within about 2x of those before.

``python -m bench.pending [DATABASE_URL] [N]`` prints one JSON line; without a URL it starts a
throwaway PostgreSQL cluster from the machine's binaries (as the test suite does).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from hmq import crypto
from lambdas.db import make_engine, migrate
from lambdas.db.models import Chunk, Function, Tag, Task, TaskStatus, User, Worker
from lambdas.service.lifecycle import Lifecycle, encode_datacenters, place
from lambdas.settings import Settings

PYTHON = "3.11"
BATCH = 20_000


def _settings(database_url: str) -> Settings:
    return Settings(
        admin_public_key=crypto.AdminKey.generate().identity.public.to_text(),
        database_url=database_url,
        storage_url=f"file://{tempfile.mkdtemp(prefix='hmq-bench-')}",
        storage_secret=b"s" * 32,
    )


def _user(session: Any, name: str, role: str = "user") -> int:
    user = User(
        name=name,
        role=role,
        key_id=uuid.uuid4().hex,
        sign_pub=b"k" * 32,
        enc_pub=b"k" * 32,
        certificate="{}",
        created=time.time(),
    )
    session.add(user)
    session.flush()
    return user.id


def _tag_and_chunk(session: Any, user_id: int, name: str) -> tuple[int, int]:
    tag = Tag(user_id=user_id, name=name, created=time.time())
    function = Function(user_id=user_id, digest=uuid.uuid4().hex * 2, key=f"f/{name}", size=1, created=time.time())
    session.add_all([tag, function])
    session.flush()
    chunk = Chunk(tag_id=tag.id, function_id=function.id, key=f"c/{name}", header_len=10)
    session.add(chunk)
    session.flush()
    return tag.id, chunk.id


def _insert_pending(session: Any, user_id: int, name: str, n: int, datacenters: list[str] | None) -> None:
    """``n`` pending tasks of a new tag of ``user_id``, placed in ``datacenters``, in bulk."""
    tag_id, chunk_id = _tag_and_chunk(session, user_id, name)
    stored = encode_datacenters(datacenters)
    shared = {
        "tag_id": tag_id,
        "user_id": user_id,
        "chunk_id": chunk_id,
        "placement_id": place(session, PYTHON, 1, None, stored),
        "length": 10,
        "ncores": 1,
        "python": PYTHON,
        "packages": "[]",
        "datacenters": stored,
        "retries": 0,
        "status": TaskStatus.PENDING,
        "attempt": 0,
        "failures": 0,
        "created": time.time(),
    }
    table = Task.__table__
    assert isinstance(table, Table)
    for start in range(0, n, BATCH):
        rows = [{"id": uuid.uuid4(), "offset": 10 + i, **shared} for i in range(start, min(n, start + BATCH))]
        session.execute(insert(table), rows)


def _timed(engine: Any, claim: Callable[[Any], int], repeats: int) -> tuple[float, int]:
    """Median seconds of ``claim`` (each in a transaction rolled back after), and what it took."""
    times, taken = [], 0
    for _ in range(repeats):
        with engine.connect() as conn:
            session = Session(bind=conn)
            t0 = time.perf_counter()
            taken = claim(session)
            times.append(time.perf_counter() - t0)
            session.rollback()
    return statistics.median(times), taken


def measure(database_url: str, n: int = 1_000_000, repeats: int = 21) -> dict[str, Any]:
    """Time an empty claim and a claim finding 10 tasks, with and without ``n`` pending tasks
    pinned to a datacenter no worker has; returns the figures in milliseconds and their ratios."""
    settings = _settings(database_url)
    engine = make_engine(database_url)
    migrate(engine)
    lifecycle = Lifecycle(settings)

    worker_id = uuid.uuid4()
    with Session(engine) as session, session.begin():
        alice, bob = _user(session, "alice"), _user(session, "bob")
        worker = Worker(
            id=worker_id,
            user_id=_user(session, "w1", "worker"),
            datacenter="here",
            cores=8,
            python=PYTHON,
            registered=time.time(),
            last_seen=time.time(),
        )
        session.add(worker)
        for where in (["here"], ["nowhere"]):  # both placements exist before and after: like for like
            place(session, PYTHON, 1, None, encode_datacenters(where))

    def claim(count: int) -> Callable[[Any], int]:
        return lambda session: len(lifecycle.lease(session, session.get(Worker, worker_id), 8, count).seqs)

    def figures() -> dict[str, float]:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE"))
        empty, got_none = _timed(engine, claim(10), repeats)
        with Session(engine) as session, session.begin():
            _insert_pending(session, bob, f"ten-{uuid.uuid4().hex[:6]}", 10, ["here"])
        ten, got_ten = _timed(engine, claim(10), repeats)
        assert (got_none, got_ten) == (0, 10), (got_none, got_ten)
        with Session(engine) as session, session.begin():  # the ten go: the next round starts empty again
            session.execute(text("DELETE FROM tasks WHERE datacenters = :d"), {"d": encode_datacenters(["here"])})
        return {"empty_ms": empty * 1000, "ten_ms": ten * 1000}

    before = figures()
    t0 = time.perf_counter()
    with Session(engine) as session, session.begin():
        _insert_pending(session, alice, "unplaceable", n, ["nowhere"])
    inserted = time.perf_counter() - t0
    after = figures()
    engine.dispose()
    return {
        "backend": engine.dialect.name,
        "pending_elsewhere": n,
        "insert_seconds": inserted,
        "before": before,
        "after": after,
        "empty_ratio": after["empty_ms"] / before["empty_ms"],
        "ten_ratio": after["ten_ms"] / before["ten_ms"],
    }


def main(argv: list[str]) -> None:
    url = argv[0] if argv else None
    n = int(argv[1]) if len(argv) > 1 else 1_000_000
    cluster = None
    if url is None:
        from tests.backends import PostgresCluster

        cluster = PostgresCluster().start()
        url = cluster.database()
    try:
        print(json.dumps(measure(url, n)))
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
