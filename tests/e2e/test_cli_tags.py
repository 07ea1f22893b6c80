"""The tag commands as a user runs them, as subprocesses against `hmq up` on both backends
(SQLite + local store, PostgreSQL + S3): ls, status [TAG], pull, describe, cancel, delete; and
their errors: one line, exit 1 for the API's, exit 2 for wrong arguments."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.helpers import REPO

HMQ = [sys.executable, "-m", "hmq"]

SUBMIT = """import sys

import hmq

@hmq.task
def step(x, pause):
    if pause:
        import time

        time.sleep(pause)
    if x % 10 == 7:
        raise ValueError(f"bad {{x}}")
    return 2 * x

for x in range({n}):
    step(x, {pause})
print(step.submit(quiet={quiet}).name)
"""


def _submit(embedded: Stack, tmp_path: Path, n: int, pause: float = 0.0, quiet: Any = True) -> str:
    script = tmp_path / f"submit-{n}.py"
    script.write_text(SUBMIT.format(n=n, pause=pause, quiet=quiet))
    return embedded.run(str(script)).strip().splitlines()[-1]


def _hmq(home: Path, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    return subprocess.run(
        [*HMQ, *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "HMQ_HOME": str(home)},
        cwd=str(home),
        stdin=stdin,
    )


def _ok(home: Path, *args: str) -> str:
    out = _hmq(home, *args)
    assert out.returncode == 0, f"hmq {args} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _data(home: Path, *args: str) -> Any:
    return json.loads(_ok(home, *args, "--json"))


def _one_line_error(out: subprocess.CompletedProcess[str], code: int) -> str:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("Error: "), out.stderr
    return out.stderr.strip()


def test_ls_pull_describe_status_and_delete_what_was_downloaded(embedded: Stack, tmp_path: Path) -> None:
    home = embedded.home
    tag = _submit(embedded, tmp_path, 30)
    listed = {t["tag"]: t for t in _data(home, "ls")}
    assert (
        listed[tag]["total"] == 30 and sum(listed[tag][s] for s in ("pending", "running", "completed", "failed")) == 30
    )
    newest = _data(home, "ls")[0]["created"]
    assert newest == max(t["created"] for t in listed.values())  # newest first

    file = tmp_path / "step.db"
    pulled = _data(home, "pull", tag, str(file))
    assert (pulled["tasks"], pulled["completed"], pulled["failed"], pulled["open"]) == (30, 27, 3, 0)
    again = _hmq(home, "pull", tag, str(file))  # resumed: nothing new, nothing doubled
    assert (again.returncode, again.stderr) == (0, "")  # no bar when stderr is not a terminal
    assert again.stdout == f"{tag}: 30 task(s) in {file}: 27 results, 3 errors\n"

    table = _ok(home, "ls").splitlines()
    assert table[0].split() == [
        "created",
        "tag",
        "total",
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
        "progress",
    ]
    row = next(line for line in table if tag in line).split()
    assert row[3:] == ["30", "0", "0", "27", "3", "0", "100%"]

    described = _data(home, "describe", str(file))
    assert (described["tag"], described["tasks"], described["completed"], described["failed"]) == (tag, 30, 27, 3)
    assert [r["value"] for r in described["results"]] == [0, 2, 4]
    assert [e["position"] for e in described["errors"]] == [7, 17, 27]
    assert "ValueError: bad 7" in described["errors"][0]["value"]
    text = _ok(home, "describe", str(file), "--head", "1")
    assert f"tag      {tag}\n" in text and "tasks    30: 0 open, 27 completed, 3 failed" in text
    assert "first results:\n  #0 " in text and text.rstrip().endswith("ValueError: bad 7")

    status = _data(home, "status", tag)
    assert (status["total"], status["completed"], status["failed"], status["finished"]) == (30, 27, 3, 30)
    assert status["warnings"] == [] and status["throughput"] > 0
    shown = _ok(home, "status", tag)
    assert "tasks       30: 0 pending, 0 running, 27 completed, 3 failed, 0 cancelled (100% finished)" in shown
    assert "tasks/s from submission to the latest result" in shown

    deleted = _data(home, "delete", tag, "--downloaded-only", str(file))
    assert (deleted["deleted"], deleted["remaining"]) == (30, 0)
    gone = _hmq(home, "status", tag)
    assert _one_line_error(gone, 1) == f"Error: unknown tag {tag!r} (HTTP 404, unknown_tag)"
    assert _data(home, "describe", str(file))["completed"] == 27  # the downloaded results stay


def test_cancel_then_delete_only_what_was_downloaded_then_the_rest(embedded: Stack, tmp_path: Path) -> None:
    home = embedded.home
    tag = _submit(embedded, tmp_path, 60, pause=0.2)
    file = tmp_path / "partial.db"
    cancelled = _data(home, "cancel", tag)["cancelled"]
    assert 0 < cancelled <= 60
    assert _ok(home, "cancel", tag) == f"cancelled 0 open task(s) of {tag}\n"
    pulled = _data(home, "pull", tag, str(file), "--no-wait")
    assert (
        pulled["cancelled"] == cancelled and pulled["open"] + pulled["completed"] + pulled["failed"] + cancelled == 60
    )
    summary = next(t for t in _data(home, "ls") if t["tag"] == tag)
    assert summary["cancelled"] == cancelled

    downloaded = pulled["completed"] + pulled["failed"]
    out = _data(home, "delete", tag, "--downloaded-only", str(file))
    assert (out["deleted"], out["remaining"]) == (downloaded, 60 - downloaded)

    refused = _hmq(home, "delete", tag)  # a whole tag, not on a terminal, without --yes
    assert "pass --yes" in _one_line_error(refused, 2)
    assert next(t for t in _data(home, "ls") if t["tag"] == tag)["total"] == 60 - downloaded  # nothing lost
    assert _ok(home, "delete", tag, "--yes") == f"deleted {60 - downloaded} task(s) of {tag}; 0 remain in the queue\n"
    assert all(t["tag"] != tag for t in _data(home, "ls"))


def test_status_of_a_shared_deployment(embedded: Stack, tmp_path: Path) -> None:
    user = tmp_path / "user"  # set up for the stack's API as a user of a deployment is: no stack.json
    user.mkdir()
    shutil.copy(embedded.home / "client.json", user / "client.json")
    status = _data(user, "status")
    assert status["kind"] == "deployment" and status["reachable"] and status["url"] == embedded.state.url
    assert status["role"] == "user" and status["queue"]["tags"] == len(_data(user, "ls"))
    text = _ok(user, "status").splitlines()
    assert text[0].startswith(f"API      {embedded.state.url} reachable") and text[2].startswith("queue    ")

    config = json.loads((user / "client.json").read_text())
    (user / "client.json").write_text(json.dumps({**config, "url": "http://127.0.0.1:1"}))
    down = _hmq(user, "status")
    assert "cannot reach the hmq API at http://127.0.0.1:1" in _one_line_error(down, 1)
    assert json.loads(_hmq(user, "status", "--json").stdout)["reachable"] is False
    listing = _hmq(user, "--retry-deadline", "0", "ls")
    assert "cannot reach the hmq API at http://127.0.0.1:1" in _one_line_error(listing, 1)


def test_api_errors_are_one_line_and_exit_1(embedded: Stack, tmp_path: Path) -> None:
    home = embedded.home
    for args in (["status", "nope_1"], ["cancel", "nope_1"], ["delete", "nope_1", "--yes"], ["pull", "nope_1"]):
        out = _hmq(home, *args)
        assert _one_line_error(out, 1) == "Error: unknown tag 'nope_1' (HTTP 404, unknown_tag)", args
    assert not (home / "nope_1.db").exists()  # an unknown tag leaves no file behind


def test_workers_shows_the_local_fleet(embedded: Stack) -> None:
    listed = _data(embedded.home, "workers")
    assert len(listed) >= 2
    for w in listed:
        assert w["datacenter"] == "local" and w["cores"] == 1 and w["memory"] > 0 and w["python"]
        assert w["running"] >= 0 and w["last_seen"] > 0
    lines = _ok(embedded.home, "workers").splitlines()
    assert all("live" in line and "datacenter local, 1 core(s)" in line for line in lines)


def test_submit_leaves_a_summary_where_it_draws_a_bar(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "submit.py"
    script.write_text(SUBMIT.format(n=5, pause=0, quiet=False))  # quiet=False: a bar into a pipe too
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=embedded.env(), timeout=120)
    tag = out.stdout.strip()
    assert out.returncode == 0 and "Submitting step_" in out.stderr
    assert re.search(rf"[\r\n]Submitted 5 calls to tag {tag} in \d+\.\d s\n$", out.stderr), out.stderr
    script.write_text(SUBMIT.format(n=5, pause=0, quiet=None))  # the default: no bar into a pipe
    quiet = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=embedded.env(), timeout=120
    )
    assert (quiet.returncode, quiet.stderr) == (0, "")


def _on_a_terminal(home: Path, *args: str) -> tuple[int, str, str]:
    """Run hmq with stderr on a pseudo-terminal (120 columns); return its code, stdout and what
    the terminal received."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    proc = subprocess.Popen(
        [*HMQ, *args], stdout=subprocess.PIPE, stderr=slave, env={**env, "HMQ_HOME": str(home)}, cwd=str(home)
    )
    os.close(slave)
    received = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        received.append(chunk)
    os.close(master)
    assert proc.stdout is not None
    with proc.stdout:
        stdout = proc.stdout.read().decode()
    return proc.wait(timeout=60), stdout, b"".join(received).decode(errors="replace")


@pytest.mark.timeout(900)  # 50,000 tasks on two 1-core workers: ~25 s idle, minutes on a loaded machine
@pytest.mark.parametrize("embedded", ["sqlite-local"], indirect=True)
def test_pull_of_50000_tasks_draws_a_bar_on_a_terminal(embedded: Stack, tmp_path: Path) -> None:
    tag = _submit(embedded, tmp_path, 50_000)
    file = tmp_path / "big.db"
    code, stdout, terminal = _on_a_terminal(embedded.home, "pull", tag, str(file))
    assert code == 0, terminal[-2000:]
    assert stdout == f"{tag}: 50,000 task(s) in {file}: 45,000 results, 5,000 errors\n"
    frames = [f for f in terminal.replace("\r\n", "\r").split("\r") if f.startswith("Pulling ")]
    assert len(frames) >= 3, terminal[-2000:]
    short = "step_" + tag.removeprefix("step_")[:8]
    assert all(f.startswith(f"Pulling {short}: ") for f in frames)
    assert any("/50000 [" in f and " tasks/s" in f and " MB/s" in f for f in frames), frames[-3:]
    assert "50000/50000" in frames[-1]
    assert f"Pulled 50,000 tasks of tag {tag} in " in terminal and "45,000 results, 5,000 errors in the tag" in terminal


def _rows(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM meta ORDER BY key").fetchall() + db.execute("SELECT * FROM tasks").fetchall()
    finally:
        db.close()


def test_wrong_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    other = tmp_path / "other.db"
    subprocess.run(
        [sys.executable, "-c", f"import hmq; t = hmq.Tag('other_1'); t.add_tasks(['a']); t.to_file({str(other)!r})"],
        check=True,
        timeout=60,
    )
    before = _rows(other)
    cases = {
        ("pull", "no such tag"): "Invalid value for 'TAG': 'no such tag' must be 1-200 letters",
        ("pull", "mine_1", str(other)): f"Invalid value for 'FILE': {other} holds tag other_1, not mine_1",
        ("describe", str(tmp_path / "missing.db")): "does not exist",
        ("describe", str(REPO / "README.md")): "is not an hmq tag file",
        ("delete", "mine_1", "--downloaded-only", str(other)): "holds tag other_1, not mine_1",
        ("ls", "--bogus"): "No such option",
        ("cancel",): "Missing argument 'TAG'",
        ("status", "a", "b"): "Got unexpected extra argument (b)",
        ("describe", str(other), "--head", "-1"): "Invalid value for '--head'",
        ("worker", "--cores", "0"): "Invalid value for '--cores'",
        ("frobnicate",): "No such command 'frobnicate'",
    }
    for args, problem in cases.items():
        line = _one_line_error(_hmq(home, *args), 2)
        assert problem in line and line.endswith("--help')"), (args, line)
    assert _rows(other) == before  # a wrong argument changes no file


def test_worker_help_is_the_workers_own() -> None:
    import click

    from worker.__main__ import main as worker_main

    out = subprocess.run([*HMQ, "worker", "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("Usage: hmq worker [OPTIONS]")
    flags = [p.opts[0] for p in worker_main.params if isinstance(p, click.Option)]
    assert len(flags) >= 15 and all(f in out for f in flags), [f for f in flags if f not in out]
    direct = subprocess.run(
        [sys.executable, "-m", "worker", "--help"], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    ).stdout
    assert out.split("\n", 1)[1] == direct.split("\n", 1)[1]  # the same options and help, word for word
