"""infra/k8s: every manifest is valid against the Kubernetes OpenAPI schemas (kubernetes-validate
ships them; strict: no unknown field), and the pieces fit together."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

K8S = REPO / "infra" / "k8s"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")  # an older and a recent release
CRDS = {("keda.sh/v1alpha1", "ScaledObject")}  # not in Kubernetes' own schemas: checked by hand below


def _documents() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _find(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes_objects(version: str) -> None:
    kinds = []
    for _, doc in _documents():
        if (doc["apiVersion"], doc["kind"]) not in CRDS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError
            kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(
        ["Namespace", "Deployment", "Deployment", "ServiceAccount", "Role", "RoleBinding", "Service"]
    )
    broken = _find("Deployment", "hmq-worker")
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 60  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_everything_but_the_namespace_is_in_it() -> None:
    for name, doc in _documents():
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "hmq", f"{name}: {doc['kind']} {doc['metadata']['name']}"


def test_the_worker_deployment_drains_within_its_grace_and_runs_unprivileged() -> None:
    pod = _find("Deployment", "hmq-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert pod["terminationGracePeriodSeconds"] >= float(env["HMQ_GRACE"]) + 10
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "Unconfined"  # bubblewrap's user namespaces
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["cpu"] == env["HMQ_CORES"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "credentials")
    assert env["HMQ_WORKER_CREDENTIALS"].startswith(mount["mountPath"] + "/") and mount["readOnly"]
    volume = next(v for v in pod["volumes"] if v["name"] == "credentials")
    assert volume["secret"]["secretName"] == "hmq-worker"
    assert pod["automountServiceAccountToken"] is False


def test_the_autoscaler_may_scale_only_the_worker_deployment() -> None:
    (rule,) = _find("Role", "hmq-autoscaler")["rules"]
    assert rule == {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale"],
        "resourceNames": ["hmq-worker"],
        "verbs": ["get", "patch"],
    }
    binding = _find("RoleBinding", "hmq-autoscaler")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hmq-autoscaler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hmq-autoscaler", "namespace": "hmq"}]
    pod = _find("Deployment", "hmq-autoscaler")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "hmq-autoscaler"
    (container,) = pod["containers"]
    args = container["args"]
    assert container["command"] == ["hmq", "autoscale", "kubernetes"]
    worker = _find("Deployment", "hmq-worker")["spec"]["template"]["spec"]["containers"][0]
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    options = dict(zip(args[::2], args[1::2], strict=True))
    assert options["--deployment"] == "hmq-worker"
    assert (options["--datacenter"], options["--cores"]) == (worker_env["HMQ_DATACENTER"], worker_env["HMQ_CORES"])


def test_the_autoscaler_arguments_are_options_of_hmq_autoscale() -> None:
    from click.testing import CliRunner

    from hmq.cli import main

    container = _find("Deployment", "hmq-autoscaler")["spec"]["template"]["spec"]["containers"][0]
    help_text = CliRunner().invoke(main, ["autoscale", "--help"]).output
    flags = [a for a in container["args"] if a.startswith("--")]
    assert flags and all(f" {f} " in help_text for f in flags), shlex.join(flags)


def test_the_keda_scaled_object_reads_the_autoscalers_target() -> None:
    scaled = _find("ScaledObject", "hmq-worker")
    assert scaled["spec"]["scaleTargetRef"] == {"name": "hmq-worker"}
    (trigger,) = scaled["spec"]["triggers"]
    service = _find("Service", "hmq-autoscaler")
    (port,) = service["spec"]["ports"]
    assert trigger["type"] == "metrics-api" and trigger["metadata"]["valueLocation"] == "target"
    assert trigger["metadata"]["url"] == f"http://hmq-autoscaler.hmq.svc:{port['port']}/metrics"
    autoscaler = _find("Deployment", "hmq-autoscaler")["spec"]["template"]
    assert service["spec"]["selector"].items() <= autoscaler["metadata"]["labels"].items()
    assert port["targetPort"] in {p["name"] for p in autoscaler["spec"]["containers"][0]["ports"]}
    args = autoscaler["spec"]["containers"][0]["args"]
    assert args[args.index("--metrics-port") + 1] == str(
        autoscaler["spec"]["containers"][0]["ports"][0]["containerPort"]
    )
    assert scaled["spec"]["maxReplicaCount"] == int(args[args.index("--max-workers") + 1])


def test_the_shipped_slurm_template_is_the_autoscalers_default() -> None:
    from worker.autoscale.slurm import DEFAULT_TEMPLATE

    shipped = REPO / "infra" / "slurm" / "hmq-worker.sbatch"
    assert shipped.read_text() == DEFAULT_TEMPLATE.read_text()
    assert "exec " in shipped.read_text() and "#SBATCH --signal=B:TERM@" in shipped.read_text()
    assert Path(DEFAULT_TEMPLATE).is_file()
