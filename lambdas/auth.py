"""Who is calling: signed-request verification with replay protection, and role checks.

The key id in the request names the caller's key directly (an indexed column), so
authentication costs one look-up, one signature check and one nonce row, whatever the number of
users, all in one transaction (the route's own, for a claim or a heartbeat).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import Connection, Executable, Row, bindparam, insert, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session

from hmq import crypto
from hmq._errors import AuthenticationError, PermissionDenied
from lambdas.db import Index
from lambdas.db.models import Nonce, User
from lambdas.settings import Settings

# Built once: every signed request runs them, and a statement built anew costs more CPU than
# the query takes (construction, then its cache key). Core, not ORM: the rows are plain tuples.
_USER = select(User.id, User.name, User.role, User.key_id, User.sign_pub, User.enc_pub, User.revoked).where(
    User.key_id == bindparam("key_id")
)
_NONCE = insert(Nonce.metadata.tables[Nonce.__tablename__]).values(
    nonce=bindparam("nonce"), expires=bindparam("expires")
)
# PostgreSQL: the nonce row and the key look-up in one round trip (a data-modifying CTE runs
# whether or not the query reads it). A replayed nonce fails the statement, as _NONCE would;
# a key that fails its checks afterwards rolls the nonce back with the transaction.
_USER_AND_NONCE = _USER.add_cte(_NONCE.cte("hmq_nonce"))


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
    expiry). The key look-up and the nonce are one transaction: the caller's own when it passes
    ``session`` (a claim authenticates in the transaction that claims), else one of their own.
    Expired nonces are purged by the sweeps (:meth:`lambdas.service.sweeps.Sweeps.sweep_nonces`)."""

    def __init__(self, settings: Settings, index: Index, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.index = index
        self.clock = clock

    def precheck(self, headers: Mapping[str, str]) -> None:
        """The checks that need no index: the request is signed, and timely."""
        crypto.RequestAuth.from_headers(headers).check_time(self.clock(), self.settings.request_max_skew_seconds)

    def authenticate(
        self, headers: Mapping[str, str], method: str, target: str, body: bytes, session: Optional[Session] = None
    ) -> Principal:
        auth = crypto.RequestAuth.from_headers(headers)
        now = self.clock()
        auth.check_time(now, self.settings.request_max_skew_seconds)
        admin = self.settings.admin
        if auth.key_id == admin.key_id:
            auth.verify(admin, method, target, body)  # before any transaction: no key to look up
        if session is not None:
            return self._check(session, auth, method, target, body, now)
        with self.index.write() as own:
            return self._check(own, auth, method, target, body, now)

    def _check(
        self, session: Session, auth: crypto.RequestAuth, method: str, target: str, body: bytes, now: float
    ) -> Principal:
        """Look the key up, verify (users), remember the nonce: one transaction, ``session``'s
        (on PostgreSQL, the look-up and the nonce are one statement)."""
        admin = self.settings.admin
        nonce = {"nonce": auth.nonce, "expires": max(auth.timestamp, now) + 2 * self.settings.request_max_skew_seconds}
        connection = session.connection()
        together = connection.dialect.name == "postgresql" and auth.key_id != admin.key_id
        if auth.key_id == admin.key_id:
            principal = Principal(None, "admin", "admin", admin.key_id)
        else:
            user = _execute(connection, _USER_AND_NONCE if together else _USER, {"key_id": auth.key_id, **nonce})
            if user is None:
                raise AuthenticationError(
                    "unknown key: this key has not been granted access (run hmq.request_access and ask the admin)"
                )
            auth.verify(crypto.PublicIdentity(user.sign_pub, user.enc_pub), method, target, body)
            if user.revoked is not None:
                raise PermissionDenied(f"access of user {user.name!r} has been revoked")
            principal = Principal(user.id, user.name, user.role, user.key_id)
        if not together:
            _execute(connection, _NONCE, nonce)
        return principal


def _execute(connection: Connection, statement: Executable, params: dict[str, Any]) -> Optional[Row[Any]]:
    """Run one of the statements above; a nonce already stored means the request was replayed."""
    try:
        result = connection.execute(statement, params)
    except DBIntegrityError:
        raise AuthenticationError("request was replayed: its nonce has been used before") from None
    return result.first() if result.returns_rows else None
