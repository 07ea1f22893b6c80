"""Your tags in the queue: `hmq ls` (alias `hmq tags`), `hmq cancel`, `hmq delete`, `hmq logs`."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from hmq.cli._app import TAG, client, echo_json, main

if TYPE_CHECKING:
    from hmq import wire

STATES = ("pending", "running", "completed", "failed", "cancelled")
"""A tag's task states, in the order the commands show them."""


def finished(summary: wire.TagSummary) -> int:
    """Tasks of the tag that will not run any more (completed, failed or cancelled)."""
    return summary.completed + summary.failed + summary.cancelled


def progress(summary: wire.TagSummary) -> str:
    """How far the tag is, as a percentage of its tasks that finished."""
    return f"{100 * finished(summary) / summary.total:.0f}%" if summary.total else "-"


def when(timestamp: float) -> str:
    """A time as local date, hour and minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def summary_json(summary: wire.TagSummary) -> dict[str, Any]:
    return {**summary.model_dump(mode="json"), "finished": finished(summary)}


def _table(rows: list[wire.TagSummary]) -> list[str]:
    width = max(len("tag"), *(len(s.tag) for s in rows))
    head = f"{'created':<16}  {'tag':<{width}}  {'total':>9}" + "".join(f"  {s:>9}" for s in STATES)
    lines = [head + "  progress"]
    for s in rows:
        counts = "".join(f"  {getattr(s, state):>9,}" for state in STATES)
        lines.append(f"{when(s.created):<16}  {s.tag:<{width}}  {s.total:>9,}{counts}  {progress(s):>8}")
    return lines


@main.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_tags(as_json: bool) -> None:
    """List your tags, newest first: when each was submitted, its tasks per state and how far it is."""
    rows = sorted(client().list_tags(), key=lambda s: s.created, reverse=True)
    if as_json:
        echo_json([summary_json(s) for s in rows])
    elif not rows:
        click.echo("you have no tags in the queue", err=True)
    else:
        click.echo("\n".join(_table(rows)))


main.add_command(
    click.Command("tags", callback=list_tags.callback, params=list_tags.params, help="The same as `hmq ls`."), "tags"
)


@main.command()
@click.argument("tag", type=TAG)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cancel(tag: str, as_json: bool) -> None:
    """Cancel the tasks of TAG that have not finished (pending or running); finished ones keep their results."""
    ids = client().cancel_tasks(tag=tag)
    if as_json:
        echo_json({"tag": tag, "cancelled": len(ids)})
    else:
        click.echo(f"cancelled {len(ids):,} open task(s) of {tag}")


@main.command()
@click.argument("tag", type=TAG)
@click.option(
    "--downloaded-only",
    "downloaded",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Delete only the tasks whose result or error is in the tag file FILE (see `hmq pull`).",
)
@click.option("--yes", "-y", is_flag=True, help="Delete a whole tag without asking.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def delete(tag: str, downloaded: Optional[Path], yes: bool, as_json: bool) -> None:
    """Delete TAG's tasks from the queue, with their stored calls and results.

    With --downloaded-only FILE only the tasks whose results the tag file FILE holds go: the
    queue keeps what you have not downloaded. Without it the whole tag goes (asked first unless --yes).
    """
    api = client()
    if downloaded is not None:
        from hmq.cli.files import open_tag_file

        ids = open_tag_file(downloaded, tag).delete(downloaded_only=True)
    else:
        _confirm_whole_tag(api.tag_summary(tag), yes)
        ids = api.delete_tasks(tag=tag)
    left = _remaining(api, tag)
    if as_json:
        echo_json({"tag": tag, "deleted": len(ids), "remaining": left})
        return
    where = f" whose results are in {downloaded}" if downloaded is not None else ""
    click.echo(f"deleted {len(ids):,} task(s) of {tag}{where}; {left:,} remain in the queue")


def _confirm_whole_tag(summary: wire.TagSummary, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("deleting a whole tag asks first: pass --yes to delete without a prompt")
    unfinished = f", {summary.open:,} of them not finished" if summary.open else ""
    click.confirm(
        f"Delete tag {summary.tag} and its {summary.total:,} task(s){unfinished}, with their results?", abort=True
    )


def _remaining(api: Any, tag: str) -> int:
    from hmq._errors import NotFound

    try:
        return int(api.tag_summary(tag).total)
    except NotFound:
        return 0


@main.command()
@click.argument("tag", type=TAG)
@click.option("--task", "task_id", type=click.UUID, default=None, help="Only this task's output (no header).")
@click.option("--tail", type=click.IntRange(min=1), default=None, help="Only the last N lines of each output.")
def logs(tag: str, task_id: Optional[uuid.UUID], tail: Optional[int]) -> None:
    """Print what the finished tasks of TAG wrote to stdout and stderr, in submission order.

    Each task's output follows a `==> TASK_ID <==` line; tasks that printed nothing are left out.
    """
    import hmq

    only = None if task_id is None else str(task_id)
    found = hmq.Tag.from_queue(tag, client())
    if only is not None and only not in set(found.task_ids):
        raise hmq.NotFound("unknown_task", f"tag {tag!r} has no task {only}")
    still_open = found.pull(tasks_subset=None if only is None else [only])
    shown = 0
    for t, text in zip(found.task_ids, found.logs, strict=True):
        if text is None or only not in (None, t):
            continue
        shown += 1
        if only is None:
            click.echo(f"==> {t} <==")
        lines = text.splitlines(keepends=True)
        click.echo("".join(lines[-tail:] if tail else lines), nl=not text.endswith("\n"))
    _say_what_is_missing(tag, only, still_open, shown)


def _say_what_is_missing(tag: str, only: Optional[str], still_open: int, shown: int) -> None:
    """On stderr: that some tasks have not finished (their output comes with their results), or
    that nothing was printed."""
    if still_open:
        which = f"task {only} has" if only else f"{still_open} task(s) of {tag} have"
        click.echo(f"{which} not finished yet; output arrives with the result", err=True)
    elif not shown:
        click.echo(f"task {only} printed nothing" if only else f"no task of {tag} printed anything", err=True)
