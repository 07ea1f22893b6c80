"""Who is calling: signed-request verification with replay protection, and role checks.

The key id in the request names the caller's key directly (an indexed column), so
authentication costs one look-up and one signature check, whatever the number of users.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from hmq import crypto
from hmq._errors import AuthenticationError, PermissionDenied
from lambdas.db import Index
from lambdas.db.models import Nonce, User
from lambdas.settings import Settings


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. The admin has no row in ``users`` (``user_id`` is ``None``)."""

    user_id: Optional[int]
    name: str
    role: str
    key_id: str

    def require(self, *roles: str) -> Principal:
        if self.role not in roles:
            raise PermissionDenied(f"this needs the {' or '.join(roles)} role; {self.name!r} is a {self.role}")
        return self


class Authenticator:
    """Checks signed requests against the index, by the API's clock (request time skew, nonce
    expiry); purges expired nonces at most every ``settings.nonce_purge_seconds``."""

    def __init__(self, settings: Settings, index: Index, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.index = index
        self.clock = clock
        self._last_purge = float("-inf")

    def authenticate(self, headers: Mapping[str, str], method: str, target: str, body: bytes) -> Principal:
        auth = crypto.RequestAuth.from_headers(headers)
        now = self.clock()
        auth.check_time(now, self.settings.request_max_skew_seconds)
        admin = self.settings.admin
        if auth.key_id == admin.key_id:
            auth.verify(admin, method, target, body)
            principal = Principal(None, "admin", "admin", admin.key_id)
        else:
            with self.index.read() as session:
                user = session.scalars(select(User).where(User.key_id == auth.key_id)).one_or_none()
            if user is None:
                raise AuthenticationError(
                    "unknown key: this key has not been granted access (run hmq.request_access and ask the admin)"
                )
            auth.verify(crypto.PublicIdentity(user.sign_pub, user.enc_pub), method, target, body)
            if user.revoked is not None:
                raise PermissionDenied(f"access of user {user.name!r} has been revoked")
            principal = Principal(user.id, user.name, user.role, user.key_id)
        self._remember_nonce(auth.nonce, auth.timestamp, now)
        return principal

    def _remember_nonce(self, nonce: str, timestamp: float, now: float) -> None:
        expires = max(timestamp, now) + 2 * self.settings.request_max_skew_seconds
        try:
            with self.index.write() as session:
                if now - self._last_purge > self.settings.nonce_purge_seconds:
                    session.execute(delete(Nonce).where(Nonce.expires < now))
                    self._last_purge = now
                session.add(Nonce(nonce=nonce, expires=expires))
        except DBIntegrityError:
            raise AuthenticationError("request was replayed: its nonce has been used before") from None
