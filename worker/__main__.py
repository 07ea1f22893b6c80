"""``python -m worker``: run one worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import click

from hmq._errors import HmqError
from hmq.config import hmq_home
from hmq.credentials import WorkerCredentials
from worker.runner import CachedWorker
from worker.settings import WorkerSettings


def default_credentials() -> Path:
    """``$HMQ_WORKER_CREDENTIALS``, or ``$HMQ_HOME/worker.json``."""
    return Path(os.environ.get("HMQ_WORKER_CREDENTIALS") or hmq_home() / "worker.json")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--api", "url", envvar="HMQ_API_URL", help="API URL (default: the one in the credentials).")
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Worker credentials file (default: $HMQ_WORKER_CREDENTIALS or $HMQ_HOME/worker.json).",
)
@click.option(
    "--datacenter",
    envvar="HMQ_DATACENTER",
    default="default",
    show_default=True,
    help="Datacenter name; tasks submitted with datacenters=[...] run only where named.",
)
@click.option(
    "--cores", type=click.IntRange(min=1), envvar="HMQ_CORES", default=None, help="Cores to use (default: all)."
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="HMQ_WORKER_CACHE",
    default=None,
    help="Package environments and scratch space (default: $TMPDIR/hmq-worker).",
)
@click.option(
    "--executor-user",
    envvar="HMQ_EXECUTOR_USER",
    default=None,
    help="Run calls as this unprivileged user (the worker runs as root): calls cannot read the credentials.",
)
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "uid", "none"]),
    envvar="HMQ_ISOLATION",
    default="auto",
    show_default=True,
    help="How calls are isolated: a bubblewrap sandbox, a separate uid (--executor-user), or none (unsafe).",
)
@click.option(
    "--retry-deadline",
    "retry_deadline",
    type=click.FloatRange(min=0),
    envvar="HMQ_RETRY_DEADLINE",
    default=None,
    help="Seconds a request to the API or the object store is retried while they are down (default: 300).",
)
@click.option("--pip-arg", "pip_args", multiple=True, help="Extra argument for pip when building environments.")
@click.option("--log-level", default="INFO", show_default=True)
def main(
    url: Optional[str],
    credentials: Optional[Path],
    datacenter: str,
    cores: Optional[int],
    cache_dir: Optional[Path],
    executor_user: Optional[str],
    isolation: str,
    retry_deadline: Optional[float],
    pip_args: tuple[str, ...],
    log_level: str,
) -> None:
    """Claim tasks from an hmq API and run them."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        creds = WorkerCredentials.load(credentials or default_credentials())
        settings = WorkerSettings.from_options(
            url=url or creds.url,
            datacenter=datacenter,
            cores=cores,
            cache_dir=cache_dir,
            pip_args=pip_args,
            executor_user=executor_user,
            isolation=isolation,
            retry_deadline_seconds=retry_deadline,
        )
        worker = CachedWorker(creds, settings)
    except HmqError as exc:
        raise click.ClickException(str(exc)) from None

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger("hmq.worker").info("signal %d: stopping", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        worker.run()
    except HmqError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main(prog_name="python -m worker")
