"""The Kubernetes provider: scale a worker Deployment through the official ``kubernetes`` client
(the ``kubernetes`` extra: ``pip install 'hmq[kubernetes]'``).

The autoscaler reads and patches only the Deployment's ``scale`` subresource, so its Role needs
``get`` and ``patch`` on ``deployments/scale`` of that one Deployment (``infra/k8s/``). Inside the
cluster it authenticates with its ServiceAccount; elsewhere with a kube-config file
(``--kubeconfig``, ``$KUBECONFIG`` or ``~/.kube/config``).

A Deployment restarts a worker that exits, so workers here do not leave by themselves: the
autoscaler raises the replica count as work arrives and lowers it once the queue has needed
fewer workers for ``idle_timeout`` seconds. Kubernetes then sends the pods it removes SIGTERM;
each drains (running calls get ``--grace`` seconds, within ``terminationGracePeriodSeconds``)
and hands back what is unfinished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hmq._errors import ConfigurationError, ProviderError
from worker.autoscale.scaler import Fleet

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class KubernetesOptions:
    """Which Deployment to scale."""

    deployment: str = "hmq-worker"
    namespace: Optional[str] = None
    """Default: the ServiceAccount's namespace in a pod, else the kube-config context's, else ``default``."""
    kubeconfig: Optional[Path] = None
    """Outside a pod: the kube-config file (default: the client's, ``~/.kube/config``)."""


def _client() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise ConfigurationError(
            "the kubernetes provider needs the kubernetes client: pip install 'hmq[kubernetes]'"
        ) from None
    return kubernetes


class KubernetesProvider:
    """The replicas of one Deployment."""

    name = "kubernetes"
    leave_by_themselves = False

    def __init__(self, options: KubernetesOptions) -> None:
        k8s = _client()
        self._errors: tuple[type[BaseException], ...] = (k8s.client.exceptions.ApiException, OSError)
        try:
            k8s.config.load_incluster_config()
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except (k8s.config.ConfigException, OSError):
            config_file = None if options.kubeconfig is None else str(options.kubeconfig)
            try:
                k8s.config.load_kube_config(config_file=config_file)
            except (k8s.config.ConfigException, OSError) as exc:
                raise ConfigurationError(
                    f"no Kubernetes configuration (in a pod, KUBECONFIG or ~/.kube/config): {exc}"
                ) from None
            _, context = k8s.config.list_kube_config_contexts(config_file=config_file)
            namespace = (context or {}).get("context", {}).get("namespace") or "default"
        self.namespace = options.namespace or namespace
        self.deployment = options.deployment
        self.apps = k8s.client.AppsV1Api()
        self._replicas = 0

    def _call(self, what: str, method: Any, *args: Any) -> Any:
        try:
            return method(self.deployment, self.namespace, *args)
        except self._errors as exc:
            parts = (getattr(exc, "status", None), getattr(exc, "reason", None) or exc)
            answer = " ".join(str(part) for part in parts if part)
            raise ProviderError(f"could not {what} deployment {self.namespace}/{self.deployment}: {answer}") from None

    def fleet(self) -> Fleet:
        scale = self._call("read the scale of", self.apps.read_namespaced_deployment_scale)
        self._replicas = int(scale.spec.replicas or 0)
        return Fleet(running=self._replicas)

    def _scale(self, replicas: int) -> None:
        self._call("scale", self.apps.patch_namespaced_deployment_scale, {"spec": {"replicas": replicas}})
        self._replicas = replicas

    def start(self, count: int) -> None:
        self._scale(self._replicas + count)

    def retire(self, count: int) -> None:
        self._scale(max(0, self._replicas - count))

    def cancel_queued(self, count: int) -> int:
        return 0  # a Deployment has a replica count, not a queue: surplus replicas are retired

    def close(self) -> None:
        """Nothing to do: the replicas stay as they are."""
