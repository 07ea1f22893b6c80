"""The one place where errors become HTTP responses: ``{"error": {"code", "message"}}``.

Domain errors carry their own status and code (``hmq._errors``); what the framework raises
(validation, unknown routes, malformed JSON) is mapped through the same classes.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hmq._errors import HmqError, class_for_status, response_of

log = logging.getLogger("hmq.api")

# Framework statuses that have no domain class of their own.
_FRAMEWORK_CODES = {405: "method_not_allowed", 422: "invalid_request"}


def envelope(exc: HmqError) -> tuple[int, bytes]:
    """Status and JSON body of the error response for ``exc`` (for raw ASGI code)."""
    status, code, message = response_of(exc)
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _framework_code(status: int) -> str:
    return _FRAMEWORK_CODES.get(status) or class_for_status(status).code


def install(app: FastAPI) -> None:
    @app.exception_handler(HmqError)
    async def _domain(_: Request, exc: HmqError) -> JSONResponse:
        status, code, message = response_of(exc)
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
        return error_response(exc.status_code, _framework_code(exc.status_code), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the API logged the details")
