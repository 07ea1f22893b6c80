"""The one place where errors become HTTP responses: ``{"error": {"code", "message"}}``.

Domain errors carry their own status and code (``hmq._errors``); what the framework raises
(validation, unknown routes, malformed JSON) is mapped through the same classes.

Outages are not defects: an index database that cannot be reached (SQLAlchemy's
``OperationalError``, ``InterfaceError``, a disconnect, a pool time-out) and an object store that
does not answer (a transient ``StorageError``: no status, 5xx) are answered with 503
:class:`~hmq.Unavailable` whose code names the part (``database``, ``storage``), a message
saying which is down, and ``Retry-After``: clients retry those (see ``hmq._transport``).
"""

from __future__ import annotations

import json
import logging
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from hmq import defaults
from hmq._errors import HmqError, StorageError, Unavailable, class_for_status, response_of

log = logging.getLogger("hmq.api")

# Framework statuses that have no domain class of their own.
_FRAMEWORK_CODES = {405: "method_not_allowed", 422: "invalid_request"}


_DATABASE_DOWN = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError)


def unavailable(exc: BaseException) -> Optional[Unavailable]:
    """The 503 an outage of the index database or the object store is answered with; ``None``
    for any other error."""
    if isinstance(exc, _DATABASE_DOWN) or (isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated):
        return Unavailable("database", "the index database is unreachable; retry later")
    if isinstance(exc, StorageError) and exc.transient:
        return Unavailable("storage", f"the object store is unreachable; retry later ({exc})")
    return None


def envelope(exc: HmqError) -> tuple[int, bytes]:
    """Status and JSON body of the error response for ``exc`` (for raw ASGI code)."""
    status, code, message = response_of(exc)
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"retry-after": str(defaults.UNAVAILABLE_RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _outage(request: Request, down: Unavailable, cause: BaseException) -> JSONResponse:
    log.warning("%s %s: %s (%s: %s)", request.method, request.url.path, down.reason, type(cause).__name__, cause)
    return error_response(down.status, down.code, down.reason)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _framework_code(status: int) -> str:
    return _FRAMEWORK_CODES.get(status) or class_for_status(status).code


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HmqError)
    down = unavailable(exc)
    if down is not None:
        return _outage(request, down, exc)
    status, code, message = response_of(exc)
    if status >= 500:
        log.error("request failed: %s", message)
    return error_response(status, code, message)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(err.get("type") == "json_invalid" for err in exc.errors()):
        return _invalid_json()
    return error_response(422, "invalid_request", _describe_validation(exc))


def _invalid_json() -> JSONResponse:
    return error_response(400, "invalid_json", "request body is not valid JSON")


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and "parsing the body" in str(exc.detail):
        return _invalid_json()
    return error_response(exc.status_code, _framework_code(exc.status_code), str(exc.detail))


async def _database(request: Request, exc: Exception) -> JSONResponse:
    down = unavailable(exc)
    if down is not None:
        return _outage(request, down, exc)
    log.error("database error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; the API logged the details")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error; the API logged the details")


def install(app: FastAPI) -> None:
    """Register the handlers: domain errors, validation, framework errors, outages, defects."""
    app.add_exception_handler(HmqError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(sa_exc.SQLAlchemyError, _database)
    app.add_exception_handler(Exception, _unexpected)
