"""What the autoscaler decided, for others to act on: ``--metrics-port`` and ``--dry-run``.

``GET /metrics`` answers the latest round as JSON, ``{"target": N, "datacenter": ...}``: counts
only, no secret, so it can be served on the cluster network without signatures. KEDA's
``metrics-api`` scaler reads ``target`` from it (``infra/k8s/keda.yaml``): there KEDA scales the
worker Deployment and the autoscaler runs with ``--dry-run``, deciding without scaling.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from typing import Any

from worker.autoscale.scaler import Autoscaler, Fleet, Provider

log = logging.getLogger("hmq.autoscale")


class DryRun:
    """A provider that reports its fleet but starts, cancels and retires nothing (it logs)."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.name = provider.name
        self.leave_by_themselves = provider.leave_by_themselves

    def fleet(self) -> Fleet:
        return self.provider.fleet()

    def start(self, count: int) -> None:
        log.info("dry run: would start %d", count)

    def cancel_queued(self, count: int) -> int:
        log.info("dry run: would cancel %d queued", count)
        return 0

    def retire(self, count: int) -> None:
        log.info("dry run: would retire %d", count)

    def close(self) -> None:
        self.provider.close()


def serve_metrics(scaler: Autoscaler, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serve ``GET /metrics`` in a background thread; ``shutdown()`` the result to stop it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            plan = scaler.last
            body = json.dumps(
                {
                    "target": plan.target if plan else None,
                    "datacenter": scaler.settings.datacenter,
                    "min_workers": scaler.settings.min_workers,
                    "max_workers": scaler.settings.max_workers,
                }
            ).encode()
            self.send_response(200 if plan else 503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="hmq-metrics", daemon=True).start()
    log.info("serving the target on http://%s:%d/metrics", host, server.server_address[1])
    return server
