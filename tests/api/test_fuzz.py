"""Schemathesis over the API's own OpenAPI schema, with signed requests: whatever a generated
request holds, the API answers with a status the schema lists for that route, and never 5xx.

Requests are signed as a user, a worker or the admin (by the route's audience), so that they get
past authentication and reach validation and the services. The example count per route is
bounded (``HMQ_FUZZ_EXAMPLES``, default 20) and derandomised, so that the test runs in
``make test`` and gives the same answer each time; raise the count to explore further.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from hmq import crypto
from tests.helpers import ManualWorker, Server, submit

EXAMPLES = int(os.environ.get("HMQ_FUZZ_EXAMPLES", "20"))


@pytest.fixture
def identities(local_server: Server, tmp_path) -> dict[str, crypto.Identity]:
    """A user with a tag, a registered worker, and the admin."""
    user = local_server.user()
    submit(user, lambda x: x, [(1,), (2,)], tag="fuzz")
    worker = ManualWorker(local_server, tmp_path)
    worker.session.register("default", 1)
    return {"user": user.identity, "worker": worker.creds.identity, "admin": local_server.admin_key.identity}


def _signer(path: str) -> str:
    if path.startswith("/v1/workers"):
        return "worker"
    return "admin" if path.startswith("/v1/users") else "user"


def test_no_5xx_and_no_undocumented_status(local_server: Server, identities: dict[str, crypto.Identity]) -> None:
    schema = schemathesis.openapi.from_dict(local_server.app.openapi())
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # the same examples each run: make test is not a lottery
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(mode))
            def check(case: schemathesis.Case) -> None:
                _send_signed(case, local_server, identities)

            print(f"fuzzing {operation.label} ({mode.value})")  # shown with a failure
            try:
                check()
            except Unsatisfiable:  # nothing invalid to send (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE


def _send_signed(case: schemathesis.Case, server: Server, identities: dict[str, crypto.Identity]) -> None:
    kwargs = case.as_transport_kwargs(base_url=server.url)
    prepared = requests.Request(**{k: kwargs[k] for k in kwargs if k not in ("timeout", "allow_redirects")}).prepare()
    parts = urlsplit(prepared.url)
    body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
    target = crypto.canonical_target(unquote(parts.path), parts.query)
    prepared.headers.update(crypto.sign_request(identities[_signer(case.path)], case.method, target, body))
    with requests.Session() as session:
        response = session.send(prepared, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
