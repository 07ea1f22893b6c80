"""Where the client keeps its identity and the API's address.

Everything lives under ``HMQ_HOME`` (default ``~/.hmq``): ``client.json`` holds the API URL,
the user's secret key and the admin's public key pinned when access was requested. The file is
created with mode 0600.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hmq import crypto
from hmq._errors import ConfigurationError

CLIENT_FILE = "client.json"


def hmq_home(env: Optional[Mapping[str, str]] = None) -> Path:
    """``$HMQ_HOME``, or ``~/.hmq``."""
    env = os.environ if env is None else env
    value = env.get("HMQ_HOME")
    return Path(value).expanduser() if value else Path("~/.hmq").expanduser()


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@dataclass
class ClientConfig:
    """The client's identity and the API it talks to."""

    url: str
    identity: Optional[crypto.Identity] = None
    admin: Optional[crypto.PublicIdentity] = None

    @classmethod
    def load(cls, home: Path) -> ClientConfig:
        path = home / CLIENT_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigurationError(
                f"hmq is not set up in {home}: run hmq.request_access(url) (or `hmq up` for a local queue)"
            ) from None
        except ValueError:
            raise ConfigurationError(f"{path} is not valid JSON") from None
        try:
            admin = crypto.PublicIdentity.from_text(data["admin"]) if data.get("admin") else None
            return cls(url=data["url"], identity=crypto.Identity.from_text(data["key"]), admin=admin)
        except KeyError as exc:
            raise ConfigurationError(f"{path} lacks {exc}") from None

    @classmethod
    def exists(cls, home: Path) -> bool:
        return (home / CLIENT_FILE).is_file()

    def save(self, home: Path) -> Path:
        if self.identity is None:
            raise ConfigurationError("a configuration without a key cannot be saved")
        data = {"url": self.url, "key": self.identity.to_text(), "admin": self.admin.to_text() if self.admin else None}
        path = home / CLIENT_FILE
        write_private(path, json.dumps(data, indent=2) + "\n")
        return path
