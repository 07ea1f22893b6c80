"""The worker credentials file: a worker's granted identity, the admin's public key and the
compute key.

The admin's tools write it (``hmq add-worker NAME --out FILE``, ``hmq up``, the compose set-up:
see :mod:`hmq.provision`) and the worker reads it, so the format lives here, in the shared
package. It is a secret (mode 0600): the compute key decrypts every call sealed to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from hmq import crypto
from hmq._errors import ConfigurationError
from hmq.config import write_private


@dataclass
class WorkerCredentials:
    """A worker's name, key and admin-signed certificate, the admin's public key, the compute
    keys (kid -> private key) and the API URL it was granted for."""

    name: str
    identity: crypto.Identity
    certificate: dict[str, Any]
    admin: crypto.PublicIdentity
    compute: dict[str, X25519PrivateKey]
    url: str = ""

    @classmethod
    def create(cls, admin_key: crypto.AdminKey, name: str, url: str = "") -> WorkerCredentials:
        """A new worker identity with the admin's certificate (role ``worker``)."""
        identity = crypto.Identity.generate()
        cert = crypto.issue_certificate(admin_key.identity, name, "worker", identity.public)
        return cls(name, identity, cert, admin_key.identity.public, {admin_key.compute_kid: admin_key.compute}, url)

    @classmethod
    def load(cls, path: Path) -> WorkerCredentials:
        """Read and check the file: its certificate must be the admin's, for this key, role ``worker``."""
        try:
            data = json.loads(Path(path).read_text())
            compute = {kid: crypto.compute_private_from_text(v) for kid, v in data["compute"].items()}
            creds = cls(
                name=data["name"],
                identity=crypto.Identity.from_text(data["key"]),
                certificate=data["certificate"],
                admin=crypto.PublicIdentity.from_text(data["admin"]),
                compute=compute,
                url=data.get("url", ""),
            )
        except FileNotFoundError:
            raise ConfigurationError(
                f"worker credentials {path} do not exist (the admin creates them: hmq add-worker)"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"worker credentials {path} are malformed: {exc}") from None
        subject = crypto.verify_certificate(creds.certificate, creds.admin)
        if subject.sign != creds.identity.public.sign or creds.certificate.get("role") != "worker":
            raise ConfigurationError(
                f"worker credentials {path}: the certificate is not a worker certificate for this key"
            )
        return creds

    def save(self, path: Path) -> None:
        """Write the file, readable by its owner only."""
        data = {
            "v": 1,
            "name": self.name,
            "url": self.url,
            "key": self.identity.to_text(),
            "certificate": self.certificate,
            "admin": self.admin.to_text(),
            "compute": {k: crypto.compute_private_text(v) for k, v in self.compute.items()},
        }
        write_private(Path(path), json.dumps(data, indent=2) + "\n")
