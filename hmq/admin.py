"""The administrator's side: granting and revoking access, listing users and workers.

Every call is signed with the admin key; the API trusts only the admin public key it was
deployed with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hmq import crypto, wire
from hmq._errors import AuthenticationError, PermissionDenied
from hmq._transport import Transport


def read_admin_key(adminkey: str | os.PathLike[str] | crypto.AdminKey) -> crypto.AdminKey:
    """The admin key itself (``hmqadmin1_...``), or the path of a file holding it."""
    if isinstance(adminkey, crypto.AdminKey):
        return adminkey
    text = str(adminkey).strip()
    if not text.startswith(crypto.ADMIN_SECRET_PREFIX) and "\n" not in text:
        try:
            path = Path(text).expanduser()
            if path.is_file():
                text = path.read_text().strip()
        except OSError:
            pass  # not a path either: refused below
    return crypto.AdminKey.from_text(text)


class Admin:
    """Administration of one deployment with the admin key."""

    def __init__(self, url: str, adminkey: str | os.PathLike[str] | crypto.AdminKey) -> None:
        self.key = read_admin_key(adminkey)
        self.transport = Transport(url, self.key.identity)

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def register(self, certificate: dict[str, Any]) -> wire.UserOut:
        """Store an admin-signed certificate (and publish the compute key with it)."""
        body = wire.GrantIn(certificate=certificate, compute_key=self.key.statement())
        try:
            return self.transport.call("POST", "/v1/users", body, model=wire.UserOut)
        except AuthenticationError as exc:
            raise PermissionDenied(
                f"the API does not accept this admin key ({exc}); is it the deployment's admin key?"
            ) from None

    def grant(self, signing_request: str, username: str, role: str = "user") -> wire.UserOut:
        """Grant the key behind a signing request access as ``username``."""
        subject, _ = crypto.parse_signing_request(signing_request)
        return self.register(crypto.issue_certificate(self.key.identity, username, role, subject))

    def revoke(self, username: str) -> wire.RevokeOut:
        return self.transport.call("POST", f"/v1/users/{username}/revoke", {}, model=wire.RevokeOut)

    def share(self, username: str, share: float) -> wire.UserOut:
        """Set ``username``'s share of the claims: their weight against the other users with
        pending tasks (default 1; 2 gets twice the workers' slots of a user with 1)."""
        body = wire.ShareIn(share=share)
        return self.transport.call("POST", f"/v1/users/{username}/share", body, model=wire.UserOut)

    def users(self) -> list[wire.UserOut]:
        return [wire.UserOut.model_validate(u) for u in self.transport.call("GET", "/v1/users")]

    def workers(self, since: float = 0.0) -> list[wire.WorkerInfo]:
        """Registered workers seen after ``since`` (unix time), newest first."""
        found = self.transport.call("GET", "/v1/workers", params={"since": since})
        return [wire.WorkerInfo.model_validate(w) for w in found]

    def metrics(self, since: float = 0.0) -> wire.MetricsOut:
        """The fleet's load per minute since ``since`` (unix time), CPU time per user over it,
        and the datacenters with their last-seen workers (``GET /v1/metrics``)."""
        return self.transport.call("GET", "/v1/metrics", params={"since": since}, model=wire.MetricsOut)

    def queue(self, datacenter: Optional[str] = None, python: Optional[str] = None) -> wire.QueueDepth:
        """Open tasks grouped by placement, with the live workers that could run each group."""
        params = {"datacenter": datacenter, "python": python}
        return self.transport.call("GET", "/v1/queue", params=params, model=wire.QueueDepth)
