"""AWS Lambda entry point: ``lambdas.handler.handler`` serves API Gateway (HTTP API v2 and REST
API v1) and ALB events through Mangum. Settings come from the function's environment."""

from __future__ import annotations

from mangum import Mangum

from lambdas.app import create_app
from lambdas.settings import Settings

app = create_app(Settings.from_env(), serverless=True)
handler = Mangum(app, lifespan="off")
