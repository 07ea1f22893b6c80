"""The local object store's HTTP face: presigned GET (with Range) and PUT."""

from __future__ import annotations

import os

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from hmq._errors import AccessError, NotFound, PayloadTooLarge
from lambdas.routes import ctx
from lambdas.storage.local import LocalStore

router = APIRouter(prefix="/v1/blobs", tags=["blobs"], include_in_schema=False)


def _local(request: Request) -> LocalStore:
    store = ctx(request).store
    if not isinstance(store, LocalStore):
        raise NotFound("not_found", "this deployment serves no blobs; use the presigned URLs it hands out")
    return store


def _check(store: LocalStore, wanted: str, op: str, key: str, exp: str, sig: str) -> None:
    if op != wanted:
        raise AccessError(f"presigned URL is not for {wanted.upper()}")
    store.check(op, key, exp, sig)


@router.get("/{key:path}")
def get_blob(key: str, request: Request, op: str = "", exp: str = "", sig: str = "") -> FileResponse:
    store = _local(request)
    _check(store, "get", op, key, exp, sig)
    path = store.path(key)
    if not path.is_file():
        raise NotFound("no_such_object", f"no object {key!r}")
    return FileResponse(path, media_type="application/octet-stream")


@router.put("/{key:path}")
async def put_blob(key: str, request: Request, op: str = "", exp: str = "", sig: str = "") -> Response:
    store = _local(request)
    _check(store, "put", op, key, exp, sig)
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
