"""The kubernetes provider, through the official client, against a fake Kubernetes API server on
loopback: there is no Kubernetes cluster here, so what is tested is what the autoscaler asks of
the API (reading and patching one Deployment's scale subresource, with the kube-config's
credentials) and how it reacts to its answers. Whether a real cluster then starts pods, and
whether they drain within terminationGracePeriodSeconds, is not."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hmq._errors import ProviderError
from tests.helpers import Server, submit, wait_for

pytest.importorskip("kubernetes", reason="the kubernetes extra is not installed")

NAMESPACE, DEPLOYMENT, TOKEN = "hmq", "hmq-worker", "test-token"


class FakeKubernetes:
    """Just enough of the Kubernetes API: the scale subresource of one Deployment."""

    def __init__(self, replicas: int = 0) -> None:
        self.replicas = replicas
        self.requests: list[tuple[str, str, str, str]] = []  # method, path, content type, authorization
        fake = self
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(
                    (
                        self.command,
                        self.path,
                        self.headers.get("content-type", ""),
                        self.headers.get("authorization", ""),
                    )
                )
                if self.path.split("?")[0] != path:
                    self._answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound"})
                    return
                if self.command == "PATCH":
                    fake.replicas = int(body["spec"]["replicas"])
                self._answer(200, fake.scale())

            do_GET = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def scale(self) -> dict[str, Any]:
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
            "spec": {"replicas": self.replicas},
            "status": {"replicas": self.replicas, "selector": "app=hmq-worker"},
        }

    def kubeconfig(self, path: Path, namespace: str = NAMESPACE) -> Path:
        cluster = {"name": "fake", "cluster": {"server": self.url}}
        context = {"name": "fake", "context": {"cluster": "fake", "user": "scaler", "namespace": namespace}}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "contexts": [context],
            "current-context": "fake",
            "users": [{"name": "scaler", "user": {"token": TOKEN}}],
        }
        path.write_text(json.dumps(config))
        return path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    api = FakeKubernetes(replicas=1)
    yield api
    api.close()


def test_the_provider_reads_and_patches_only_the_scale_subresource(
    fake: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.autoscale.kubernetes import KubernetesOptions, KubernetesProvider

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    provider = KubernetesProvider(KubernetesOptions(kubeconfig=kubeconfig))  # the namespace comes from the context
    assert provider.namespace == NAMESPACE and provider.fleet().running == 1
    provider.start(2)
    assert fake.replicas == 3 and provider.fleet().running == 3
    provider.retire(5)
    assert fake.replicas == 0
    scale = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
    assert {(m, p.split("?")[0]) for m, p, _, _ in fake.requests} == {("GET", scale), ("PATCH", scale)}
    assert {auth for *_, auth in fake.requests} == {f"Bearer {TOKEN}"}
    assert {ct for m, _, ct, _ in fake.requests if m == "PATCH"} <= {
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
    }
    other = KubernetesProvider(KubernetesOptions(deployment="missing", kubeconfig=kubeconfig))
    with pytest.raises(ProviderError, match="could not read the scale of deployment hmq/missing: 404"):
        other.fleet()


def test_hmq_autoscale_kubernetes_follows_the_queue(fake: FakeKubernetes, server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda: 1, [()] * 5)
    credentials = server.worker_credentials(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HMQ_", "KUBERNETES_"))}
    env["KUBECONFIG"] = str(fake.kubeconfig(tmp_path / "kubeconfig"))
    argv = [sys.executable, "-m", "hmq", "autoscale", "kubernetes", "--credentials", str(credentials)]
    argv += ["--max-workers", "3", "--interval", "0.5", "--idle-timeout", "2", "--cooldown", "0"]
    log = open(tmp_path / "autoscale.log", "ab")  # noqa: SIM115 - closed below
    scaler = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: fake.replicas == 3, timeout=60, what="the Deployment to be scaled to --max-workers")
        tag.cancel()  # the queue empties: replicas go down once the idle timeout has passed
        wait_for(lambda: fake.replicas == 0, timeout=60, what="the Deployment to be scaled down")
    finally:
        scaler.send_signal(signal.SIGTERM)
        code = scaler.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "autoscale.log").read_text()[-3000:]
    assert "retiring 3" in (tmp_path / "autoscale.log").read_text()
