"""`hmq status [TAG]`: the local queue, the deployment HMQ_HOME is set up for, or one tag."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from hmq._errors import AccessError, HmqError
from hmq.cli._app import TAG, client, echo_json, main
from hmq.cli.tags import STATES, finished, progress, summary_json, when
from hmq.config import ClientConfig, hmq_home

if TYPE_CHECKING:
    from hmq import wire


@main.command()
@click.argument("tag", type=TAG, required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(tag: Optional[str], as_json: bool) -> None:
    """Show the queue: the local one of `hmq up`, or the deployment $HMQ_HOME is set up for (is it
    reachable, who you are there, your open tasks); with TAG, that tag's tasks per state,
    throughput and the API's warnings about it. Exits 1 when the queue is not running or reachable.
    """
    from hmq import stack

    home = hmq_home()
    if tag is not None:
        _tag(tag, as_json)
        return
    state = stack.StackState.load(home)
    if state is None and ClientConfig.exists(home) and not stack.runs_local_queue(home):
        _deployment(as_json)
        return
    info: dict[str, Any] = state.status() if state else {"running": False, "home": str(home), "workers": []}
    _local(info, as_json)


def _local(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json({"kind": "local", **info})
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


def _deployment(as_json: bool) -> None:
    """A shared deployment: reachable or not (asked once, not waited for), who this key is
    there, and the caller's open tasks."""
    api = client(retry_deadline=0)
    try:
        info = api.info()
    except HmqError as exc:
        if as_json:
            echo_json({"kind": "deployment", "url": api.url, "reachable": False, "error": str(exc)})
            sys.exit(1)
        raise click.ClickException(str(exc) if api.url in str(exc) else f"the API at {api.url}: {exc}") from None
    out: dict[str, Any] = {"kind": "deployment", "url": api.url, "reachable": True, "protocol": info.protocol}
    try:
        who = api.whoami()
        out |= {"user": who["name"], "role": who["role"]}
        tags = api.list_tags()
        out["queue"] = {"tags": len(tags), **{s: sum(getattr(t, s) for t in tags) for s in ("pending", "running")}}
    except AccessError as exc:
        out["access"] = str(exc)
    if as_json:
        echo_json(out)
        return
    click.echo(f"API      {api.url} reachable (protocol {info.protocol}); HMQ_HOME={Path(api.home)}")
    if "access" in out:
        click.echo(f"you      no access yet: {out['access']}")
        return
    queue = out["queue"]
    click.echo(f"you      {out['user']} ({out['role']})")
    click.echo(f"queue    {queue['tags']:,} tag(s); {queue['pending']:,} task(s) pending, {queue['running']:,} running")


def _rate(summary: wire.TagSummary) -> Optional[float]:
    """Tasks finished per second, from the tag's submission to its latest result."""
    if summary.last_result is None or summary.last_result <= summary.created or not finished(summary):
        return None
    return finished(summary) / (summary.last_result - summary.created)


def _tag(tag: str, as_json: bool) -> None:
    from hmq._progress import status_notes

    api = client()
    summary = api.tag_summary(tag)
    notes = status_notes(api.get_tag_status(tag))
    rate = _rate(summary)
    if as_json:
        echo_json(summary_json(summary) | {"throughput": rate, "warnings": notes})
        return
    now = time.time()
    counts = ", ".join(f"{getattr(summary, s):,} {s}" for s in STATES)
    click.echo(f"tag         {tag}")
    click.echo(f"created     {when(summary.created)} ({_ago(now - summary.created)} ago)")
    click.echo(f"tasks       {summary.total:,}: {counts} ({progress(summary)} finished)")
    if rate is not None and summary.last_result is not None:
        eta = f"; {_ago(summary.open / rate)} left at that rate" if summary.open else ""
        click.echo(
            f"throughput  {rate:,.1f} tasks/s from submission to the latest result "
            f"({_ago(now - summary.last_result)} ago){eta}"
        )
    for note in notes:
        click.echo(f"warning     {note}")


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
