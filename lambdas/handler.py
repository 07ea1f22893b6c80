"""AWS Lambda entry point: ``lambdas.handler.handler`` serves API Gateway (HTTP API v2 and REST
API v1) and ALB events through Mangum. Settings come from the function's environment.

An invocation opens at most one database connection, which all its transactions reuse, and
closes it when it answers (``Index.release``): nothing is left open while the sandbox is frozen."""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from lambdas.app import create_app
from lambdas.settings import Settings

app = create_app(Settings.from_env(), serverless=True)
_serve = Mangum(app, lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _serve(event, context)
    finally:
        app.state.ctx.index.release()
