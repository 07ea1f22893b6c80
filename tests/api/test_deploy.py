"""What the AWS deployment relies on: database credentials from Secrets Manager (moto's server
stands in for AWS) and migrations run by a CloudFormation custom resource."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import pytest
from sqlalchemy.engine import make_url

from hmq import crypto
from lambdas import migrate
from lambdas.db import head_revision
from lambdas.settings import Settings
from tests.backends import PostgresCluster, S3Server
from tests.helpers import start_server

PASSWORD = "p@ss/word:with?specials %+#"


def _role(postgres: PostgresCluster, password: str) -> tuple[str, str]:
    """A login role with ``password`` owning a new database; returns (role, database URL)."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    return role, postgres.database(owner=role)


def _secret(secret: dict[str, Any], name: str) -> str:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name=name, SecretString=json.dumps(secret))["ARN"]
    client.close()
    return str(arn)


@pytest.fixture
def secrets_endpoint(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3.endpoint)


@pytest.fixture
def secret_arn(postgres: PostgresCluster, secrets_endpoint: None) -> str:
    role, database = _role(postgres, PASSWORD.replace("'", "''"))
    url = make_url(database)
    return _secret(
        {
            "username": role,
            "password": PASSWORD,
            "host": url.host,
            "port": url.port,
            "dbname": url.database,
            "engine": "postgres",
        },
        f"hmq-{url.database}",
    )


def _settings(admin: crypto.AdminKey, **kw: Any) -> Settings:
    return Settings(admin_public_key=admin.identity.public.to_text(), storage_url="s3://unused?region=us-east-1", **kw)


def test_database_url_from_secrets_manager(secret_arn: str, admin_key: crypto.AdminKey, s3: S3Server) -> None:
    settings = _settings(admin_key, database_url="", database_secret_arn=secret_arn)
    url = make_url(settings.resolved_database_url())
    assert url.drivername == "postgresql+psycopg" and url.password == PASSWORD
    templated = _settings(
        admin_key,
        database_url="postgresql+psycopg://{username}:{password}@{host}:{port}/{dbname}?application_name=hmq",
        database_secret_arn=secret_arn,
    )
    assert make_url(templated.resolved_database_url()).query == {"application_name": "hmq"}
    # the API starts from it: PostgreSQL checks the password (scram-sha-256 over TCP)
    server = start_server(settings.replace(storage_url=s3.bucket()), admin_key)
    try:
        assert server.user("from-secret").whoami()["name"] == "from-secret"
    finally:
        server.stop()


def test_unreadable_secret_is_a_clear_error(
    admin_key: crypto.AdminKey, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hmq import ConfigurationError

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3.endpoint)
    settings = _settings(
        admin_key, database_url="", database_secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:nope"
    )
    with pytest.raises(ConfigurationError, match="cannot read the database secret"):
        settings.resolved_database_url()


class _Recorder(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def response_url() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for CloudFormation's presigned response URL."""
    _Recorder.received = []
    httpd = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/cfn-response?X-Amz-Signature=x", _Recorder.received
    httpd.shutdown()
    httpd.server_close()


def _event(url: str, kind: str) -> dict[str, Any]:
    return {
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/hmq/1",
        "RequestId": "r-1",
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::HmqSchema",
        "ResourceProperties": {"Version": "abc123"},
    }


def test_migration_custom_resource(
    postgres: PostgresCluster,
    admin_key: crypto.AdminKey,
    monkeypatch: pytest.MonkeyPatch,
    response_url: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = response_url
    for key, value in _settings(admin_key, database_url=postgres.database()).to_env().items():
        monkeypatch.setenv(key, value)
    assert migrate.handler(_event(url, "Create"), None)["Status"] == "SUCCESS"
    assert migrate.handler(_event(url, "Update"), None)["Data"] == {"Revision": head_revision()}
    assert migrate.handler(_event(url, "Delete"), None)["Status"] == "SUCCESS"
    assert [r["Status"] for r in received] == ["SUCCESS"] * 3 and received[0]["Data"] == {"Revision": head_revision()}
    monkeypatch.setenv("HMQ_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    out = migrate.handler(_event(url, "Update"), None)
    assert out["Status"] == "FAILED" and "OperationalError" in out["Reason"]
    assert received[-1]["Status"] == "FAILED" and received[-1]["PhysicalResourceId"] == "hmq-schema"


def _hmq_migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    return subprocess.run(
        [sys.executable, "-m", "hmq", "migrate"], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_hmq_migrate_takes_the_database_url(postgres: PostgresCluster) -> None:
    out = _hmq_migrate({"HMQ_DATABASE_URL": postgres.database()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"index schema at revision {head_revision()}"
    missing = _hmq_migrate({})
    assert missing.returncode != 0 and "HMQ_DATABASE_URL (or HMQ_DATABASE_SECRET_ARN) is not set" in missing.stderr
    refused = _hmq_migrate({"HMQ_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"})
    assert refused.returncode != 0 and "cannot migrate the index" in refused.stderr
    assert "Traceback" not in missing.stderr + refused.stderr


def test_hmq_migrate_takes_the_database_secret(secret_arn: str) -> None:
    out = _hmq_migrate({"HMQ_DATABASE_SECRET_ARN": secret_arn})  # no URL: all from the secret
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"index schema at revision {head_revision()}"


def test_migrations_on_postgres_match_the_models(postgres: PostgresCluster) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from lambdas.db import make_engine
    from lambdas.db import migrate as run
    from lambdas.db.models import Base

    engine = make_engine(postgres.database())
    run(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_rotated_password_is_picked_up(postgres: PostgresCluster, secrets_endpoint: None) -> None:
    from sqlalchemy import text

    from lambdas.db import make_engine
    from lambdas.db.secret import DatabaseSecret

    role, database = _role(postgres, "first")
    url = make_url(database)
    arn = _secret(
        {"username": role, "password": "first", "host": url.host, "port": url.port, "dbname": url.database},
        f"rot-{role}",
    )
    secret = DatabaseSecret(arn)
    engine = make_engine(
        url.set(username=role, password="unused").render_as_string(hide_password=False), serverless=True, secret=secret
    )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == role
    # rotation: the database and the secret change; this process still caches "first"
    postgres.execute(f"ALTER ROLE {role} PASSWORD 'second'")
    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": role, "password": "second"}))
    engine.dispose()  # the next invocation (the Lambda handler releases its connection after each)
    with engine.connect() as conn:  # the failed login re-read the secret
        assert conn.execute(text("SELECT 1")).scalar() == 1
    postgres.execute(f"ALTER ROLE {role} PASSWORD 'third'")  # the secret is now stale for good
    engine.dispose()
    with pytest.raises(Exception, match="password authentication failed"):
        engine.connect()
    client.close()
    engine.dispose()


@pytest.mark.parametrize("value", ["0", "604801", "soon"])
def test_invalid_settings_are_refused_at_start(value: str, admin_key: crypto.AdminKey) -> None:
    from hmq import ConfigurationError

    env = {
        "HMQ_ADMIN_PUBLIC_KEY": admin_key.identity.public.to_text(),
        "HMQ_DATABASE_URL": "sqlite://",
        "HMQ_STORAGE_URL": "s3://b",
        "HMQ_PRESIGN_EXPIRY_SECONDS": value,
    }
    with pytest.raises(ConfigurationError, match="presign_expiry_seconds|invalid HMQ_"):
        Settings.from_env(env)
