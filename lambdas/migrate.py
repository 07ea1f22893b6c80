"""Schema migrations on deploy: an AWS Lambda handler for a CloudFormation custom resource.

``lambdas.migrate.handler`` runs ``alembic upgrade head`` on Create and Update (each deploy
changes the resource's ``Version`` property, so each deploy migrates) and reports to
CloudFormation; Delete leaves the database alone. It reads only the database settings
(``HMQ_DATABASE_URL``, ``HMQ_DATABASE_SECRET_ARN``), as ``hmq migrate`` does through
:func:`run`. Concurrent runs are serialised by a PostgreSQL advisory lock.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from lambdas.db import connect, current_revision, migrate
from lambdas.settings import DatabaseSettings

log = logging.getLogger("hmq.migrate")


def run(database: DatabaseSettings) -> str:
    """Migrate the index to the newest revision; return it. The one migration path of a
    deployment: this handler and ``hmq migrate`` both come here."""
    engine = connect(database, serverless=True)
    try:
        migrate(engine)
        return current_revision(engine) or ""
    finally:
        engine.dispose()


def _respond(event: dict[str, Any], context: Any, status: str, reason: str, data: dict[str, str]) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:3000] or status,
            "PhysicalResourceId": event.get("PhysicalResourceId") or "hmq-schema",
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"], data=body, method="PUT", headers={"content-type": "", "content-length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    status, reason, data = "SUCCESS", "", {}
    try:
        if event.get("RequestType", "Create") in ("Create", "Update"):
            data["Revision"] = run(DatabaseSettings.from_env())
            log.info("index schema at revision %s", data["Revision"])
    except Exception as exc:  # process boundary: report the failure to CloudFormation, never hang the stack
        log.exception("migration failed")
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"
    if event.get("ResponseURL"):
        _respond(event, context, status, reason, data)
    return {"Status": status, "Reason": reason, "Data": data}
