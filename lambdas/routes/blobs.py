"""The local object store's HTTP face: presigned GET (with Range) and PUT.

Plain Starlette routes, not FastAPI ones: a blob request needs no dependency, model or
validation, and a warm call makes three of them (the chunk's and the result's PUT, the
chunk's GET), so FastAPI's per-request machinery would be most of their cost. Errors are
raised as everywhere else and answered by the same handlers (:mod:`lambdas.errors`).

Objects up to :data:`SMALL_OBJECT` bytes (a one-call tag's chunk and result, most objects of a
busy queue) are read and written in one piece on the event loop: a file of that size is a few
microseconds of page cache, less than the thread hand-offs of a streamed file (open, each read
or write, close), which were most of these requests' cost. Larger ones stream from and to their
files in the threadpool, as before.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Optional

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from hmq._errors import AccessError, NotFound, PayloadTooLarge
from lambdas.storage.local import LocalStore

PATH = "/v1/blobs/{key:path}"
SMALL_OBJECT = 256 * 1024
"""Objects up to this size are read and written in one piece, on the event loop."""
_ONE_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


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
        if not stat.S_ISREG(found.st_mode):
            raise FileNotFoundError(key)
        if found.st_size <= SMALL_OBJECT and "if-range" not in request.headers:
            with open(path, "rb") as fh:
                small = _small(fh.read(SMALL_OBJECT + 1), request.headers.get("range"))
            if small is not None:
                return small
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound("no_such_object", f"no object {key!r}") from None
    return FileResponse(path, media_type="application/octet-stream", stat_result=found)


def _small(data: bytes, asked: Optional[str]) -> Optional[Response]:
    """A small object's answer from its bytes: whole, or the one range ``bytes=a-b`` /
    ``bytes=a-`` asked for (what the clients ask); ``None`` for anything else (several ranges,
    a suffix range, one past the end, a file longer than its look-up said), which :class:`FileResponse` answers as HTTP says."""
    if len(data) > SMALL_OBJECT:
        return None
    headers = {"accept-ranges": "bytes"}
    if asked is None:
        return Response(data, media_type="application/octet-stream", headers=headers)
    one = _ONE_RANGE.fullmatch(asked.strip())
    if one is None:
        return None
    start, end = int(one[1]), len(data) if not one[2] else min(int(one[2]) + 1, len(data))
    if start >= end:
        return None
    headers["content-range"] = f"bytes {start}-{end - 1}/{len(data)}"
    return Response(data[start:end], status_code=206, media_type="application/octet-stream", headers=headers)


async def put_blob(request: Request) -> Response:
    store, key = _checked(request, "put")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > store.max_object_bytes:
        raise PayloadTooLarge(
            "object_too_large", f"object of {declared} bytes exceeds the limit of {store.max_object_bytes}"
        )
    temp = store.temp_path(key)
    try:
        if declared and declared.isdigit() and int(declared) <= SMALL_OBJECT:
            body = await request.body()  # the HTTP framing stops it at its declared length
            if len(body) > store.max_object_bytes:
                raise PayloadTooLarge("object_too_large", f"object exceeds the limit of {store.max_object_bytes} bytes")
            temp.write_bytes(body)
        else:
            await _stream_to(request, temp, store.max_object_bytes)
        os.replace(temp, store.path(key))
    finally:
        if temp.exists():
            temp.unlink()
    return Response(status_code=200)


async def _stream_to(request: Request, temp: Path, limit: int) -> None:
    """The body of a large upload (or one of undeclared length) into ``temp``, refused once
    it exceeds ``limit`` bytes."""
    size = 0
    async with await anyio.open_file(temp, "wb") as fh:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise PayloadTooLarge("object_too_large", f"object exceeds the limit of {limit} bytes")
            await fh.write(part)


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
