"""Users, workers' identities and the compute key: granting, revoking, listing."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from hmq import __version__, crypto, defaults, wire
from hmq._errors import BadRequest, Conflict, IntegrityError, NotFound
from lambdas.auth import Principal
from lambdas.db.models import ComputeKey, User
from lambdas.service import Context


def info(ctx: Context) -> wire.Info:
    with ctx.index.read() as session:
        statements = [
            json.loads(row.statement) for row in session.scalars(select(ComputeKey).order_by(ComputeKey.issued.desc()))
        ]
    s = ctx.settings
    return wire.Info(
        version=__version__,
        protocol=defaults.PROTOCOL_VERSION,
        min_protocol=1,
        admin_public_key=s.admin.to_text(),
        compute_keys=statements,
        max_object_bytes=s.max_object_bytes,
        max_request_bytes=s.max_request_bytes,
        presign_expiry_seconds=s.presign_expiry_seconds,
    )


def _store_compute_key(ctx: Context, statement: dict[str, Any]) -> None:
    try:
        kid, _ = crypto.verify_compute_statement(statement, ctx.settings.admin)
    except IntegrityError as exc:
        raise BadRequest("invalid_compute_key", f"compute key statement rejected: {exc}") from None
    with ctx.index.write() as session:
        if session.get(ComputeKey, kid) is None:
            session.add(
                ComputeKey(kid=kid, statement=json.dumps(statement), issued=float(statement.get("issued", ctx.now())))
            )


def grant(ctx: Context, principal: Principal, body: wire.GrantIn) -> wire.UserOut:
    principal.require("admin")
    if body.compute_key is not None:
        _store_compute_key(ctx, body.compute_key)
    cert = body.certificate
    try:
        subject = crypto.verify_certificate(cert, ctx.settings.admin)
    except IntegrityError as exc:
        raise BadRequest("invalid_certificate", f"certificate rejected: {exc}") from None
    name, role = str(cert["name"]), str(cert["role"])
    try:
        wire.check_name(name)
    except ValueError as exc:
        raise BadRequest("invalid_name", f"username {name!r} {exc}") from None
    if role == "admin":
        raise BadRequest("invalid_role", "the admin role belongs to the deployment's admin key only")
    with ctx.index.write() as session:
        by_name = session.scalars(select(User).where(User.name == name)).one_or_none()
        by_key = session.scalars(select(User).where(User.key_id == subject.key_id)).one_or_none()
        if by_key is not None and by_key.name != name:
            raise Conflict("key_in_use", f"this key already belongs to user {by_key.name!r}")
        if by_name is not None and by_name.key_id != subject.key_id:
            raise Conflict("name_taken", f"username {name!r} is taken by another key; choose another name")
        user = by_name
        if user is None:
            user = User(
                name=name,
                role=role,
                key_id=subject.key_id,
                sign_pub=subject.sign,
                enc_pub=subject.enc,
                certificate=json.dumps(cert),
                created=ctx.now(),
            )
            session.add(user)
        else:  # re-granting the same key: renew the certificate (and lift a revocation)
            user.role, user.certificate, user.revoked = role, json.dumps(cert), None
        session.flush()
        return _user_out(user)


def revoke(ctx: Context, principal: Principal, name: str) -> wire.RevokeOut:
    principal.require("admin")
    with ctx.index.write() as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            raise NotFound("unknown_user", f"unknown user {name!r}")
        user.revoked = user.revoked or ctx.now()
        cancelled = ctx.lifecycle.cancel_user(session, user.id, reason=f"user {name!r} was revoked")
    return wire.RevokeOut(name=name, revoked=True, cancelled=cancelled)


def set_share(ctx: Context, principal: Principal, name: str, body: wire.ShareIn) -> wire.UserOut:
    """Admin: the weight of user ``name`` when claims are shared between users with pending
    tasks (see :mod:`lambdas.service.shares`); it applies from the next claim on."""
    principal.require("admin")
    with ctx.index.write() as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            raise NotFound("unknown_user", f"unknown user {name!r}")
        if user.role != "user":
            raise BadRequest("not_a_user", f"{name!r} is a {user.role}: only users submit tasks and have a share")
        user.share = body.share
        session.flush()
        return _user_out(user)


def list_users(ctx: Context, principal: Principal) -> list[wire.UserOut]:
    principal.require("admin")
    with ctx.index.read() as session:
        return [_user_out(u) for u in session.scalars(select(User).order_by(User.id))]


def whoami(principal: Principal) -> dict[str, str]:
    return {"name": principal.name, "role": principal.role, "key_id": principal.key_id}


def _user_out(user: User) -> wire.UserOut:
    return wire.UserOut(
        name=user.name,
        role=user.role,
        key_id=user.key_id,
        revoked=user.revoked is not None,
        created=user.created,
        share=1.0 if user.share is None else user.share,
    )
