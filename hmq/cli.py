"""The ``hmq`` command line."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import shlex
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import click

from hmq import defaults
from hmq._errors import HmqError
from hmq.config import hmq_home


def _fail(exc: Exception) -> NoReturn:
    raise click.ClickException(str(exc)) from None


SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "mangum", "boto3", "psycopg")
"""What the ``server`` extra installs (pyproject.toml): `hmq up`, `hmq serve` and `hmq migrate` need it."""

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _missing(modules: tuple[str, ...]) -> Optional[str]:
    """The first of MODULES that cannot be imported, without importing any."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:
            return name
    return None


def _with_extra(extra: str) -> str:
    """The pip arguments that install this hmq with EXTRA, from where it was installed (PEP 610)."""
    records = (d.read_text("direct_url.json") for d in importlib.metadata.distributions(name="hmq"))
    origin = json.loads(next((r for r in records if r), "{}"))  # a checkout's hmq.egg-info has none
    url = origin.get("url")
    if url is None:  # from a package index
        return shlex.quote(f"hmq[{extra}]")
    if origin.get("dir_info", {}).get("editable"):
        return "-e " + shlex.quote(f"{url2pathname(urlparse(url).path)}[{extra}]")
    vcs = origin.get("vcs_info", {}).get("vcs")
    return shlex.quote(f"hmq[{extra}] @ {vcs + '+' if vcs else ''}{url}")


def _needs_server(command: _Command) -> _Command:
    """Run COMMAND only with the server extra installed; otherwise say in one line how to get it."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        missing = _missing(SERVER_MODULES)
        if missing is not None:
            path = click.get_current_context().command_path
            raise click.ClickException(
                f"{path} needs the server extra ({missing} is not installed): pip install {_with_extra('server')}"
            )
        return command(*args, **kwargs)

    return cast(_Command, checked)


def _admin_key_text(admin_key_file: Optional[Path]) -> str:
    if admin_key_file is not None:
        return admin_key_file.read_text().strip()
    return click.prompt("Admin key", hide_input=True).strip()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hmq")
def main() -> None:
    """hmq: an end-to-end encrypted task queue. `hmq up` starts a local one."""


# --- the embedded stack ------------------------------------------------------------------------
@main.command()
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Local worker processes.")
@click.option(
    "--cores", type=click.IntRange(min=1), default=None, help="Cores per worker (default: all cores / workers)."
)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=None, help="API port (default: a free one).")
@click.option("--database", default=None, help="Index database URL (default: SQLite under $HMQ_HOME/server).")
@click.option("--storage", default=None, help="Object store URL (default: file://$HMQ_HOME/server/objects).")
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "uid", "none"]),
    default=None,
    help="How the workers isolate calls (default: auto, a bubblewrap sandbox); `none` only on a "
    "machine without bubblewrap, for a queue only you use.",
)
@_needs_server
def up(
    workers: int,
    cores: Optional[int],
    port: Optional[int],
    database: Optional[str],
    storage: Optional[str],
    isolation: Optional[str],
) -> None:
    """Start a local queue (API + workers) in the background; returns once it is healthy."""
    from hmq import stack

    home = hmq_home()
    try:
        state = stack.up(
            home, workers=workers, cores=cores, port=port, database=database, storage=storage, isolation=isolation
        )
    except HmqError as exc:
        _fail(exc)
    click.echo(f"hmq is up at {state.url} with {len(state.workers)} worker(s); HMQ_HOME={home}")


@main.command()
def down() -> None:
    """Stop the local queue started by `hmq up`."""
    from hmq import stack

    state = stack.down(hmq_home())
    click.echo("hmq is down" if state is not None else "hmq was not running")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show the local queue started by `hmq up`."""
    from hmq import stack

    state = stack.StackState.load(hmq_home())
    info: dict[str, Any] = state.status() if state else {"running": False, "home": str(hmq_home()), "workers": []}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    elif not info["running"]:
        click.echo("hmq is not running (start it with `hmq up`)")
    else:
        click.echo(f"API      {info['url']} (pid {info['api']['pid']})")
        click.echo(f"index    {info['database']}")
        click.echo(f"objects  {info['storage']}")
        for w in info["workers"]:
            click.echo(f"{w['name']:<9}pid {w['pid']} {'running' if w['alive'] else 'stopped'}  log {w['log']}")
    if not info["running"]:
        sys.exit(1)


# --- access ------------------------------------------------------------------------------------
@main.command("request-access")
@click.argument("url")
def request_access(url: str) -> None:
    """Create your key for the API at URL and print the signing request for the admin."""
    import hmq

    try:
        hmq.request_access(url)
    except HmqError as exc:
        _fail(exc)


@main.command("grant-access")
@click.argument("signing_request")
@click.argument("username")
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin key (default: prompt).",
)
@click.option("--role", type=click.Choice(["user", "worker"]), default="user", show_default=True)
def grant_access(signing_request: str, username: str, admin_key_file: Optional[Path], role: str) -> None:
    """Admin: grant the key behind SIGNING_REQUEST access as USERNAME."""
    from hmq import provision

    try:
        out = provision.grant_request(signing_request, _admin_key_text(admin_key_file), username, role)
    except HmqError as exc:
        _fail(exc)
    click.echo(f"granted {out.role} {out.name!r} (key {out.key_id})")


@main.command()
@click.argument("username")
@click.option("--api", "url", required=True, help="API URL.")
@click.option("--admin-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def revoke(username: str, url: str, admin_key_file: Optional[Path]) -> None:
    """Admin: revoke USERNAME; their open tasks are cancelled."""
    from hmq.admin import Admin

    try:
        with Admin(url, _admin_key_text(admin_key_file)) as admin:
            out = admin.revoke(username)
    except HmqError as exc:
        _fail(exc)
    click.echo(f"revoked {out.name!r}; cancelled {out.cancelled} open task(s)")


@main.command()
@click.argument("username")
@click.argument("weight", type=click.FloatRange(min=0, min_open=True, max=defaults.MAX_SHARE))
@click.option("--api", "url", default=None, help="API URL (default: the one in $HMQ_HOME/client.json).")
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin key (default: $HMQ_HOME/admin.key when it exists, else a prompt).",
)
def share(username: str, weight: float, url: Optional[str], admin_key_file: Optional[Path]) -> None:
    """Admin: set USERNAME's share of the workers to WEIGHT (default 1 for everyone).

    While several users have tasks waiting, claims go to them in turn, each holding running
    tasks in proportion to their share: a user with 2 gets twice the slots of a user with 1.
    """
    from hmq.admin import Admin
    from hmq.config import ClientConfig

    home = hmq_home()
    default_key = home / "admin.key"
    try:
        url = url or ClientConfig.load(home).url
        key = _admin_key_text(admin_key_file or (default_key if default_key.is_file() else None))
        with Admin(url, key) as admin:
            out = admin.share(username, weight)
    except HmqError as exc:
        _fail(exc)
    click.echo(f"share of {out.name!r} is now {out.share:g}")


@main.command()
@click.option("--api", "url", default=None, help="API URL (default: the one in $HMQ_HOME/client.json).")
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin key (default: $HMQ_HOME/admin.key when it exists, else a prompt).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def workers(url: Optional[str], admin_key_file: Optional[Path], as_json: bool) -> None:
    """Admin: the workers seen in the last hour; stale ones and ones running calls unisolated are marked."""
    import time

    from hmq.admin import Admin
    from hmq.config import ClientConfig

    home = hmq_home()
    default_key = home / "admin.key"
    try:
        url = url or ClientConfig.load(home).url
        key = _admin_key_text(admin_key_file or (default_key if default_key.is_file() else None))
        with Admin(url, key) as admin:
            seen = admin.workers(since=time.time() - 3600)
    except HmqError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps([w.model_dump(mode="json") for w in seen], indent=2))
        return
    for w in seen:
        click.echo(_describe_worker(w, time.time()))


def _describe_worker(w: Any, now: float) -> str:
    memory = f"{w.memory / 1024**3:.1f} GiB" if w.memory else "? GiB"
    age = now - w.last_seen
    state = "STALE" if age > defaults.LEASE_SECONDS else "live"
    line = (
        f"{w.name} {w.hostname or '-'} [{state}, seen {age:.0f} s ago] datacenter {w.datacenter}, {w.cores} core(s), "
        f"{memory}, Python {w.python}, {w.running} running, isolation {w.isolation}"
    )
    if w.isolation == "none":
        line += "  WARNING: runs calls without isolation (--isolation none): tasks can read its credentials"
    return line


@main.command("add-worker")
@click.argument("name")
@click.option("--api", "url", required=True, help="API URL the worker will use.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Credentials file to write (a secret).",
)
@click.option("--admin-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def add_worker(name: str, url: str, out: Path, admin_key_file: Optional[Path]) -> None:
    """Admin: create and grant worker credentials (run workers with --credentials OUT)."""
    from hmq import crypto, provision
    from hmq.admin import Admin

    try:
        with Admin(url, crypto.AdminKey.from_text(_admin_key_text(admin_key_file))) as admin:
            provision.new_worker(admin, out, name, url)
    except HmqError as exc:
        _fail(exc)
    click.echo(f"worker {name!r} granted; credentials written to {out} (keep them secret)")


@main.command("admin-key")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the new admin key."
)
def admin_key(out: Path) -> None:
    """Create a deployment's admin key; prints the public key for HMQ_ADMIN_PUBLIC_KEY."""
    from hmq import provision

    try:
        key = provision.new_admin_key(out)
    except HmqError as exc:
        _fail(exc)
    click.echo(key.identity.public.to_text())


# --- the queue ---------------------------------------------------------------------------------
@main.command()
def tags() -> None:
    """List your tags with their task counts."""
    import hmq

    try:
        for t in hmq.api.list_tags():
            click.echo(f"{t.tag}  {t.total} task(s), {t.open} open")
    except HmqError as exc:
        _fail(exc)


@main.command()
@click.argument("tag_name", metavar="TAG")
@click.option("--task", "task_id", type=click.UUID, default=None, help="Only this task's output (no header).")
@click.option("--tail", type=click.IntRange(min=1), default=None, help="Only the last N lines of each output.")
def logs(tag_name: str, task_id: Optional[uuid.UUID], tail: Optional[int]) -> None:
    """Print what the finished tasks of TAG wrote to stdout and stderr, in submission order.

    Each task's output follows a `==> TASK_ID <==` line; tasks that printed nothing are left out.
    """
    import hmq
    from hmq import wire

    try:
        wire.check_name(tag_name)
    except ValueError as exc:
        raise click.BadParameter(f"{tag_name!r} {exc}", param_hint="TAG") from None
    only = None if task_id is None else str(task_id)
    try:
        tag = hmq.Tag.from_queue(tag_name)
        if only is not None and only not in set(tag.task_ids):
            raise hmq.NotFound("unknown_task", f"tag {tag_name!r} has no task {only}")
        still_open = tag.pull(tasks_subset=None if only is None else [only])
    except HmqError as exc:
        _fail(exc)
    shown = 0
    for t, text in zip(tag.task_ids, tag.logs, strict=True):
        if text is None or only not in (None, t):
            continue
        shown += 1
        if only is None:
            click.echo(f"==> {t} <==")
        lines = text.splitlines(keepends=True)
        click.echo("".join(lines[-tail:] if tail else lines), nl=not text.endswith("\n"))
    _say_what_is_missing(tag.name, only, still_open, shown)


def _say_what_is_missing(tag: str, only: Optional[str], still_open: int, shown: int) -> None:
    """On stderr: that some tasks have not finished (their output comes with their results), or
    that nothing was printed."""
    if still_open:
        which = f"task {only} has" if only else f"{still_open} task(s) of {tag} have"
        click.echo(f"{which} not finished yet; output arrives with the result", err=True)
    elif not shown:
        click.echo(f"task {only} printed nothing" if only else f"no task of {tag} printed anything", err=True)


# --- running the parts -------------------------------------------------------------------------
@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a worker (same options as `python -m worker`)."""
    from worker.__main__ import main as worker_main

    worker_main.main(args=ctx.args, prog_name="hmq worker")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@_needs_server
def serve(ctx: click.Context) -> None:
    """Run the API under uvicorn, configured by HMQ_* variables (same as `python -m lambdas.serve`)."""
    from lambdas.serve import main as serve_main

    serve_main(ctx.args)


@main.command()
@_needs_server
def migrate() -> None:
    """Apply index schema migrations to HMQ_DATABASE_URL (credentials from HMQ_DATABASE_SECRET_ARN if set)."""
    from sqlalchemy.exc import SQLAlchemyError

    from lambdas.migrate import run
    from lambdas.settings import DatabaseSettings

    try:
        revision = run(DatabaseSettings.from_env())
    except HmqError as exc:
        _fail(exc)
    except SQLAlchemyError as exc:  # e.g. the database refused the connection
        _fail(RuntimeError(f"cannot migrate the index: {exc}"))
    click.echo(f"index schema at revision {revision}")


# --- autoscaling -------------------------------------------------------------------------------
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
        _fail(exc)


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
