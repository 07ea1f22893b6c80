"""Tag files, the local SQLite copies of tags (see ``hmq.tag``): `hmq pull TAG [FILE]` fills one,
`hmq describe FILE` shows what one holds."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import click

from hmq.cli._app import TAG, client, echo_json, main

if TYPE_CHECKING:
    from hmq.tag import Tag

SHOWN_CHARS = 100
"""A result or error longer than this is cut in `hmq describe`'s text output (not in --json)."""


def open_tag_file(path: Path, tag: Optional[str] = None) -> Tag:
    """The tag file at ``path`` (which must hold ``tag``, when given); a file that is not a tag
    file is a wrong argument."""
    from hmq import Tag
    from hmq._errors import TagFileError

    try:
        found = Tag.from_file(path)
    except TagFileError as exc:
        raise click.BadParameter(str(exc), param_hint="'FILE'") from None
    if tag is not None and found.name != tag:
        name = found.name
        found.close()
        raise click.BadParameter(f"{path} holds tag {name}, not {tag}", param_hint="'FILE'")
    return found


def _linked(tag: str, path: Path) -> Tag:
    """The tag file at ``path`` with every task id of ``tag`` in it: an existing file is
    resumed (ids it lacks are added), a new one made once the API knows the tag."""
    from hmq import Tag

    api = client()
    found = open_tag_file(path, tag) if path.exists() else None
    total = api.tag_summary(tag).total  # an unknown tag stops here, before a file is made
    if found is None:
        found = Tag(tag, api)
        found.to_file(path, stay_linked=True)
    if len(found) < total:
        found.fetch_tasks()
    return found


@main.command()
@click.argument("tag", type=TAG)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until every task has finished, or download what has finished and stop.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Draw the progress bar on stderr, or not (default: only when stderr is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the tag file's counts).")
def pull(tag: str, file: Optional[Path], wait: bool, progress: Optional[bool], as_json: bool) -> None:
    """Download the results of TAG into the tag file FILE (default: ./TAG.db).

    Resumable: run again with the same FILE, a pull goes on where it stopped (an interrupted one
    too), downloading only what the file does not hold yet. The bar counts the tag's finished
    tasks, with results/s, MB/s, the time left and the API's notes on the tag.
    """
    path = file or Path(f"{tag}.db")
    found = _linked(tag, path)
    try:
        still_open = found.pull(blocking=wait, quiet=None if progress is None else not progress)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; {path} keeps what was downloaded: pull again to go on") from None
    states = found.states
    if as_json:
        echo_json({"tag": tag, "file": str(path), "tasks": len(found), **states})
        return
    left = f", {still_open:,} not finished yet" if still_open else ""
    click.echo(
        f"{tag}: {len(found):,} task(s) in {path}: {states['completed']:,} results, {states['failed']:,} errors"
        f"{left}" + "".join(f", {states[s]:,} {s}" for s in ("cancelled", "deleted") if states[s])
    )


def _first(tag: Tag, column: Iterator[Any], n: int) -> list[dict[str, Any]]:
    """The first ``n`` tasks (in submission order) that have a value in ``column``."""
    found = (
        (i, task, value) for i, (task, value) in enumerate(zip(tag.task_ids, column, strict=True)) if value is not None
    )
    return [{"position": i, "task": task, "value": value} for i, task, value in itertools.islice(found, n)]


def _shown(value: Any, error: bool) -> str:
    text = value.strip().splitlines()[-1] if error and value.strip() else json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--head",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="How many results and errors to show (the first in submission order).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (whole results and tracebacks).")
def describe(file: Path, head: int, as_json: bool) -> None:
    """Show what the tag file FILE holds: its tag, its tasks per state, its first results and errors."""
    found = open_tag_file(file)
    results, errors = _first(found, found.results, head), _first(found, found.errors, head)
    states = found.states
    if as_json:
        echo_json(
            {"tag": found.name, "file": str(file), "bytes": file.stat().st_size, "tasks": len(found), **states}
            | {"results": results, "errors": errors}
        )
        return
    click.echo(f"tag      {found.name}")
    click.echo(f"file     {file} ({file.stat().st_size / 1e6:,.1f} MB)")
    click.echo(f"tasks    {len(found):,}: " + ", ".join(f"{n:,} {s}" for s, n in states.items()))
    for title, rows, error in (("results", results, False), ("errors", errors, True)):
        if rows:
            click.echo(f"first {title}:")
            for row in rows:
                click.echo(f"  #{row['position']} {row['task']}  {_shown(row['value'], error)}")
