"""The schema comes from Alembic migrations only; they match the models and upgrade live data."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from lambdas.db import current_revision, head_revision, make_engine, migrate
from lambdas.db.models import Base


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres-s3":
        return request.getfixturevalue("postgres").database()
    return f"sqlite:///{tmp_path / 'm.db'}"


def test_migrations_build_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    migrate(engine)  # idempotent
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def _seed_chunk(conn: Connection, now: float) -> None:
    """User 1 (ada) with tag 1, function 1 and chunk 1, as the schemas up to 0005 store them."""
    conn.execute(
        text(
            "INSERT INTO users (name, role, key_id, sign_pub, enc_pub, certificate, created) "
            "VALUES ('ada', 'user', 'k1', :b, :b, '{}', :t)"
        ),
        {"b": b"x" * 32, "t": now},
    )
    conn.execute(text("INSERT INTO tags (user_id, name, created) VALUES (1, 't_1', :t)"), {"t": now})
    conn.execute(
        text("INSERT INTO functions (user_id, digest, key, size, created) VALUES (1, :d, 'u/k/f/1', 10, :t)"),
        {"d": "0" * 64, "t": now},
    )
    conn.execute(text("INSERT INTO chunks (tag_id, function_id, key, header_len) VALUES (1, 1, 'u/k/c/1', 100)"))


def test_upgrade_keeps_existing_rows(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (name, role, key_id, sign_pub, enc_pub, certificate, created) "
                "VALUES ('ada', 'user', 'k1', :b, :b, '{}', :t)"
            ),
            {"b": b"x" * 32, "t": time.time()},
        )
        conn.execute(text("INSERT INTO tags (user_id, name, created) VALUES (1, 't_1', :t)"), {"t": time.time()})
        conn.execute(
            text("INSERT INTO batches (tag_id, key, created) VALUES (1, 'w/k/1', :t), (1, NULL, :t), (1, NULL, :t)"),
            {"t": time.time()},
        )
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches")).scalar() == 3
        assert conn.execute(text("SELECT name FROM tags")).scalar() == "t_1"
    engine.dispose()


def test_tasks_from_before_limits_have_none(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0002")
    now = time.time()
    with engine.begin() as conn:
        _seed_chunk(conn, now)
        conn.execute(
            text(
                'INSERT INTO tasks (id, tag_id, user_id, chunk_id, "offset", length, ncores, python, packages, '
                "status, attempt, created) VALUES (:id, 1, 1, 1, 100, 10, 1, '3.11', '[]', 0, 1, :t)"
            ),
            {"id": uuid.uuid4().hex, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO workers (id, user_id, datacenter, cores, python, hostname, version, registered, "
                "last_seen, allocated, running, used) VALUES (:id, 1, 'default', 2, '3.11', 'h', 'v', :t, :t, 0, 0, 0)"
            ),
            {"id": uuid.uuid4().hex, "t": now},
        )
    migrate(engine)
    with engine.connect() as conn:
        task = conn.execute(text("SELECT timeout, memory, retries, failures, deadline, attempt FROM tasks")).one()
        assert tuple(task) == (None, None, 0, 0, None, 1)  # no limits, as their chunk headers say
        assert conn.execute(text("SELECT memory FROM workers")).scalar() is None  # not told
    engine.dispose()


def test_tasks_from_before_placements_get_theirs(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine, "0005")
    now = time.time()
    with engine.begin() as conn:
        _seed_chunk(conn, now)
        kinds = [(None, None), (",hpc,", None), (",hpc,", None), (None, 2**30), (None, None)]
        for status, (datacenters, memory) in enumerate(kinds):
            conn.execute(
                text(
                    'INSERT INTO tasks (id, tag_id, user_id, chunk_id, "offset", length, ncores, python, packages, '
                    "datacenters, memory, status, attempt, created) "
                    "VALUES (:id, 1, 1, 1, 100, 10, 1, '3.11', '[]', :dc, :mem, :status, 0, :t)"
                ),
                {"id": uuid.uuid4().hex, "dc": datacenters, "mem": memory, "status": status, "t": now},
            )
    migrate(engine)
    with engine.connect() as conn:
        placements = conn.execute(text("SELECT id, key, datacenters, memory FROM placements ORDER BY key")).all()
        assert sorted((p.key, p.datacenters, p.memory) for p in placements) == sorted(
            [("3.11|1||", None, None), ("3.11|1||,hpc,", ",hpc,", None), (f"3.11|1|{2**30}|", None, 2**30)]
        )
        by_key = {p.key: p.id for p in placements}
        got = conn.execute(text("SELECT status, placement_id FROM tasks ORDER BY status")).all()
        expected = ["3.11|1||", "3.11|1||,hpc,", "3.11|1||,hpc,", f"3.11|1|{2**30}|", "3.11|1||"]
        assert [row.placement_id for row in got] == [by_key[k] for k in expected]
        assert conn.execute(text("SELECT share FROM users")).scalar() == 1  # every user's default
    engine.dispose()
