"""`hmq autoscale PROVIDER`: keep the number of workers in line with the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hmq._errors import HmqError
from hmq.cli._app import fail, main
from hmq.config import hmq_home


@main.command()
@click.argument("provider", type=click.Choice(["slurm", "kubernetes", "local"]))
@click.option(
    "--min-workers", type=click.IntRange(min=0), default=0, show_default=True, help="Workers kept even with no work."
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Never more workers than this, queued and running together.",
)
@click.option(
    "--cores",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cores per worker (Slurm: --cpus-per-task). Tasks needing more are not counted.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds without work after which a worker leaves (passed to slurm and local workers; kubernetes: "
    "replicas are lowered once the queue has needed fewer for this long).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a stopped worker's running calls may take to finish (passed to the workers).",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Worker credentials, used to read the queue depth and given to the workers (default: "
    "$HMQ_WORKER_CREDENTIALS or $HMQ_HOME/worker.json, what `hmq up` makes).",
)
@click.option("--api", "url", envvar="HMQ_API_URL", default=None, help="API URL (default: the credentials').")
@click.option(
    "--datacenter",
    envvar="HMQ_DATACENTER",
    default="default",
    show_default=True,
    help="Datacenter of the workers: only tasks that may run there count.",
)
@click.option("--python", default=None, help="Python major.minor of the workers (default: this interpreter's).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between rounds.",
)
@click.option(
    "--scale-up-step", type=click.IntRange(min=1), default=10, show_default=True, help="Most workers started per round."
)
@click.option(
    "--cooldown",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds after starting workers before more are started.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve the latest target as JSON on http://HOST:PORT/metrics (for KEDA's metrics-api scaler).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address --metrics-port listens on.")
@click.option("--dry-run", is_flag=True, help="Decide and log (and serve metrics), but start and stop nothing.")
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="slurm: the job script (default: the shipped hmq-worker.sbatch; copy infra/slurm/ and edit).",
)
@click.option("--partition", default=None, help="slurm: sbatch --partition.")
@click.option("--account", default=None, help="slurm: sbatch --account.")
@click.option(
    "--time",
    "time_limit",
    default=None,
    help="slurm: sbatch --time (e.g. 4:00:00); the workers get --max-runtime to leave before it.",
)
@click.option("--job-name", default=None, help="slurm: job name of the workers (default: hmq-worker-DATACENTER).")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, help="slurm: extra sbatch argument (repeatable).")
@click.option(
    "--arrays/--no-arrays",
    default=True,
    show_default=True,
    help="slurm: submit several workers as one job array.",
)
@click.option("--deployment", default="hmq-worker", show_default=True, help="kubernetes: the worker Deployment.")
@click.option(
    "--namespace", default=None, help="kubernetes: its namespace (default: the pod's, else the kube-config context's)."
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    default=None,
    help="kubernetes: outside a pod, the kube-config file (default: $KUBECONFIG or ~/.kube/config).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="local: the workers' cache directory (default: $HMQ_HOME/worker-cache).",
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def autoscale(provider: str, **options: Any) -> None:
    """Keep workers in line with the queue: start them as tasks wait, let them leave when idle.

    PROVIDER is where workers come from: `slurm` (batch jobs through sbatch, tracked with squeue,
    queued ones no longer needed cancelled with scancel), `kubernetes` (the replicas of a worker
    Deployment, needs the kubernetes extra) or `local` (worker processes on this machine).
    Runs until SIGTERM or Ctrl-C.
    """
    import logging

    from worker.__main__ import default_credentials
    from worker.autoscale import Launch, run
    from worker.autoscale.scaler import ScalerSettings

    logging.basicConfig(level=options.pop("log_level").upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    shared = {k: options.pop(k) for k in ("min_workers", "max_workers", "cores", "idle_timeout", "grace", "datacenter")}
    shared.update(interval=options.pop("interval"), scale_up_step=options.pop("scale_up_step"))
    python = options.pop("python")
    try:
        settings = ScalerSettings(cooldown=options.pop("cooldown"), **shared, **({"python": python} if python else {}))
        launch = Launch(
            provider=provider,
            credentials=options.pop("credentials") or default_credentials(),
            url=options.pop("url"),
            provider_options=_provider_options(provider, settings.datacenter, options),
            metrics=(options["metrics_host"], options["metrics_port"]) if options["metrics_port"] is not None else None,
            dry_run=options["dry_run"],
        )
        run(launch, settings)
    except HmqError as exc:
        fail(exc)


_PROVIDER_OPTIONS = {
    "slurm": ("template", "partition", "account", "time_limit", "job_name", "sbatch_args", "arrays"),
    "kubernetes": ("deployment", "namespace", "kubeconfig"),
    "local": ("cache_dir",),
}
"""The options of `hmq autoscale` that belong to one provider."""

_UNSET = {"arrays": True, "deployment": "hmq-worker", "sbatch_args": ()}
"""Their defaults, other than None."""


def _provider_options(provider: str, datacenter: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of PROVIDER; another provider's options must be left unset."""
    foreign = [k for p, keys in _PROVIDER_OPTIONS.items() if p != provider for k in keys]
    given = [k for k in foreign if options.get(k) not in (None, _UNSET.get(k))]
    if given:
        flags = ", ".join("--" + ("time" if k == "time_limit" else k.replace("_", "-")) for k in given)
        raise click.UsageError(f"{flags}: not an option of the {provider} provider")
    chosen = {k: options[k] for k in _PROVIDER_OPTIONS[provider] if options.get(k) is not None}
    if provider == "slurm":
        chosen["time"] = chosen.pop("time_limit", None)
        chosen.setdefault("job_name", f"hmq-worker-{datacenter}")
    elif provider == "local":
        chosen["log_dir"] = hmq_home() / "logs"
        chosen.setdefault("cache_dir", hmq_home() / "worker-cache")
    return chosen
