"""The API's settings: built once where the process starts, validated, then passed down.

:class:`Settings` is the API's only configuration channel: services and routes read their
limits from ``ctx.settings``. :class:`DatabaseSettings` is the part that migrating the index
needs (``hmq migrate``, ``lambdas.migrate``), readable from the environment on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Optional
from urllib.parse import quote

from hmq import crypto, defaults
from hmq._errors import ConfigurationError
from lambdas.db.secret import DatabaseSecret

ENV_PREFIX = "HMQ_"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest SigV4 presigned URL AWS accepts
DEFAULT_SECRET_URL = "postgresql+psycopg://{username}:{password}@{host}:{port}/{dbname}"


def _reader(env: Optional[Mapping[str, str]]) -> Callable[..., str]:
    """``get(NAME, default)``: the stripped value of ``HMQ_NAME`` in ``env`` (default ``os.environ``)."""
    source = os.environ if env is None else env

    def get(name: str, default: str = "") -> str:
        return source.get(ENV_PREFIX + name, default).strip()

    return get


@dataclass(frozen=True)
class DatabaseSettings:
    """Where the index is: its URL, or the Secrets Manager secret holding its credentials.

    Attributes:
        url: SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``); with
            ``secret_arn`` it may hold ``{username}``, ``{password}``, ``{host}``, ``{port}``,
            ``{dbname}`` placeholders filled from the secret (URL-quoted).
        secret_arn: AWS Secrets Manager secret (JSON) with the database credentials; when
            ``url`` is empty, the URL is ``postgresql+psycopg://{username}:{password}@{host}:{port}/{dbname}``.
    """

    url: str = ""
    secret_arn: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.url and not self.secret_arn:
            raise ConfigurationError("HMQ_DATABASE_URL (or HMQ_DATABASE_SECRET_ARN) is not set")

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> DatabaseSettings:
        """Read ``HMQ_DATABASE_URL`` and ``HMQ_DATABASE_SECRET_ARN`` only (from ``env``, default
        ``os.environ``): all that migrating needs."""
        get = _reader(env)
        return cls(url=get("DATABASE_URL"), secret_arn=get("DATABASE_SECRET_ARN") or None)

    def secret(self) -> Optional[DatabaseSecret]:
        """The Secrets Manager secret holding the database credentials, if one is named."""
        return DatabaseSecret(self.secret_arn) if self.secret_arn else None

    def resolved_url(self, secret: Optional[DatabaseSecret] = None) -> str:
        """The database URL, with credentials from Secrets Manager when a secret is named."""
        secret = secret or self.secret()
        if secret is None:
            return self.url
        template = self.url or DEFAULT_SECRET_URL
        try:
            return template.format_map({k: quote(str(v), safe="") for k, v in secret.read().items()})
        except KeyError as exc:
            raise ConfigurationError(f"the database secret lacks {exc} used in HMQ_DATABASE_URL") from None


@dataclass(frozen=True)
class Settings:
    """Everything the API needs to know about its deployment. Each field is read from the
    ``HMQ_``-prefixed, upper-cased variable of its name (``lease_seconds``: ``HMQ_LEASE_SECONDS``).

    Attributes:
        admin_public_key: the admin's public key (``hmqpk1_...``); the only key trusted to grant.
        database_url: SQLAlchemy URL of the index (see :class:`DatabaseSettings`).
        storage_url: where objects live: ``file:///dir`` (served and signed by this API) or
            ``s3://bucket?endpoint_url=...&region=...``.
        storage_secret: HMAC key for presigned URLs of the ``file://`` store (32+ bytes).
        public_url: the URL clients reach this API at, used in ``file://`` presigned URLs; when
            unset, each request's own base URL is used.
        database_secret_arn: AWS Secrets Manager secret with the database credentials (see
            :class:`DatabaseSettings`).
        lease_seconds: how long a claimed task belongs to its worker without a heartbeat.
        max_attempts: leases a task may lose before it fails.
        timeout_margin_seconds: a lease never extends past its start plus the task's timeout
            plus this margin, so a stuck worker cannot hold a task with a timeout.
        placement_timeout_seconds: a pending task no worker seen in this long could run fails;
            0 waits forever.
        placement_warning_seconds: the submit answer and the tag status warn when no worker
            seen in this long could run the tasks (what is missing, e.g. their Python version).
        presign_expiry_seconds: lifetime of a presigned URL (at most 7 days).
        max_object_bytes: largest object the store accepts.
        max_request_bytes: largest JSON request body.
        request_max_skew_seconds: largest difference between a request's timestamp and the
            API's clock; nonces are remembered for twice as long.
        migrate_on_start: run the index migrations when the app is built.
        tag_page_tasks: tasks cancelled or deleted per request when a whole tag is named (the
            answer says ``more`` until the tag is done).
        select_page: task ids per SQL statement (one ``IN`` list) when a request changes many.
        nonce_purge_seconds: most seconds between two purges of expired request nonces.
        lease_sweep_seconds: most seconds between two checks for run-out leases (a quarter
            lease if that is shorter): a lost task is requeued at most this late.
        placement_sweep_seconds: most seconds between two placement sweeps (a quarter of
            the placement timeout if that is shorter).
        upload_grace_seconds: an upload URL whose object is not registered this long after it
            was issued is swept: the object is deleted (longer than ``presign_expiry_seconds``).
        upload_sweep_seconds: most seconds between two sweeps of unregistered uploads (a quarter
            of the grace period if that is shorter).
        max_pending_uploads: most upload URLs one user or worker may hold unregistered; each may
            carry up to ``max_object_bytes``, so this bounds what a caller can leave in the store.
        metrics_retention_seconds: how long the per-minute samples of the fleet's load
            (``GET /v1/metrics``, the dashboard's fleet page) are kept (default 7 days).
        metrics_sweep_seconds: most seconds between two purges of samples older than that.
        max_wait_seconds: longest a claim or a pull may wait on the API for work or results
            (the request's own ``wait`` is cut to this); 0 answers at once.
        serverless_max_wait_seconds: the same on AWS Lambda (``create_app(serverless=True)``),
            where a waiting invocation is billed: short by default.
        wait_recheck_seconds: longest a waiting request goes without reading the index again
            when no wake-up came: a safety net only (wake-ups come in-process and, across
            processes, by PostgreSQL's NOTIFY; a lost LISTEN connection wakes every waiter once
            it is back), so by default longer than any wait: a waiting claim reads the index
            when it starts and when woken, and a missed wake-up costs at most one wait (1,000
            idle workers rechecking every 5 s were 200 index reads a second). On Lambda, where
            no wake-up reaches the invocation, a quarter of the serverless wait is used if shorter.
    """

    admin_public_key: str
    database_url: str
    storage_url: str
    storage_secret: bytes = b""
    public_url: Optional[str] = None
    database_secret_arn: Optional[str] = None
    lease_seconds: float = defaults.LEASE_SECONDS
    max_attempts: int = defaults.MAX_ATTEMPTS
    timeout_margin_seconds: float = defaults.TIMEOUT_MARGIN_SECONDS
    placement_timeout_seconds: float = defaults.PLACEMENT_TIMEOUT_SECONDS
    placement_warning_seconds: float = defaults.PLACEMENT_WARNING_SECONDS
    presign_expiry_seconds: int = defaults.PRESIGN_EXPIRY_SECONDS
    max_object_bytes: int = defaults.MAX_OBJECT_BYTES
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    request_max_skew_seconds: float = defaults.REQUEST_MAX_SKEW_SECONDS
    migrate_on_start: bool = True
    tag_page_tasks: int = defaults.MAX_TASKS_PER_REQUEST
    select_page: int = 5000
    nonce_purge_seconds: float = 60.0
    lease_sweep_seconds: float = 5.0
    placement_sweep_seconds: float = 60.0
    upload_grace_seconds: float = 3600.0
    upload_sweep_seconds: float = 60.0
    max_pending_uploads: int = 1024
    metrics_retention_seconds: float = 7 * 24 * 3600.0
    metrics_sweep_seconds: float = 3600.0
    max_wait_seconds: float = defaults.MAX_WAIT_SECONDS
    serverless_max_wait_seconds: float = 1.0
    wait_recheck_seconds: float = 60.0
    admin: crypto.PublicIdentity = field(init=False, repr=False, compare=False)
    database: DatabaseSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "admin", crypto.PublicIdentity.from_text(self.admin_public_key))
        object.__setattr__(self, "database", DatabaseSettings(self.database_url, self.database_secret_arn))
        if not self.storage_url:
            raise ConfigurationError("HMQ_STORAGE_URL is not set")
        if self.storage_url.startswith("file:") and len(self.storage_secret) < 32:
            raise ConfigurationError("a file:// store needs HMQ_STORAGE_SECRET of at least 32 bytes (64 hex digits)")
        if not 1 <= self.presign_expiry_seconds <= MAX_PRESIGN_SECONDS:
            raise ConfigurationError(
                f"presign_expiry_seconds must be 1..{MAX_PRESIGN_SECONDS} (S3 refuses longer SigV4 URLs)"
            )
        if self.lease_seconds <= 0 or self.max_attempts < 1:
            raise ConfigurationError("lease_seconds must be positive and max_attempts at least 1")
        if self.tag_page_tasks < 1 or self.select_page < 1:
            raise ConfigurationError("tag_page_tasks and select_page must be at least 1")
        self._check_intervals()
        if self.timeout_margin_seconds < 0 or self.placement_warning_seconds <= 0:
            raise ConfigurationError(
                "timeout_margin_seconds cannot be negative and placement_warning_seconds must be positive"
            )
        if self.upload_grace_seconds <= self.presign_expiry_seconds or self.upload_sweep_seconds < 0:
            raise ConfigurationError("upload_grace_seconds must exceed presign_expiry_seconds; sweeps are not negative")
        if self.max_pending_uploads < 1:
            raise ConfigurationError("max_pending_uploads must be at least 1")
        self._check_metrics()

    def _check_metrics(self) -> None:
        if self.metrics_retention_seconds < 60 or self.metrics_sweep_seconds < 0:
            raise ConfigurationError(
                "metrics_retention_seconds must be at least 60; metrics_sweep_seconds not negative"
            )

    def _check_intervals(self) -> None:
        if min(self.nonce_purge_seconds, self.lease_sweep_seconds, self.placement_sweep_seconds) < 0:
            raise ConfigurationError("sweep and purge intervals cannot be negative")
        if min(self.max_wait_seconds, self.serverless_max_wait_seconds) < 0 or self.wait_recheck_seconds <= 0:
            raise ConfigurationError("wait limits cannot be negative, wait_recheck_seconds must be positive")

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Settings:
        """Read ``HMQ_*`` variables (from ``env``, default ``os.environ``); unset ones keep their defaults."""
        get = _reader(env)
        admin = get("ADMIN_PUBLIC_KEY")
        if not admin:
            raise ConfigurationError("HMQ_ADMIN_PUBLIC_KEY is not set: it names the admin's public key (hmqpk1_...)")
        secret = get("STORAGE_SECRET")
        try:
            secret_bytes = bytes.fromhex(secret) if secret else b""
        except ValueError:
            raise ConfigurationError("HMQ_STORAGE_SECRET must be hex") from None
        numbers = {
            "lease_seconds": (float, get("LEASE_SECONDS")),
            "max_attempts": (int, get("MAX_ATTEMPTS")),
            "timeout_margin_seconds": (float, get("TIMEOUT_MARGIN_SECONDS")),
            "placement_timeout_seconds": (float, get("PLACEMENT_TIMEOUT_SECONDS")),
            "placement_warning_seconds": (float, get("PLACEMENT_WARNING_SECONDS")),
            "presign_expiry_seconds": (int, get("PRESIGN_EXPIRY_SECONDS")),
            "max_object_bytes": (int, get("MAX_OBJECT_BYTES")),
            "max_request_bytes": (int, get("MAX_REQUEST_BYTES")),
            "request_max_skew_seconds": (float, get("REQUEST_MAX_SKEW_SECONDS")),
            "tag_page_tasks": (int, get("TAG_PAGE_TASKS")),
            "select_page": (int, get("SELECT_PAGE")),
            "nonce_purge_seconds": (float, get("NONCE_PURGE_SECONDS")),
            "lease_sweep_seconds": (float, get("LEASE_SWEEP_SECONDS")),
            "placement_sweep_seconds": (float, get("PLACEMENT_SWEEP_SECONDS")),
            "upload_grace_seconds": (float, get("UPLOAD_GRACE_SECONDS")),
            "upload_sweep_seconds": (float, get("UPLOAD_SWEEP_SECONDS")),
            "max_pending_uploads": (int, get("MAX_PENDING_UPLOADS")),
            "metrics_retention_seconds": (float, get("METRICS_RETENTION_SECONDS")),
            "metrics_sweep_seconds": (float, get("METRICS_SWEEP_SECONDS")),
            "max_wait_seconds": (float, get("MAX_WAIT_SECONDS")),
            "serverless_max_wait_seconds": (float, get("SERVERLESS_MAX_WAIT_SECONDS")),
            "wait_recheck_seconds": (float, get("WAIT_RECHECK_SECONDS")),
        }
        try:
            limits = {name: kind(text) for name, (kind, text) in numbers.items() if text}
            return cls(
                admin_public_key=admin,
                database_url=get("DATABASE_URL"),
                storage_url=get("STORAGE_URL"),
                storage_secret=secret_bytes,
                public_url=get("PUBLIC_URL") or None,
                database_secret_arn=get("DATABASE_SECRET_ARN") or None,
                migrate_on_start=get("MIGRATE_ON_START", "1") not in ("0", "false", "no"),
                **limits,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid HMQ_* setting: {exc}") from None

    def to_env(self) -> dict[str, str]:
        """The inverse of :meth:`from_env`, for starting the API in another process."""
        out = {
            "HMQ_ADMIN_PUBLIC_KEY": self.admin_public_key,
            "HMQ_DATABASE_URL": self.database_url,
            "HMQ_STORAGE_URL": self.storage_url,
            "HMQ_STORAGE_SECRET": self.storage_secret.hex(),
            "HMQ_MIGRATE_ON_START": "1" if self.migrate_on_start else "0",
        }
        for name in self.numbers():
            out[ENV_PREFIX + name.upper()] = str(getattr(self, name))
        if self.public_url:
            out["HMQ_PUBLIC_URL"] = self.public_url
        if self.database_secret_arn:
            out["HMQ_DATABASE_SECRET_ARN"] = self.database_secret_arn
        return out

    @classmethod
    def numbers(cls) -> list[str]:
        """Names of the numeric settings (limits, intervals), each read from ``HMQ_`` + its upper-cased name."""
        return [f.name for f in fields(cls) if f.init and f.type in ("int", "float")]

    def resolved_database_url(self, secret: Optional[DatabaseSecret] = None) -> str:
        """The database URL, with credentials from Secrets Manager when a secret is named."""
        return self.database.resolved_url(secret)

    def replace(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
