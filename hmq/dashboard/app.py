"""The dashboard's web app: server-rendered pages over a :class:`~hmq.dashboard.board.Board`.

Every request passes :class:`Guard` first (see docs/dashboard.md, "Security"):

- the ``Host`` header must name this dashboard (``127.0.0.1:PORT`` or ``localhost:PORT``), so
  a web page whose domain resolves to 127.0.0.1 (DNS rebinding) cannot read it;
- the request must carry the token: in the query (``?token=``, the URL ``hmq dashboard``
  prints; the answer sets a cookie and sends the browser to the same page without it) or in
  the cookie (HttpOnly, SameSite=Strict); everything else is answered 403;
- a request that changes something (POST) must come from the dashboard's own pages: its
  ``Origin`` header must be the dashboard's.

Pages (``/``, ``/tags/NAME``, ``/fleet``) are rendered whole; the parts that refresh every few
seconds (``/part/...``) are fetched by ``static/dashboard.js`` and swapped in.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hmq import wire
from hmq._errors import HmqError, NotFound
from hmq.dashboard.board import Board

HERE = Path(__file__).parent
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}
log = logging.getLogger("hmq.dashboard")


class Guard:
    """The dashboard's door: Host header, token or cookie, same-origin POSTs (module docstring)."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.origins = {f"http://{host}" for host in self.hosts}
        self.cookie = f"hmq-dashboard-{port}"

    def _holds_token(self, value: str) -> bool:
        return hmac.compare_digest(value.encode(), self.token.encode())

    def refusal(self, request: Request) -> str | None:
        """Why ``request`` is refused (answered 403), or ``None``."""
        host = request.headers.get("host", "")
        if host not in self.hosts:
            return f"refused: Host {host!r} is not this dashboard ({' or '.join(sorted(self.hosts))})"
        if not (
            self._holds_token(request.query_params.get("token", ""))
            or self._holds_token(request.cookies.get(self.cookie, ""))
        ):
            return "refused: no valid token; open the URL `hmq dashboard` printed"
        if request.method not in SAFE_METHODS and request.headers.get("origin") not in self.origins:
            return "refused: a change must come from the dashboard's own pages (Origin header)"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        problem = self.refusal(request)
        if problem is not None:
            response: Response = PlainTextResponse(problem, status_code=403)
        elif request.method in SAFE_METHODS and "token" in request.query_params:
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response = RedirectResponse(request.url.path + (f"?{urlencode(rest)}" if rest else ""), status_code=303)
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="strict", path="/")
        else:
            await self.app(scope, receive, self._with_headers(send))
            return
        await response(scope, receive, self._with_headers(send))

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return sending


class Pages:
    """The routes, rendering the board's data with the package's templates."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self.env.filters["json"] = lambda value: json.dumps(value).replace("<", "\\u003c")

    def render(self, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        values.setdefault("admin", self.board.admin is not None)
        return HTMLResponse(self.env.get_template(template).render(**values), status_code=code)

    @staticmethod
    def _name(request: Request) -> str:
        name = request.path_params["name"]
        try:
            return wire.check_name(name)
        except ValueError as exc:
            raise NotFound("unknown_tag", f"tag name {name!r} {exc}") from None

    def tags(self, request: Request) -> HTMLResponse:
        return self.render("tags.html", tags=self.board.tags())

    def tags_part(self, request: Request) -> HTMLResponse:
        return self.render("_tags.html", tags=self.board.tags())

    def tag(self, request: Request) -> HTMLResponse:
        return self.render("tag.html", tag=self.board.tag(self._name(request)))

    def tag_part(self, request: Request) -> HTMLResponse:
        return self.render("_tag.html", tag=self.board.tag(self._name(request)))

    def failures_part(self, request: Request) -> HTMLResponse:
        name = self._name(request)
        return self.render("_failures.html", name=name, failures=self.board.failures(name))

    def cancel(self, request: Request) -> JSONResponse:
        name = self._name(request)
        return JSONResponse({"cancelled": self.board.cancel(name), "message": f"cancelled the open tasks of {name}"})

    def delete(self, request: Request) -> JSONResponse:
        name = self._name(request)
        return JSONResponse({"deleted": self.board.delete(name), "message": f"deleted {name}"})

    def fleet(self, request: Request) -> HTMLResponse:
        return self.render("fleet.html", fleet=self.board.fleet())

    def fleet_part(self, request: Request) -> HTMLResponse:
        return self.render("_fleet.html", fleet=self.board.fleet())

    def failed(self, request: Request, exc: Exception) -> Response:
        """An error of the queue (unreachable API, unknown tag...), said on the page or part."""
        assert isinstance(exc, HmqError)
        status = exc.status if isinstance(exc.status, int) and 400 <= exc.status < 500 else 502
        if request.method not in SAFE_METHODS:
            return JSONResponse({"message": str(exc)}, status_code=status)
        if request.url.path.startswith("/part/"):
            return PlainTextResponse(str(exc), status_code=status)
        return self.render("error.html", status, status=status, message=str(exc))


def create_app(board: Board, token: str, port: int) -> ASGIApp:
    """The dashboard for ``board``, answering only requests with ``token`` addressed to ``port``."""
    pages = Pages(board)
    routes = [
        Route("/", pages.tags),
        Route("/part/tags", pages.tags_part),
        Route("/tags/{name}", pages.tag),
        Route("/part/tags/{name}", pages.tag_part),
        Route("/part/tags/{name}/failures", pages.failures_part),
        Route("/tags/{name}/cancel", pages.cancel, methods=["POST"]),
        Route("/tags/{name}/delete", pages.delete, methods=["POST"]),
        Route("/fleet", pages.fleet),
        Route("/part/fleet", pages.fleet_part),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HmqError: pages.failed})
    return Guard(app, token, port)
