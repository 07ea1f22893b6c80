"""HTTP routes: thin adapters from requests to ``lambdas.service`` operations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hmq import crypto, wire
from lambdas.auth import Authenticator, Principal
from lambdas.service import Context

Check = Callable[[Session], Principal]
"""Authenticates the request inside the caller's transaction (see :func:`signature`)."""

_ERRORS = {
    400: "malformed request: invalid JSON, or a value the operation refuses (the code says which)",
    401: "unsigned, badly signed, stale, future or replayed request, or an unknown key",
    403: "the caller's role may not do this, or its access was revoked",
    404: "unknown tag, function, worker, user or object (another user's are unknown too)",
    409: "the name or object is taken",
    413: "the request body, or an object, is over its limit",
    422: "a field is missing, of the wrong type or out of its bounds",
    429: "too many upload URLs of the caller are not registered yet (the message says how to free them)",
    503: "the index database or the object store is down (the code names which); retry after Retry-After",
}
SIGNED = (400, 401, 403, 413, 422, 503)
"""What any signed route may answer besides success."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all in the one error envelope)."""
    return {status: {"model": wire.ErrorOut, "description": _ERRORS[status]} for status in statuses}


def ctx(request: Request) -> Context:
    """FastAPI dependency: the app's :class:`Context` (settings, index, store, lifecycle)."""
    return request.app.state.ctx


def signed_target(request: Request) -> str:
    """Path relative to the API root plus canonical query: what the client signed."""
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return crypto.canonical_target(path, request.scope.get("query_string", b"").decode())


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller.

    The one trigger of the maintenance sweeps, too: once the caller is authenticated, the
    sweeps that are due run (in their own transactions) before the route does; see
    :mod:`lambdas.service.sweeps`.
    """
    body = await request.body()
    auth: Authenticator = request.app.state.auth
    caller = await run_in_threadpool(auth.authenticate, request.headers, request.method, signed_target(request), body)
    sweeps = ctx(request).sweeps
    if sweeps.due():
        await run_in_threadpool(sweeps.run_due)
    return caller


async def signature(request: Request) -> Check:
    """FastAPI dependency of the worker's hot path (claim, heartbeat): a check that
    authenticates the request in the route's own transaction (key look-up, nonce and the
    route's work: one transaction, one connection). Due sweeps run first, as for
    :func:`principal` (the check is a clock comparison), so a claim sees requeued tasks: after
    the checks that need no index (signed, timely), before the key is looked up; they are
    rate-limited per process, whoever triggers them."""
    body = await request.body()
    auth: Authenticator = request.app.state.auth
    headers, method, target = request.headers, request.method, signed_target(request)
    sweeps = ctx(request).sweeps
    if sweeps.due():
        auth.precheck(headers)
        await run_in_threadpool(sweeps.run_due)

    def check(session: Session) -> Principal:
        return auth.authenticate(headers, method, target, body, session)

    return check


def answer(out: BaseModel) -> Response:
    """A route's answer, serialized here, once: given the model, FastAPI would dump it, validate
    the dump against the ``response_model`` and serialize that (the route keeps its
    ``response_model`` for the schema). For the routes every call goes through."""
    return Response(out.model_dump_json(), media_type="application/json")


def base_url(request: Request) -> str:
    """Where presigned URLs of the local store point: the configured public URL, else this request's."""
    c = ctx(request)
    return c.settings.public_url or str(request.base_url)
