"""``python -m worker``: run one worker process until it leaves (idle, enough tasks, its run time
is up) or is stopped: the first SIGTERM/SIGINT drains it (running calls get ``--grace`` seconds),
a second one stops it at once. Either way unfinished tasks are handed back and it exits 0."""

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
    "--memory",
    envvar="HMQ_MEMORY",
    default=None,
    help="Memory to offer, bytes or a size like 8GiB (default: the machine's); tasks whose memory= is larger are not claimed.",
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
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    envvar="HMQ_IDLE_TIMEOUT",
    default=None,
    help="Exit (code 0) after this many seconds with no task to run (default: never).",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    envvar="HMQ_MAX_TASKS",
    default=None,
    help="Take at most this many tasks, then exit once they are done (default: no limit).",
)
@click.option(
    "--max-runtime",
    type=click.FloatRange(min=0, min_open=True),
    envvar="HMQ_MAX_RUNTIME",
    default=None,
    help="Seconds this worker may run (a batch job's time limit): it stops claiming --grace seconds before "
    "and has handed back what is unfinished by then (default: no limit).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    envvar="HMQ_GRACE",
    default=30.0,
    show_default=True,
    help="On SIGTERM (and at --max-runtime): seconds running calls may take to finish before they are "
    "stopped and handed back. A second SIGTERM stops at once.",
)
@click.option(
    "--max-log-bytes",
    type=click.IntRange(min=0),
    envvar="HMQ_MAX_LOG_BYTES",
    default=None,
    help="Output (stdout and stderr) kept per call and sent to its user [default: 1 MiB].",
)
@click.option("--log-level", default="INFO", show_default=True)
def main(
    url: Optional[str],
    credentials: Optional[Path],
    datacenter: str,
    cores: Optional[int],
    memory: Optional[str],
    cache_dir: Optional[Path],
    executor_user: Optional[str],
    isolation: str,
    retry_deadline: Optional[float],
    pip_args: tuple[str, ...],
    idle_timeout: Optional[float],
    max_tasks: Optional[int],
    max_runtime: Optional[float],
    grace: float,
    max_log_bytes: Optional[int],
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
            memory=int(memory) if memory is not None and memory.strip().isdigit() else memory,
            cache_dir=cache_dir,
            pip_args=pip_args,
            executor_user=executor_user,
            isolation=isolation,
            idle_timeout=idle_timeout,
            max_tasks=max_tasks,
            max_runtime=max_runtime,
            grace=grace,
            max_log_bytes=max_log_bytes,
            retry_deadline_seconds=retry_deadline,
        )
        worker = CachedWorker(creds, settings)
    except HmqError as exc:
        raise click.ClickException(str(exc)) from None

    def _stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if worker.life.leaving is None:
            logging.getLogger("hmq.worker").info("%s: draining (running calls get %g s)", name, settings.grace)
            worker.drain(f"{name} received")
        else:
            logging.getLogger("hmq.worker").info("%s again: stopping now", name)
            worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        worker.run()
    except HmqError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main(prog_name="python -m worker")
