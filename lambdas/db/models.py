"""The index: metadata only. No column holds a plaintext argument, function or result."""

from __future__ import annotations

import enum
import uuid
from typing import Optional

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT primary keys are not rowid aliases on SQLite (no autoincrement there): use INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TaskStatus(enum.IntEnum):
    """Task lifecycle: pending -> running -> completed | failed; cancelled before completion."""

    PENDING = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    CANCELLED = 4

    @property
    def label(self) -> str:
        return self.name.lower()


OPEN_STATES = (TaskStatus.PENDING, TaskStatus.RUNNING)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    sign_pub: Mapped[bytes] = mapped_column(LargeBinary(32))
    enc_pub: Mapped[bytes] = mapped_column(LargeBinary(32))
    certificate: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)
    revoked: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    share: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    """The user's weight when claims are shared between users with pending tasks (admin-set, default 1)."""


class Nonce(Base):
    """Nonces of recent signed requests: a replay inside the clock-skew window is refused."""

    __tablename__ = "nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires: Mapped[float] = mapped_column(Float, index=True)


class ComputeKey(Base):
    """Admin-signed statements of the compute keys that clients seal call keys to."""

    __tablename__ = "compute_keys"
    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    statement: Mapped[str] = mapped_column(Text)
    issued: Mapped[float] = mapped_column(Float)


class Function(Base):
    __tablename__ = "functions"
    __table_args__ = (UniqueConstraint("user_id", "digest"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    digest: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[float] = mapped_column(Float)
    corrupt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A worker found the object corrupt: the next registration of the function replaces it."""


class Tag(Base):
    """A user's tag. Names are the user's own: another user may have a tag of the same name."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    created: Mapped[float] = mapped_column(Float)
    placements: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    """JSON: the placements its tasks were submitted with (``[python, datacenters, ncores,
    memory, packages]`` each), so the tag status reads them without scanning its tasks. NULL:
    a tag made before they were kept (its pending tasks are scanned instead)."""


class Chunk(Base):
    """One submitted object holding many encrypted calls."""

    __tablename__ = "chunks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), index=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id"))
    key: Mapped[str] = mapped_column(String(512), unique=True)
    header_len: Mapped[int] = mapped_column(Integer)


class Batch(Base):
    """A set of tasks that finished together: a result object, or a closure without one
    (cancellation, failure decided by the API). Its increasing id is the pull cursor."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), index=True)
    key: Mapped[Optional[str]] = mapped_column(String(512), nullable=True, unique=True)
    created: Mapped[float] = mapped_column(Float)


class Placement(Base):
    """Where tasks may run: one row per distinct Python version, cores, memory and datacenters
    of submitted tasks (``key`` is their canonical text). A claim finds the placements its worker
    can run among these few rows, then takes pending tasks of those through ``ix_tasks_pending``,
    so tasks no worker can run cost it nothing."""

    __tablename__ = "placements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    python: Mapped[str] = mapped_column(String(16))
    ncores: Mapped[int] = mapped_column(Integer)
    memory: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # bytes per call; NULL: no limit
    datacenters: Mapped[Optional[str]] = mapped_column(Text, nullable=True)  # ",dc1,dc2,"; NULL: anywhere


PENDING_ONLY = text(f"status = {int(TaskStatus.PENDING)}")
"""The predicate of the partial index of pending tasks; a query uses that index only when its
own condition is written the same way (a literal, not a bound parameter)."""

INDEXED_PACKAGES_CHARS = 600
"""Longest package set (its stored JSON, in characters) indexed with its text in
``ix_tasks_pending_packages``: at 4 bytes a character at most, within the size of a PostgreSQL
btree entry (2,704 bytes). Pending tasks with a longer set are in ``ix_tasks_pending_long_packages``."""

PENDING_PACKAGES = text(
    f"status = {int(TaskStatus.PENDING)} AND packages <> '[]' AND length(packages) <= {INDEXED_PACKAGES_CHARS}"
)
PENDING_LONG_PACKAGES = text(f"status = {int(TaskStatus.PENDING)} AND length(packages) > {INDEXED_PACKAGES_CHARS}")
"""The predicates of the partial indexes of pending tasks' package sets (see :mod:`lambdas.service.queue`)."""


class Task(Base):
    """A task. Its id (made by the submitting client) is unique per user, so that no one learns
    whether another user's task has some id; a worker never holds two tasks of one id."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("user_id", "id"),
        Index("ix_tasks_id", "id"),
        Index(
            "ix_tasks_pending",
            "placement_id",
            "user_id",
            "seq",
            sqlite_where=PENDING_ONLY,
            postgresql_where=PENDING_ONLY,
        ),
        Index(
            "ix_tasks_pending_packages",
            "placement_id",
            "packages",
            sqlite_where=PENDING_PACKAGES,
            postgresql_where=PENDING_PACKAGES,
        ),
        Index(
            "ix_tasks_pending_long_packages",
            "placement_id",
            sqlite_where=PENDING_LONG_PACKAGES,
            postgresql_where=PENDING_LONG_PACKAGES,
        ),
        Index("ix_tasks_tag_seq", "tag_id", "seq"),
        Index("ix_tasks_tag_batch", "tag_id", "batch_id", "seq"),
        Index("ix_tasks_tag_status", "tag_id", "status"),
        Index("ix_tasks_user_status", "user_id", "status"),
        Index("ix_tasks_status_created", "status", "created"),
        Index("ix_tasks_lease", "status", "lease_until"),
        Index("ix_tasks_worker", "worker_id"),
        Index("ix_tasks_chunk", "chunk_id"),
    )
    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(Uuid)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("chunks.id"))
    placement_id: Mapped[int] = mapped_column(ForeignKey("placements.id"))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)
    ncores: Mapped[int] = mapped_column(Integer)
    python: Mapped[str] = mapped_column(String(16))
    packages: Mapped[str] = mapped_column(Text, default="[]")
    datacenters: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    timeout: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # seconds per call; NULL: no limit
    memory: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # bytes per call; NULL: no limit
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[int] = mapped_column(SmallInteger, default=TaskStatus.PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # leases lost (worker gone)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # runs that failed, requeued
    worker_id: Mapped[Optional[uuid.UUID]] = mapped_column(Uuid, nullable=True)
    lease_until: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    deadline: Mapped[Optional[float]] = mapped_column(Float, nullable=True)  # no lease extends past it
    batch_id: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    created: Mapped[float] = mapped_column(Float)


class Upload(Base):
    """An upload URL handed out whose object is not registered yet. Registering the object
    removes the row; the sweep deletes objects (and rows) older than the grace period. At most
    ``max_pending_uploads`` per user, and per worker for a worker's result uploads."""

    __tablename__ = "uploads"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    issued: Mapped[float] = mapped_column(Float, index=True)
    # the worker a result upload URL was issued to: workers sharing one identity each have a
    # quota of their own (NULL: a user's upload, counted per user)
    worker_id: Mapped[Optional[uuid.UUID]] = mapped_column(Uuid, nullable=True, index=True)


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    datacenter: Mapped[str] = mapped_column(String(200))
    cores: Mapped[int] = mapped_column(Integer)
    python: Mapped[str] = mapped_column(String(16))
    memory: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # bytes; NULL: not told
    isolation: Mapped[str] = mapped_column(String(16), default="unknown", server_default="unknown")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    registered: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    allocated: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[int] = mapped_column(Integer, default=0)
    sampled: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """The last minute (unix time // 60) this worker's load was sampled in (``metric_samples``)."""
    building: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    """JSON: the package environments it reported building, ``[{"packages": [...], "since":
    API time}]``; NULL: none reported."""


class MetricSample(Base):
    """A worker's load in one minute, taken at its first claim or heartbeat of the minute
    (:mod:`lambdas.service.metrics`). Kept for ``metrics_retention_seconds``."""

    __tablename__ = "metric_samples"
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix time // 60
    worker_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    datacenter: Mapped[str] = mapped_column(String(200))
    cores: Mapped[int] = mapped_column(Integer)
    allocated: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer)


class MetricUsage(Base):
    """Cores of one user's tasks running on one worker in one minute: a minute of CPU time each."""

    __tablename__ = "metric_usage"
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cores: Mapped[int] = mapped_column(Integer)


class MetricQueue(Base):
    """The whole queue in one minute: tasks pending and running, counted once per minute."""

    __tablename__ = "metric_queue"
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    pending: Mapped[int] = mapped_column(BigInteger)
    running: Mapped[int] = mapped_column(BigInteger)
