"""The SQL index: engine set-up for SQLite and PostgreSQL, sessions, migrations."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from sqlalchemy import Engine, Select, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from hmq._errors import HmqError
from lambdas.db.models import Base
from lambdas.db.secret import DatabaseSecret

if TYPE_CHECKING:
    from lambdas.settings import DatabaseSettings

_Query = TypeVar("_Query", bound=Select)

MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x686D71  # pg_advisory_lock key: "hmq"


def skip_locked(session: Session, query: _Query) -> _Query:
    """PostgreSQL: concurrent callers pass rows another transaction locked; SQLite: the
    transaction already holds the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=8, max_overflow=32)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see "begin").
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the write lock up front: no deadlock upgrading a read transaction.
        mode = conn.get_execution_options().get("hmq_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_engine(url: str, *, serverless: bool = False, secret: Optional[DatabaseSecret] = None) -> Engine:
    """An engine for ``url``. ``serverless`` (AWS Lambda): one connection per invocation, which
    every transaction of the request reuses (a pool of one, without pings: it is new) and
    :meth:`Index.release` closes at the invocation's end, so no idle connection is left behind
    a frozen sandbox (and RDS Proxy, if used, sees one client per invocation). With ``secret``, each new connection takes the secret's current password,
    re-reading it once after a failed login (the password was rotated). Otherwise (uvicorn) the
    pool keeps up to :data:`POOL_KEPT` connections open and opens :data:`POOL_BURST` more only
    for a burst: a connection past the kept ones is opened for one request and closed after it
    (a new PostgreSQL backend, and statements prepared again, each time)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if serverless:
        engine = create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=False)
    else:
        engine = create_engine(url, pool_size=POOL_KEPT, max_overflow=POOL_BURST, pool_recycle=300)
        _ping_when_idle(engine, PING_IDLE_SECONDS)
    if secret is not None:
        _follow_rotation(engine, secret)
    return engine


POOL_KEPT = 15
"""PostgreSQL connections an API process under uvicorn keeps open once it used them: as many as
its busy periods have requests in the index at once (10 busy workers' claims and reports
overflowed a pool of 5, and opening connections per request took about a fifth of the API's CPU)."""

POOL_BURST = 5
"""Connections it opens beyond those under a burst, each closed after its request."""

PING_IDLE_SECONDS = 10.0
"""A pooled PostgreSQL connection unused for longer is pinged before it is handed out."""


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Ping a pooled connection on checkout only when it sat unused for ``idle`` seconds: a
    server restart or an idle timeout most likely broke it then. A connection in steady use
    (every claim checks one out) costs no round trip; one broken in between fails its request
    (503, retried by the caller), and SQLAlchemy then replaces the pool's older connections."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["hmq_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("hmq_idle_since")
        if since is None or time.monotonic() - since < idle:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # broken: the pool discards it and hands out another
            raise DisconnectionError(str(exc)) from exc


def connect(database: DatabaseSettings, *, serverless: bool = False) -> Engine:
    """An engine for the configured index; credentials come from its secret when one is named."""
    secret = database.secret()
    return make_engine(database.resolved_url(secret), serverless=serverless, secret=secret)


def _follow_rotation(engine: Engine, secret: DatabaseSecret) -> None:
    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        cparams["password"] = secret.password()
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            fresh = secret.password(refresh=True)
            if fresh == cparams["password"]:
                raise
            cparams["password"] = fresh
            return dialect.connect(*cargs, **cparams)


SQLITE_WRITER_WAIT_SECONDS = 60.0
"""Longest a write transaction on SQLite waits for the process's other writers before it asks
SQLite for the write lock anyway (whose own busy timeout, 60 s, then applies)."""


class Index:
    """Sessions over the index: ``write()`` for read-modify-write units, ``read()`` otherwise.

    On SQLite, the write transactions of one process take turns on a lock of the process before
    they ask SQLite for its write lock: a writer waiting on SQLite's busy handler sleeps 1, 2,
    5, 10 ms and longer between its tries, so under concurrent requests (claims, submits,
    reports and nonces of one API process) most of a short transaction's latency was that sleep;
    a writer waiting on the process lock starts the moment the one before it committed. Other
    processes writing the same file (the command line's admin commands) still meet SQLite's lock.

    ``before_commit`` callbacks get each session about to commit (still in its transaction),
    ``after_commit`` ones each session whose transaction was just committed (the wake-ups of
    :mod:`lambdas.service.wake` hang there); ``on_dispose`` ones run when the index is closed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write = sessionmaker(engine, expire_on_commit=False)
        self._read = sessionmaker(engine.execution_options(hmq_begin="DEFERRED"), expire_on_commit=False)
        self.before_commit: list[Callable[[Session], None]] = []
        self.after_commit: list[Callable[[Session], None]] = []
        self.on_dispose: list[Callable[[], None]] = []
        self._writer = threading.RLock() if engine.dialect.name == "sqlite" else None
        for factory in (self._write, self._read):
            event.listen(factory, "before_commit", self._committing)
            event.listen(factory, "after_commit", self._committed)

    def _committing(self, session: Session) -> None:
        for callback in self.before_commit:
            callback(session)

    def _committed(self, session: Session) -> None:
        for callback in self.after_commit:
            callback(session)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with self._turn(), self._write.begin() as session:
            yield session

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, this process's turn to write (see the class); nothing on PostgreSQL."""
        if self._writer is None:
            yield
            return
        mine = self._writer.acquire(timeout=SQLITE_WRITER_WAIT_SECONDS)
        try:
            yield
        finally:
            if mine:
                self._writer.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read.begin() as session:
            yield session

    def release(self) -> None:
        """Close the connections not in use (the end of a Lambda invocation, or before it waits)."""
        self.engine.dispose()

    def dispose(self) -> None:
        for callback in self.on_dispose:
            callback()
        self.engine.dispose()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (one path for SQLite and PostgreSQL).

    Concurrent callers are serialised: a PostgreSQL advisory lock, SQLite's write lock. On
    SQLite, foreign keys are not enforced while migrating (altering a table rebuilds it, and a
    referenced table could not be dropped and renamed) and are checked afterwards.
    """
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, where it takes effect
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise HmqError("the migration left rows whose foreign keys point nowhere")
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")


def head_revision() -> str:
    """The newest revision the migrations define."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


__all__ = ["Base", "Index", "connect", "current_revision", "head_revision", "make_engine", "migrate"]
