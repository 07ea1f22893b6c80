"""The one place where errors become HTTP responses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hmq._errors import (
    AccessError,
    APIError,
    AuthenticationError,
    ConfigurationError,
    HmqError,
    IntegrityError,
    StorageError,
)

log = logging.getLogger("hmq.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid_request",
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def status_of(exc: HmqError) -> tuple[int, str, str]:
    """(status, code, message) for a domain error."""
    if isinstance(exc, APIError):
        return exc.status, exc.code, exc.reason
    if isinstance(exc, AuthenticationError):
        return 401, "unauthenticated", str(exc)
    if isinstance(exc, AccessError):
        return 403, "forbidden", str(exc)
    if isinstance(exc, (IntegrityError, ConfigurationError)):
        return 400, "invalid", str(exc)
    if isinstance(exc, StorageError):
        return 502, "storage", str(exc)
    return 500, "internal", str(exc)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(HmqError)
    async def _domain(_: Request, exc: HmqError) -> JSONResponse:
        status, code, message = status_of(exc)
        if status >= 500:
            log.error("request failed: %s", message)
        return error_response(status, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return error_response(400, "invalid_json", "request body is not valid JSON")
        return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the API logged the details")
