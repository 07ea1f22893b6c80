"""Health, service info, and user administration."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hmq import wire
from lambdas.auth import Principal
from lambdas.routes import SIGNED, ctx, errors, principal
from lambdas.service import Context, users

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/health")
def health() -> dict[str, str]:
    """Unauthenticated liveness check (no database access)."""
    return {"status": "ok"}


@router.get("/info", response_model=wire.Info, responses=errors(503))
def info(c: Context = Depends(ctx)) -> wire.Info:
    """Protocol version, the admin's public key and the compute keys clients seal to."""
    return users.info(c)


@router.get("/whoami", responses=errors(*SIGNED))
def whoami(p: Principal = Depends(principal)) -> dict[str, str]:
    return users.whoami(p)


@router.post("/users", response_model=wire.UserOut, responses=errors(*SIGNED, 409))
def grant(body: wire.GrantIn, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.UserOut:
    """Admin: register a user or worker from an admin-signed certificate."""
    return users.grant(c, p, body)


@router.get("/users", response_model=list[wire.UserOut], responses=errors(*SIGNED))
def list_users(p: Principal = Depends(principal), c: Context = Depends(ctx)) -> list[wire.UserOut]:
    return users.list_users(c, p)


@router.post("/users/{name}/revoke", response_model=wire.RevokeOut, responses=errors(*SIGNED, 404))
def revoke(name: str, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.RevokeOut:
    """Admin: revoke a user; their open tasks are cancelled and their requests refused."""
    return users.revoke(c, p, name)


@router.post("/users/{name}/share", response_model=wire.UserOut, responses=errors(*SIGNED, 404))
def share(name: str, body: wire.ShareIn, p: Principal = Depends(principal), c: Context = Depends(ctx)) -> wire.UserOut:
    """Admin: set a user's share of the claims (their weight against other users with pending tasks)."""
    return users.set_share(c, p, name, body)
