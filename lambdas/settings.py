"""The API's settings: built once where the process starts, validated, then passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Optional
from urllib.parse import quote

from hmq import crypto, defaults
from hmq._errors import ConfigurationError
from lambdas.db.secret import DatabaseSecret

ENV_PREFIX = "HMQ_"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest SigV4 presigned URL AWS accepts
DEFAULT_SECRET_URL = "postgresql+psycopg://{username}:{password}@{host}:{port}/{dbname}"


@dataclass(frozen=True)
class Settings:
    """Everything the API needs to know about its deployment.

    Attributes:
        admin_public_key: the admin's public key (``hmqpk1_...``); the only key trusted to grant.
        database_url: SQLAlchemy URL of the index (``sqlite:///...`` or ``postgresql+psycopg://...``).
        storage_url: where objects live: ``file:///dir`` (served and signed by this API) or
            ``s3://bucket?endpoint_url=...&region=...``.
        storage_secret: HMAC key for presigned URLs of the ``file://`` store (32+ bytes).
        public_url: the URL clients reach this API at, used in ``file://`` presigned URLs; when
            unset, each request's own base URL is used.
        database_secret_arn: AWS Secrets Manager secret (JSON) with the database credentials.
            ``database_url`` may then hold ``{username}``, ``{password}``, ``{host}``, ``{port}``,
            ``{dbname}`` placeholders filled from the secret (URL-quoted); when it is empty, the
            URL is ``postgresql+psycopg://{username}:{password}@{host}:{port}/{dbname}``.
    """

    admin_public_key: str
    database_url: str
    storage_url: str
    storage_secret: bytes = b""
    public_url: Optional[str] = None
    database_secret_arn: Optional[str] = None
    lease_seconds: float = defaults.LEASE_SECONDS
    max_attempts: int = defaults.MAX_ATTEMPTS
    placement_timeout_seconds: float = defaults.PLACEMENT_TIMEOUT_SECONDS
    presign_expiry_seconds: int = defaults.PRESIGN_EXPIRY_SECONDS
    max_object_bytes: int = defaults.MAX_OBJECT_BYTES
    max_request_bytes: int = defaults.MAX_REQUEST_BYTES
    request_max_skew_seconds: float = defaults.REQUEST_MAX_SKEW_SECONDS
    migrate_on_start: bool = True
    admin: crypto.PublicIdentity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "admin", crypto.PublicIdentity.from_text(self.admin_public_key))
        if not self.database_url and not self.database_secret_arn:
            raise ConfigurationError("HMQ_DATABASE_URL (or HMQ_DATABASE_SECRET_ARN) is not set")
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

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Settings:
        """Read ``HMQ_*`` variables (from ``env``, default ``os.environ``)."""
        env = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return env.get(ENV_PREFIX + name, default).strip()

        admin = get("ADMIN_PUBLIC_KEY")
        if not admin:
            raise ConfigurationError("HMQ_ADMIN_PUBLIC_KEY is not set: it names the admin's public key (hmqpk1_...)")
        secret = get("STORAGE_SECRET")
        try:
            secret_bytes = bytes.fromhex(secret) if secret else b""
        except ValueError:
            raise ConfigurationError("HMQ_STORAGE_SECRET must be hex") from None
        try:
            return cls(
                admin_public_key=admin,
                database_url=get("DATABASE_URL"),
                storage_url=get("STORAGE_URL"),
                storage_secret=secret_bytes,
                public_url=get("PUBLIC_URL") or None,
                database_secret_arn=get("DATABASE_SECRET_ARN") or None,
                lease_seconds=float(get("LEASE_SECONDS", str(defaults.LEASE_SECONDS))),
                max_attempts=int(get("MAX_ATTEMPTS", str(defaults.MAX_ATTEMPTS))),
                placement_timeout_seconds=float(
                    get("PLACEMENT_TIMEOUT_SECONDS", str(defaults.PLACEMENT_TIMEOUT_SECONDS))
                ),
                presign_expiry_seconds=int(get("PRESIGN_EXPIRY_SECONDS", str(defaults.PRESIGN_EXPIRY_SECONDS))),
                max_object_bytes=int(get("MAX_OBJECT_BYTES", str(defaults.MAX_OBJECT_BYTES))),
                max_request_bytes=int(get("MAX_REQUEST_BYTES", str(defaults.MAX_REQUEST_BYTES))),
                migrate_on_start=get("MIGRATE_ON_START", "1") not in ("0", "false", "no"),
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
            "HMQ_LEASE_SECONDS": str(self.lease_seconds),
            "HMQ_MAX_ATTEMPTS": str(self.max_attempts),
            "HMQ_PLACEMENT_TIMEOUT_SECONDS": str(self.placement_timeout_seconds),
            "HMQ_PRESIGN_EXPIRY_SECONDS": str(self.presign_expiry_seconds),
            "HMQ_MAX_OBJECT_BYTES": str(self.max_object_bytes),
            "HMQ_MAX_REQUEST_BYTES": str(self.max_request_bytes),
            "HMQ_MIGRATE_ON_START": "1" if self.migrate_on_start else "0",
        }
        if self.public_url:
            out["HMQ_PUBLIC_URL"] = self.public_url
        if self.database_secret_arn:
            out["HMQ_DATABASE_SECRET_ARN"] = self.database_secret_arn
        return out

    def database_secret(self) -> Optional[DatabaseSecret]:
        """The Secrets Manager secret holding the database credentials, if one is named."""
        return DatabaseSecret(self.database_secret_arn) if self.database_secret_arn else None

    def resolved_database_url(self, secret: Optional[DatabaseSecret] = None) -> str:
        """The database URL, with credentials from Secrets Manager when a secret is named."""
        secret = secret or self.database_secret()
        if secret is None:
            return self.database_url
        template = self.database_url or DEFAULT_SECRET_URL
        try:
            return template.format_map({k: quote(str(v), safe="") for k, v in secret.read().items()})
        except KeyError as exc:
            raise ConfigurationError(f"the database secret lacks {exc} used in HMQ_DATABASE_URL") from None

    def replace(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]
