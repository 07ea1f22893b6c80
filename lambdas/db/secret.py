"""Database credentials from AWS Secrets Manager, re-read when they rotate.

RDS rotates a managed master password on a schedule. A long-lived process (a warm Lambda
sandbox, a uvicorn server) would keep the old one; instead every new connection takes the
password of the cached secret, and a failed login re-reads the secret once and retries.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Optional

from hmq._errors import ConfigurationError

CACHE_SECONDS = 300.0


class DatabaseSecret:
    def __init__(self, arn: str) -> None:
        self.arn = arn
        self._value: Optional[dict[str, Any]] = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def read(self, refresh: bool = False) -> dict[str, Any]:
        with self._lock:
            if refresh or self._value is None or time.monotonic() - self._read_at > CACHE_SECONDS:
                import boto3

                try:
                    client = boto3.client("secretsmanager")
                    raw = client.get_secret_value(SecretId=self.arn)["SecretString"]
                    value = json.loads(raw)
                except Exception as exc:  # botocore errors, a missing or non-JSON secret: all mean "cannot connect"
                    raise ConfigurationError(f"cannot read the database secret {self.arn}: {exc}") from None
                if not isinstance(value, dict):
                    raise ConfigurationError(f"the database secret {self.arn} is not a JSON object")
                value.setdefault("port", 5432)
                self._value, self._read_at = value, time.monotonic()
            return dict(self._value)

    def password(self, refresh: bool = False) -> str:
        return str(self.read(refresh).get("password", ""))
