"""The progress bars' pieces: the notes of a tag's status, what a pull's bar shows, when a bar is
drawn at all, and a pull's bar against a real API."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest
from tqdm import tqdm

from hmq import _progress
from hmq._progress import PullProgress, short_name, status_notes
from tests.helpers import ManualWorker, Server, submit


def _double(x: int) -> int:
    return 2 * x


def test_status_notes_are_the_warnings_of_the_tag_status() -> None:
    assert status_notes({"pending": 3, "total": 3}) == []  # an API without the field
    assert status_notes({"warnings": []}) == []
    given = ["building numpy env on 1 worker (for 3 s)", "no worker seen in the last 10 min has Python 3.12"]
    assert status_notes({"pending": 1, "warnings": given}) == given


def _bar(out: io.StringIO, total: int) -> Any:
    return tqdm(total=total, file=out, disable=False, leave=False, ncols=200, mininterval=0)


def test_a_pulls_bar_shows_counts_rate_mb_per_second_and_the_tags_notes() -> None:
    out = io.StringIO()
    now = [100.0]
    progress = PullProgress(_bar(out, 50_000), clock=lambda: now[0])
    now[0] = 102.0
    progress.advance(5_000, 4_000_000)
    frame = out.getvalue().split("\r")[-1]
    assert "5000/50000" in frame and "2.00 MB/s" in frame
    notes = ["building numpy env on 1 worker", "no worker with Python 3.12", "a third note"]
    progress.show_status({"running": 2, "pending": 44_998, "warnings": notes})
    frame = out.getvalue().split("\r")[-1]
    assert "2 running, 44,998 pending, building numpy env on 1 worker, no worker with Python 3.12" in frame
    assert "+1 more notes (hmq status TAG)" in frame
    progress.show_status({"running": 0, "pending": 0})  # the notes went away: so do they in the bar
    assert "numpy" not in out.getvalue().split("\r")[-1]
    progress.finish("f_1", results=4_990, errors=10, still_open=0)
    assert out.getvalue().endswith(
        "Pulled 5,000 tasks of tag f_1 in 2.0 s (4.00 MB, 2,500/s): 4,990 results, 10 errors in the tag\n"
    )
    assert not progress.active


def test_long_notes_are_cut_in_the_bar() -> None:
    out = io.StringIO()
    progress = PullProgress(_bar(out, 10))
    progress.show_status({"warnings": ["x" * 200]})
    assert (
        "x" * (_progress.MAX_NOTE_CHARS - 1) + "…" in out.getvalue()
        and "x" * _progress.MAX_NOTE_CHARS not in out.getvalue()
    )


def test_without_a_bar_progress_does_nothing() -> None:
    progress = PullProgress()
    progress.advance(10, 10)
    progress.show_status({"warnings": ["a"]})
    progress.finish("t", 1, 0, 0)
    assert (progress.tasks, progress.bytes, progress.active) == (0, 0, False)


def test_short_names_keep_the_prefix_and_the_uuids_start() -> None:
    assert short_name("f_1b2c3d4e-93af-4400-a71d-63a2b5b53698") == "f_1b2c3d4e"
    assert short_name("my_name_d6425b7f-93af-4400-a71d-63a2b5b53698") == "my_name_d6425b7f"
    assert short_name("plain") == "plain" and short_name("a_b") == "a_b"


def test_a_bar_is_drawn_as_tqdm_users_expect(monkeypatch: pytest.MonkeyPatch) -> None:
    """quiet=None: tqdm's rule (none into a pipe or file); False: always; True: never."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert _progress.open_bar(10, "x", " tasks", None) is None
    assert _progress.open_bar(10, "x", " tasks", True) is None
    bar = _progress.open_bar(10, "x", " tasks", False)
    assert bar is not None
    _progress.summarise(bar, "done")
    assert sys.stderr.getvalue().endswith("done\n")


def test_a_pull_draws_its_bar_on_stderr_and_leaves_a_summary(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = server.user()
    tag = submit(user, _double, [(i,) for i in range(30)])
    worker = ManualWorker(server, tmp_path)
    for group in worker.claim(30):
        worker.complete(group, {str(t.id): 2 for t in group.tasks})
    capsys.readouterr()
    assert tag.pull(blocking=True, quiet=False) == 0
    err = capsys.readouterr().err
    assert f"Pulling {short_name(tag.name)}: " in err and "30/30" in err
    assert (
        err.rstrip("\n").endswith(": 30 results, 0 errors in the tag") and f"Pulled 30 tasks of tag {tag.name}" in err
    )
    assert tag.pull(blocking=True, quiet=False) == 0  # nothing open: no bar, no summary
    assert capsys.readouterr().err == ""


def test_hmq_workers_marks_a_worker_not_seen_for_a_lease_as_stale() -> None:
    import uuid

    from hmq import defaults, wire
    from hmq.cli.fleet import _describe_worker

    seen = wire.WorkerInfo(
        id=uuid.uuid4(), name="node1", datacenter="hpc", cores=32, python="3.11", hostname="n1", version="26.12.0",
        registered=0.0, last_seen=1000.0, running=3, memory=64 * 1024**3, isolation="bwrap",
    )  # fmt: skip
    live = _describe_worker(seen, now=1000.0 + defaults.LEASE_SECONDS - 1)
    assert live == (
        "node1 n1 [live, seen 119 s ago] datacenter hpc, 32 core(s), 64.0 GiB, Python 3.11, 3 running, isolation bwrap"
    )
    assert "[STALE, seen 121 s ago]" in _describe_worker(seen, now=1000.0 + defaults.LEASE_SECONDS + 1)
