"""Provisioning a deployment: its admin key, and access for users and workers.

One module for the three places that set a deployment up: ``hmq up`` (:mod:`hmq.stack`), the
docker compose set-up (``infra/compose_setup.py``) and the admin commands of the CLI
(``hmq admin-key``, ``hmq grant-access``, ``hmq add-worker``).

Two kinds of step: ``ensure_*`` steps run at every start and keep what exists (the same admin
key, user key and worker key, granted again, which renews their certificates); ``new_*`` and
:func:`grant_request` are an administrator's explicit actions and refuse to overwrite or
rename anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hmq import crypto, wire
from hmq._errors import ConfigurationError, Conflict
from hmq.admin import Admin
from hmq.config import ClientConfig, write_private
from hmq.credentials import WorkerCredentials


# --- the admin key -------------------------------------------------------------------------------
def ensure_admin_key(path: Path) -> crypto.AdminKey:
    """The admin key in ``path``, made (mode 0600) when the file is missing."""
    if path.exists():
        return crypto.AdminKey.from_text(path.read_text().strip())
    key = crypto.AdminKey.generate()
    write_private(path, key.to_text() + "\n")
    return key


def new_admin_key(path: Path) -> crypto.AdminKey:
    """A new admin key written to ``path`` (mode 0600); an existing file is never overwritten."""
    if path.exists():
        raise ConfigurationError(f"{path} exists; refusing to overwrite an admin key")
    return ensure_admin_key(path)


# --- granting ------------------------------------------------------------------------------------
def grant_key(
    admin: Admin, name: str, role: str, subject: crypto.PublicIdentity, *, rename_if_taken: bool = False
) -> dict[str, Any]:
    """Grant ``subject`` access as ``name`` with ``role``; returns its certificate.

    With ``rename_if_taken``, a name another key holds (the index outlived the keys, or the
    user's configuration was made anew) is granted as ``name-<key id>`` instead of failing.
    """
    try:
        cert = crypto.issue_certificate(admin.key.identity, name, role, subject)
        admin.register(cert)
    except Conflict as exc:
        if not rename_if_taken or exc.code != "name_taken":
            raise
        cert = crypto.issue_certificate(admin.key.identity, f"{name}-{subject.key_id[:8]}", role, subject)
        admin.register(cert)
    return cert


def grant_request(
    signing_request: str,
    adminkey: str | os.PathLike[str] | crypto.AdminKey,
    username: str,
    role: str = "user",
    url: Optional[str] = None,
) -> wire.UserOut:
    """Grant the key behind a signing request (``ADD-USER_...``) access as ``username``, at the
    API ``url`` (default: the one the request names)."""
    _, request_url = crypto.parse_signing_request(signing_request)
    with Admin(url or request_url, adminkey) as admin:
        return admin.grant(signing_request, username, role)


def ensure_user(admin: Admin, home: Path, name: str, url: str) -> Path:
    """Grant (again) the user of ``home/client.json``, made with a new key when missing or
    unreadable; the configuration is written to point at ``url``. Returns its path."""
    identity: Optional[crypto.Identity] = None
    if ClientConfig.exists(home):
        try:
            identity = ClientConfig.load(home).identity
        except ConfigurationError:
            identity = None
    identity = identity or crypto.Identity.generate()
    grant_key(admin, name, "user", identity.public, rename_if_taken=True)
    return ClientConfig(url=url, identity=identity, admin=admin.key.identity.public).save(home)


def ensure_worker(admin: Admin, path: Path, name: str, url: str) -> WorkerCredentials:
    """Grant (again) the worker credentials at ``path`` and write them back.

    Credentials there for this admin keep their key and name; missing, unreadable or foreign
    ones are replaced by a new key named ``name`` (``name-<key id>`` when another key holds it).
    """
    try:
        creds: Optional[WorkerCredentials] = WorkerCredentials.load(path)
    except ConfigurationError:
        creds = None
    if creds is None or creds.admin != admin.key.identity.public:
        creds = WorkerCredentials.create(admin.key, name, url)
    return _grant_worker(admin, creds, path, url, rename_if_taken=True)


def new_worker(admin: Admin, path: Path, name: str, url: str) -> WorkerCredentials:
    """New worker credentials named ``name``, granted, written to ``path`` (a secret)."""
    return _grant_worker(admin, WorkerCredentials.create(admin.key, name, url), path, url, rename_if_taken=False)


def _grant_worker(
    admin: Admin, creds: WorkerCredentials, path: Path, url: str, *, rename_if_taken: bool
) -> WorkerCredentials:
    creds.certificate = grant_key(admin, creds.name, "worker", creds.identity.public, rename_if_taken=rename_if_taken)
    creds.name = str(creds.certificate["name"])
    creds.url = url
    creds.compute[admin.key.compute_kid] = admin.key.compute
    creds.save(path)
    return creds
