"""Progress bars of ``submit()`` and ``Tag.pull()``, and the notes the API attaches to a tag.

Bars are tqdm's (``tqdm.auto``: a text bar on a terminal, a widget in a Jupyter notebook) and go
to stderr. Whether one is drawn is the caller's ``quiet``:

- ``None`` (the default): what tqdm users expect, tqdm's own rule (``disable=None``): a bar when
  stderr is a terminal, none when it is redirected to a file or a pipe (a batch job's log, CI),
  and a widget in a notebook (where tqdm's rule alone would draw nothing, notebooks' streams
  not being terminals);
- ``True``: never a bar;
- ``False``: always a bar, also into a file or a pipe.

Where a bar is drawn, a one-line summary stays when it closes (``Submitted 50,000 calls to tag
... in 12.3 s``); the bars themselves disappear (``leave=False``), so that a pull called in a
loop does not leave a line per call.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, Optional

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MAX_NOTES = 2
"""Notes of the tag's status shown in a bar's postfix at once (the rest are counted)."""

MAX_NOTE_CHARS = 60
"""A note longer than this is cut in the bar (``hmq status TAG`` shows it whole)."""


def status_notes(status: Mapping[str, Any]) -> list[str]:
    """The human-readable notes of a tag's status (:meth:`hmq.API.get_tag_status`): why its
    pending tasks wait and which package environments are being built for them, e.g.
    ``"building numpy env on 1 worker (for 12 s)"``; none from an API without the field."""
    return [str(note) for note in status.get("warnings") or ()]


def _in_notebook() -> bool:
    from tqdm.auto import tqdm
    from tqdm.notebook import tqdm_notebook

    return issubclass(tqdm, tqdm_notebook)


def _disable(quiet: Optional[bool]) -> Optional[bool]:
    """tqdm's ``disable`` for ``quiet`` (see the module docstring)."""
    if quiet is None:
        return False if _in_notebook() else None
    return quiet


def short_name(tag: str) -> str:
    """A tag's name as a bar's description shows it: ``f_1b2c3d4e`` for ``f_1b2c3d4e-...`` (a
    name with its UUID), else the name."""
    prefix, _, tail = tag.rpartition("_")
    return f"{prefix}_{tail[:8]}" if prefix and _UUID.match(tail) else tag


def open_bar(total: int, description: str, unit: str, quiet: Optional[bool], initial: int = 0) -> Any:
    """A tqdm bar on stderr, or ``None`` when ``quiet`` or stderr is not shown one (see above)."""
    if quiet is True:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit=unit,
        disable=_disable(quiet),
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    if bar.disable:
        bar.close()
        return None
    return bar


def summarise(bar: Any, line: str) -> None:
    """Close ``bar`` and leave ``line`` in its place (nothing when no bar was drawn)."""
    if bar is None:
        return
    out = getattr(bar, "fp", None) or sys.stderr  # where the bar was drawn
    bar.refresh()  # its final count, even when the last updates came faster than tqdm redraws
    bar.close()
    bar.write(line, file=out)


@contextlib.contextmanager
def submit_bar(calls: int, tag: str, quiet: Optional[bool]) -> Iterator[Any]:
    """The bar of a submit (or ``None``); closed on the way out, leaving a summary line if the
    submit succeeded."""
    started = time.monotonic()
    bar = open_bar(calls, f"Submitting {short_name(tag)}", " calls", quiet)
    try:
        yield bar
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    summarise(bar, f"Submitted {calls:,} calls to tag {tag} in {time.monotonic() - started:.1f} s")


def _mb(nbytes: float) -> str:
    mb = nbytes / 1e6
    return f"{mb:,.{1 if mb >= 10 else 2}f} MB"


class PullProgress:
    """What a pull shows: tasks finished out of the tag's, results/s and ETA (tqdm's), MB/s of
    results received and, while it waits, the tag's running and pending tasks and its notes.
    Without a bar every method does nothing."""

    def __init__(self, bar: Any = None, clock: Any = time.monotonic) -> None:
        self.bar = bar
        self.clock = clock
        self.started = clock()
        self.tasks = 0
        self.bytes = 0
        self._status = ""

    @property
    def active(self) -> bool:
        return self.bar is not None

    def advance(self, tasks: int, nbytes: int) -> None:
        """``tasks`` more finished (their results are in the tag), ``nbytes`` of results received."""
        if self.bar is None or not (tasks or nbytes):
            return
        self.tasks += tasks
        self.bytes += nbytes
        self._postfix(refresh=False)
        self.bar.update(tasks)  # redraws at most every tqdm's mininterval

    def show_status(self, status: Mapping[str, Any]) -> None:
        """The tag's status from the API (``API.get_tag_status``): open tasks and notes."""
        if self.bar is None:
            return
        parts = [f"{status[k]:,} {k}" for k in ("running", "pending") if status.get(k)]
        notes = status_notes(status)
        parts += [n if len(n) <= MAX_NOTE_CHARS else n[: MAX_NOTE_CHARS - 1] + "…" for n in notes[:MAX_NOTES]]
        if len(notes) > MAX_NOTES:
            parts.append(f"+{len(notes) - MAX_NOTES} more notes (hmq status TAG)")
        self._status = ", ".join(parts)
        self._postfix()

    def _postfix(self, refresh: bool = True) -> None:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = f"{_mb(self.bytes / elapsed)}/s"
        self.bar.set_postfix_str(f"{rate}, {self._status}" if self._status else rate, refresh=refresh)

    def close(self) -> None:
        """Close the bar without a summary (a pull that did not wait, or failed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def finish(self, tag: str, results: int, errors: int, still_open: int) -> None:
        """Close the bar, leaving a one-line summary of what this pull received."""
        if self.bar is None:
            return
        elapsed = self.clock() - self.started
        rate = f", {self.tasks / elapsed:,.0f}/s" if elapsed > 0 and self.tasks else ""
        left = f"; {still_open:,} still open" if still_open else ""
        summarise(
            self.bar,
            f"Pulled {self.tasks:,} tasks of tag {tag} in {elapsed:.1f} s ({_mb(self.bytes)}{rate}): "
            f"{results:,} results, {errors:,} errors in the tag{left}",
        )
        self.bar = None
