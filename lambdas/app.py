"""The API's app factory: one FastAPI app from one :class:`Settings`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from hmq import __version__
from hmq._errors import PayloadTooLarge
from lambdas import errors
from lambdas.auth import Authenticator
from lambdas.db import Index, connect, migrate
from lambdas.service import Context
from lambdas.settings import Settings
from lambdas.storage import store_from_url

BLOB_PREFIX = "/v1/blobs/"


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (blob uploads have their own limit),
    whether they declare their length or not (chunked): the body is read here, up to the limit,
    before the app sees it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(BLOB_PREFIX):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _refuse(send, f"request body of {int(length)} bytes exceeds the limit of {self.limit}")
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await _refuse(send, f"request body exceeds the limit of {self.limit} bytes")
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, reason: str) -> None:
    status, body = errors.envelope(PayloadTooLarge(None, reason))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, *, serverless: bool = False, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the API. ``serverless`` selects Lambda-friendly database connections; ``clock``
    (seconds since the epoch) is the time leases, placement, sweeps and signed requests are
    judged by: tests pass one they move by hand."""
    from lambdas.routes import blobs, queue, tags, users, work

    engine = connect(settings.database, serverless=serverless)
    if settings.migrate_on_start:
        migrate(engine)
    index = Index(engine)
    store = store_from_url(
        settings.storage_url, secret=settings.storage_secret, max_object_bytes=settings.max_object_bytes
    )
    app = FastAPI(
        title="hmq API",
        version=__version__,
        description="Metadata API of the hmq task queue. Blobs move by presigned URL only.",
    )
    app.state.ctx = Context.create(settings, index, store, clock, serverless=serverless)
    app.state.auth = Authenticator(settings, index, clock)
    errors.install(app)
    # A request is matched against the routes in order, each match a regular expression and, in
    # FastAPI, a few layers of context: the routes of every call (its blobs, then the worker's
    # and the client's) come first, the schema pages last. No two routes match the same path.
    documentation = list(app.router.routes)
    app.router.routes[:] = list(blobs.routes)
    for module in (work, tags, users, queue):
        app.include_router(module.router)
    app.router.routes.extend(documentation)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app
