"""The local object store's HTTP face: presigned GET (with Range) and PUT.

Plain Starlette routes, not FastAPI ones: a blob request needs no dependency, model or
validation, and a warm call makes three of them (the chunk's and the result's PUT, the
chunk's GET), so FastAPI's per-request machinery would be most of their cost. Errors are
raised as everywhere else and answered by the same handlers (:mod:`lambdas.errors`).
"""

from __future__ import annotations

import os
import stat

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from hmq._errors import AccessError, NotFound, PayloadTooLarge
from lambdas.storage.local import LocalStore

PATH = "/v1/blobs/{key:path}"


def _checked(request: Request, wanted: str) -> tuple[LocalStore, str]:
    """The local store and the key of a presigned request for ``wanted`` (``get``, ``put``),
    refused unless the URL is this store's, for that operation, unaltered and unexpired."""
    store = request.app.state.ctx.store
    if not isinstance(store, LocalStore):
        raise NotFound("not_found", "this deployment serves no blobs; use the presigned URLs it hands out")
    query = request.query_params
    op = query.get("op", "")
    if op != wanted:
        raise AccessError(f"presigned URL is not for {wanted.upper()}")
    key: str = request.path_params["key"]
    store.check(op, key, query.get("exp", ""), query.get("sig", ""))
    return store, key


async def get_blob(request: Request) -> Response:
    store, key = _checked(request, "get")
    path = store.path(key)
    try:
        found = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        raise NotFound("no_such_object", f"no object {key!r}")
    return FileResponse(path, media_type="application/octet-stream", stat_result=found)


async def put_blob(request: Request) -> Response:
    store, key = _checked(request, "put")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_object_bytes:
        raise PayloadTooLarge(
            "object_too_large", f"object of {declared} bytes exceeds the limit of {store.max_object_bytes}"
        )
    temp = store.temp_path(key)
    size = 0
    try:
        async with await anyio.open_file(temp, "wb") as fh:
            async for part in request.stream():
                size += len(part)
                if size > store.max_object_bytes:
                    raise PayloadTooLarge(
                        "object_too_large", f"object exceeds the limit of {store.max_object_bytes} bytes"
                    )
                await fh.write(part)
        os.replace(temp, store.path(key))
    finally:
        if temp.exists():
            temp.unlink()
    return Response(status_code=200)


def _only(route: Route, method: str) -> Route:
    """``route`` answering ``method`` alone (Starlette adds HEAD to a GET route; the API never
    answered HEAD on blobs: 405, as for any other method)."""
    route.methods = {method}
    return route


routes = [
    _only(Route(PATH, get_blob, methods=["GET"], include_in_schema=False), "GET"),
    _only(Route(PATH, put_blob, methods=["PUT"], include_in_schema=False), "PUT"),
]
"""Added to the app after the API's routers (:func:`lambdas.app.create_app`)."""
