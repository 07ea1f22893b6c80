"""Settings are the API's one configuration channel: every limit is a field, read from HMQ_*."""

from __future__ import annotations

import pytest

from hmq import ConfigurationError, crypto
from lambdas.settings import DatabaseSettings, Settings


def _settings(**kw: object) -> Settings:
    public = crypto.AdminKey.generate().identity.public.to_text()
    return Settings(admin_public_key=public, database_url="sqlite://", storage_url="s3://bucket", **kw)  # type: ignore[arg-type]


def test_every_numeric_setting_survives_the_environment() -> None:
    numbers = Settings.numbers()
    assert {"lease_seconds", "tag_page_tasks", "select_page", "nonce_purge_seconds"} <= set(numbers)
    assert {"lease_sweep_seconds", "placement_sweep_seconds", "request_max_skew_seconds"} <= set(numbers)
    defaults = _settings()
    changed = {name: type(getattr(defaults, name))(getattr(defaults, name) * 2 + 1) for name in numbers}
    changed["presign_expiry_seconds"] = 1234  # doubled would pass the SigV4 limit
    original = defaults.replace(**changed)
    env = original.to_env()
    assert {f"HMQ_{name.upper()}" for name in numbers} <= set(env)
    again = Settings.from_env(env)
    assert again == original
    assert all(getattr(again, name) == value for name, value in changed.items())


def test_unset_variables_keep_their_defaults() -> None:
    minimal = _settings()
    env = {
        k: v
        for k, v in minimal.to_env().items()
        if k in ("HMQ_ADMIN_PUBLIC_KEY", "HMQ_DATABASE_URL", "HMQ_STORAGE_URL")
    }
    assert Settings.from_env(env) == minimal


@pytest.mark.parametrize("field", ["tag_page_tasks", "select_page"])
def test_pages_must_hold_a_task(field: str) -> None:
    with pytest.raises(ConfigurationError, match="at least 1"):
        _settings(**{field: 0})


def test_sweep_intervals_cannot_be_negative() -> None:
    with pytest.raises(ConfigurationError, match="cannot be negative"):
        _settings(lease_sweep_seconds=-1)


def test_migrating_needs_only_the_database_settings() -> None:
    env = {"HMQ_DATABASE_URL": "sqlite:///index.db"}
    assert DatabaseSettings.from_env(env) == DatabaseSettings(url="sqlite:///index.db")
    with pytest.raises(ConfigurationError, match="HMQ_ADMIN_PUBLIC_KEY"):
        Settings.from_env(env)  # serving needs more
    secret_only = DatabaseSettings.from_env({"HMQ_DATABASE_SECRET_ARN": "arn:aws:secretsmanager:r:1:secret:s"})
    assert secret_only.secret_arn and not secret_only.url
    with pytest.raises(ConfigurationError, match="HMQ_DATABASE_URL"):
        DatabaseSettings.from_env({})


def test_the_api_settings_hold_the_same_database_settings() -> None:
    settings = _settings(database_secret_arn="arn:aws:secretsmanager:r:1:secret:s")
    assert settings.database == DatabaseSettings("sqlite://", "arn:aws:secretsmanager:r:1:secret:s")
    env = settings.to_env()
    assert DatabaseSettings.from_env(env) == settings.database
