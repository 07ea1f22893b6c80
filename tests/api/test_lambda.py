"""The Lambda entry point, fed realistic API Gateway (HTTP API v2, REST API v1) and ALB events:
the same answers as over HTTP. (AWS itself cannot run here; Mangum's translation and the whole
app behind it do.)"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Optional
from urllib.parse import parse_qsl

import pytest

from hmq import crypto
from tests.helpers import Server, raw_request


class Context:
    function_name = "hmq-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:hmq-api"
    memory_limit_in_mb = 1024
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    log_group_name = "/aws/lambda/hmq-api"
    log_stream_name = "2026/11/24/[$LATEST]abcdef"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


def v2_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {
            **headers,
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-forwarded-for": "203.0.113.7",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "hmq",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


def v1_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    pairs = parse_qsl(query, keep_blank_values=True)
    multi: dict[str, list[str]] = {}
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    all_headers = {
        **headers,
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443",
        "X-Forwarded-For": "203.0.113.7",
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": dict(pairs) or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "accountId": "123456789012",
            "apiId": "abc123",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "hmq"},
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(time.time() * 1000),
        },
        "body": body.decode() if body else None,
        "isBase64Encoded": False,
    }


def alb_event(method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    return {
        "requestContext": {
            "elb": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/hmq/6d0ecf831eec9f09"
            }
        },
        "httpMethod": method,
        "path": path,
        "queryStringParameters": dict(parse_qsl(query, keep_blank_values=True)),
        "headers": {
            **headers,
            "host": "hmq-alb-123.us-east-1.elb.amazonaws.com",
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
            "x-forwarded-for": "203.0.113.7",
        },
        "body": body.decode() if body else "",
        "isBase64Encoded": False,
    }


EVENTS: dict[str, Callable[..., dict[str, Any]]] = {"http-api-v2": v2_event, "rest-api-v1": v1_event, "alb": alb_event}


@pytest.fixture
def lambda_handler(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``lambdas.handler.handler``, imported as Lambda would: settings from the environment."""
    for key, value in server.settings.to_env().items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("lambdas.handler", None)
    module = importlib.import_module("lambdas.handler")
    yield module.handler
    module.app.state.ctx.index.dispose()
    sys.modules.pop("lambdas.handler", None)


def _headers(method: str, path: str, query: str, body: bytes, identity: Optional[crypto.Identity]) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if identity is not None:
        headers.update(crypto.sign_request(identity, method, crypto.canonical_target(path, query), body))
    return headers


def _call(
    handler: Any,
    kind: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    identity: Optional[crypto.Identity] = None,
) -> tuple[int, Any]:
    headers = _headers(method, path, query, body, identity)
    response = handler(EVENTS[kind](method, path, query, headers, body), Context())
    payload = response["body"]
    if response.get("isBase64Encoded"):
        payload = base64.b64decode(payload).decode()
    return response["statusCode"], json.loads(payload)


def _http(
    server: Server,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    identity: Optional[crypto.Identity] = None,
) -> tuple[int, Any]:
    headers = _headers(method, path, query, body, identity)
    r = raw_request(server.url, method, path + ("?" + query if query else ""), body, headers)
    return r.status_code, r.json()


@pytest.mark.parametrize("kind", list(EVENTS))
def test_health_check(lambda_handler: Any, server: Server, kind: str) -> None:
    assert (
        _call(lambda_handler, kind, "GET", "/v1/health")
        == _http(server, "GET", "/v1/health")
        == (200, {"status": "ok"})
    )


@pytest.mark.parametrize("kind", list(EVENTS))
def test_authenticated_requests(lambda_handler: Any, server: Server, kind: str) -> None:
    from tests.helpers import submit

    user = server.user("lambda-user")
    tag = submit(user, lambda x: x, [(1,), (2,)])
    for method, path, query, body in (
        ("GET", "/v1/whoami", "", b""),
        ("GET", f"/v1/tags/{tag.name}", "", b""),
        ("GET", f"/v1/tags/{tag.name}/tasks", "limit=1&after=", b""),
        ("POST", "/v1/tasks/status", "", json.dumps({"tasks": list(tag.task_ids)}).encode()),
    ):
        via_lambda = _call(lambda_handler, kind, method, path, query, body, user.identity)
        via_http = _http(server, method, path, query, body, user.identity)
        assert via_lambda == via_http and via_lambda[0] == 200
    assert _call(lambda_handler, kind, "GET", "/v1/whoami", identity=user.identity)[1]["name"] == "lambda-user"


@pytest.mark.parametrize("kind", list(EVENTS))
def test_errors(lambda_handler: Any, server: Server, kind: str) -> None:
    user = server.user()
    cases = [
        ("GET", "/v1/whoami", None),
        ("GET", "/v1/tags/nope_1", user.identity),
        ("GET", "/v1/whoami", crypto.Identity.generate()),
    ]
    for method, path, identity in cases:
        via_lambda = _call(lambda_handler, kind, method, path, identity=identity)
        assert via_lambda == _http(server, method, path, identity=identity)
        assert via_lambda[0] in (401, 404) and via_lambda[1]["error"]["message"]


def test_an_invocation_opens_one_connection_and_waits_only_briefly(
    lambda_handler: Any, server: Server, tmp_path: Any
) -> None:
    """On Lambda a claim's wait is cut to ``serverless_max_wait_seconds`` (1 s: waiting is
    billed), and all of an invocation's transactions share one database connection, closed at
    its end."""
    from sqlalchemy import event

    from tests.helpers import ManualWorker

    engine = sys.modules["lambdas.handler"].app.state.ctx.index.engine
    connects: list[int] = []
    event.listen(engine, "connect", lambda *_: connects.append(1))
    w = ManualWorker(server, tmp_path)
    path = f"/v1/workers/{w.session.worker_id}/claim"
    body = json.dumps({"max_tasks": 5, "available": 1, "wait": 30}).encode()
    started = time.monotonic()
    status, out = _call(lambda_handler, "http-api-v2", "POST", path, body=body, identity=w.creds.identity)
    assert status == 200 and out["groups"] == [] and out["wait"] == 1.0
    assert 0.9 <= time.monotonic() - started < 15
    before = len(connects)
    status, out = _call(
        lambda_handler, "http-api-v2", "POST", path, body=body.replace(b"30", b"0"), identity=w.creds.identity
    )
    assert status == 200 and len(connects) - before == 1  # key, nonce and claim: one connection
    assert engine.pool.checkedin() == 0  # closed when the invocation answered
