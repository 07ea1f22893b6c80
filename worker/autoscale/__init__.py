"""``hmq autoscale PROVIDER``: keep the number of workers in line with the queue.

A long-running process (on a Slurm login node, as a Kubernetes Deployment, or on one machine)
that polls the API's queue depth with worker credentials and starts or stops workers through a
provider: one module each, imported when chosen.

- :mod:`worker.autoscale.scaler`: the loop and its rule (shared by every provider);
- :mod:`worker.autoscale.slurm`: batch jobs (``sbatch``, ``squeue``, ``scancel``);
- :mod:`worker.autoscale.kubernetes`: a Deployment's replicas (the ``kubernetes`` client);
- :mod:`worker.autoscale.local`: worker processes on this machine, as ``hmq up`` runs them;
- :mod:`worker.autoscale.metrics`: the target as JSON over HTTP (for KEDA's metrics-api scaler).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hmq._errors import ConfigurationError
from hmq.credentials import WorkerCredentials
from worker.autoscale.scaler import Autoscaler, Provider, ScalerSettings

PROVIDERS = ("slurm", "kubernetes", "local")

log = logging.getLogger("hmq.autoscale")


@dataclass(frozen=True)
class Launch:
    """Everything ``hmq autoscale`` was told besides :class:`ScalerSettings`."""

    provider: str
    credentials: Path
    url: Optional[str] = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    """Options of the chosen provider (``SlurmOptions``, ``KubernetesOptions``, or ``log_dir``
    and ``cache_dir`` for local)."""
    metrics: Optional[tuple[str, int]] = None
    """Serve the latest round as JSON on ``http://HOST:PORT/metrics``."""
    dry_run: bool = False


def worker_args(
    settings: ScalerSettings, credentials: Path, url: str, max_runtime: Optional[float] = None
) -> list[str]:
    """The options every started worker gets."""
    args = ["--api", url, "--credentials", str(Path(credentials).resolve()), "--datacenter", settings.datacenter]
    args += ["--idle-timeout", f"{settings.idle_timeout:g}", "--grace", f"{settings.grace:g}"]
    if max_runtime is not None:
        args += ["--max-runtime", f"{max_runtime:g}"]
    return args


def provider_for(launch: Launch, settings: ScalerSettings, url: str) -> Provider:
    """The provider ``launch`` names, set up (its module is imported here, when chosen)."""
    options = launch.provider_options
    if launch.provider == "slurm":
        from worker.autoscale.slurm import SlurmOptions, SlurmProvider

        slurm = SlurmOptions(**options)
        runtime = slurm.max_runtime()
        if runtime is not None and runtime <= settings.grace:
            raise ConfigurationError(
                f"--time {slurm.time} leaves the workers no time beyond --grace {settings.grace:g}"
            )
        return SlurmProvider(slurm, settings.cores, worker_args(settings, launch.credentials, url, runtime))
    if launch.provider == "kubernetes":
        from worker.autoscale.kubernetes import KubernetesOptions, KubernetesProvider

        return KubernetesProvider(KubernetesOptions(**options))
    if launch.provider == "local":
        from worker.autoscale.local import LocalProvider

        args = worker_args(settings, launch.credentials, url) + ["--cores", str(settings.cores)]
        if options.get("cache_dir") is not None:
            args += ["--cache-dir", str(options["cache_dir"])]
        return LocalProvider(args, options["log_dir"], settings.grace)
    raise ConfigurationError(f"unknown provider {launch.provider!r} (choose from {', '.join(PROVIDERS)})")


def run(launch: Launch, settings: ScalerSettings) -> None:
    """Autoscale until SIGTERM or SIGINT; then stop the provider (local workers drain)."""
    from worker.autoscale.metrics import DryRun, serve_metrics
    from worker.session import WorkerSession

    creds = WorkerCredentials.load(launch.credentials)
    url = launch.url or creds.url
    if not url:
        raise ConfigurationError("no API URL: pass --api or use credentials that name it")
    provider = provider_for(launch, settings, url)
    session = WorkerSession.connect(url, creds.identity)
    scaler = Autoscaler(
        settings,
        DryRun(provider) if launch.dry_run else provider,
        lambda: session.queue_depth(settings.datacenter, settings.python),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    server = serve_metrics(scaler, *launch.metrics) if launch.metrics else None
    try:
        scaler.run(stop)
    finally:
        if server is not None:
            server.shutdown()
        provider.close()
        session.close()
        log.info("autoscaler stopped")
