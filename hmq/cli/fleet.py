"""The workers: `hmq workers` (the fleet, as the admin sees it) and `hmq worker` (run one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from hmq import defaults
from hmq._errors import HmqError
from hmq.cli._app import admin_key_text, fail, main
from hmq.config import hmq_home


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
        key = admin_key_text(admin_key_file or (default_key if default_key.is_file() else None))
        with Admin(url, key) as admin:
            seen = admin.workers(since=time.time() - 3600)
    except HmqError as exc:
        fail(exc)
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


main.add_lazy_command(
    "worker",
    "worker.__main__:main",
    "Run a worker: claim tasks from an API and run them.",
)
