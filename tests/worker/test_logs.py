"""Each call's output (stdout and stderr, its child processes' too) travels to its user with the
result, on real workers against a real API; the worker's own log keeps only its events."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import cloudpickle
import pytest

import hmq
from hmq.limits import Limits
from tests.helpers import Server, submit, wait_for
from worker.pool import ExecutorPool

ISOLATION = {"bwrap": ("--isolation", "bwrap"), "none": ("--isolation", "none")}


def _pull(tag: hmq.Tag, timeout: float = 60) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=timeout, interval=0.1, what=f"tag {tag.name} to finish")


@pytest.mark.parametrize("isolation", sorted(ISOLATION))
def test_output_reaches_its_user_in_the_order_written(
    server: Server, tmp_path: Path, isolation: str, request: pytest.FixtureRequest
) -> None:
    if isolation == "bwrap":
        request.getfixturevalue("bwrap")

    def chatty(marker, how):
        import os
        import subprocess
        import sys

        if how == "silent":
            return 0
        print(f"{marker} out 1")
        print(f"{marker} err 1", file=sys.stderr)
        print(f"{marker} out 2", end="")  # no newline: nothing waits for one
        sys.stdout.write("\n")
        subprocess.run(["sh", "-c", f"echo {marker} child out; echo {marker} child err >&2"], check=True)
        os.write(2, f"{marker} err 2 (a raw write)\n".encode())
        print(f"{marker} out 3", file=sys.__stdout__)
        if how == "raise":
            raise ValueError("after printing")
        return 1

    proc = server.start_worker(tmp_path, extra=ISOLATION[isolation])
    marker = f"hmq-output-{uuid.uuid4().hex}"
    tag = submit(server.user(), chatty, [(marker, "return"), (marker, "silent"), (marker, "raise")])
    _pull(tag)
    expected = "".join(
        f"{marker} {line}\n"
        for line in ("out 1", "err 1", "out 2", "child out", "child err", "err 2 (a raw write)", "out 3")
    )
    assert list(tag.logs) == [expected, None, expected]
    assert list(tag.results) == [1, 0, None] and "ValueError: after printing" in list(tag.errors)[2]
    assert marker not in proc.log_path.read_text()  # the worker's log keeps only its events


def test_a_call_cannot_take_the_next_calls_output_away(server: Server, tmp_path: Path) -> None:
    def meddle(step):
        import io
        import os
        import sys

        if step == "meddle":
            print("before meddling")
            sys.stdout = io.StringIO()  # never put back
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            os.close(1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            print("into the void")
            return "meddled"
        print("printed by the next call")
        os.write(2, b"and written to fd 2\n")
        return "next"

    server.start_worker(tmp_path)  # one core: both calls in one executor
    tag = submit(server.user(), meddle, [("meddle",), ("next",)])
    _pull(tag)
    assert list(tag.results) == ["meddled", "next"]
    assert list(tag.logs) == ["before meddling\n", "printed by the next call\nand written to fd 2\n"]


def test_output_over_the_limit_keeps_its_head_and_tail(server: Server, tmp_path: Path) -> None:
    def lines(n):
        for i in range(n):
            print(f"line {i:05d}")  # 11 bytes each

    server.start_worker(tmp_path, extra=("--max-log-bytes", "1100"))
    tag = submit(server.user(), lines, [(50,), (1000,)])
    _pull(tag)
    short, long = tag.logs
    assert short == "".join(f"line {i:05d}\n" for i in range(50))  # 550 bytes: all of it
    head, note, tail = long.split("\n[hmq: ")[0], long.split("\n[hmq: ")[1].split("\n", 1)[0], long.split("\n", 51)[-1]
    assert head.startswith("line 00000\n") and head.endswith("line 00049")
    assert note == "9900 bytes of output left out here; a call keeps 1100 bytes: the first and last halves]"
    assert tail == "".join(f"line {i:05d}\n" for i in range(950, 1000))


def test_a_call_that_crashes_its_executor_keeps_its_output(server: Server, tmp_path: Path) -> None:
    def crash():
        import os

        print("last words", flush=False)
        os._exit(3)

    server.start_worker(tmp_path)
    tag = submit(server.user(), crash, [()])
    _pull(tag)
    assert "died (exit code 3)" in list(tag.errors)[0]
    assert list(tag.logs) == ["last words\n"]


def test_a_call_that_prints_without_end_holds_little_disk(tmp_path: Path) -> None:
    def flood(total_mib):
        import os
        import sys
        import time

        block = ("x" * 1023 + "\n") * 1024
        for _ in range(total_mib):
            sys.stdout.write(block)
        deadline = time.monotonic() + 60  # the worker frees what is not kept while it waits
        while os.fstat(1).st_blocks * 512 > 24 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.1)
        st = os.fstat(1)
        return [st.st_size, st.st_blocks * 512]

    pool = ExecutorPool(tmp_path / "scratch", 1, sandbox="none", max_log=2**20)
    ex = pool.acquire(sys.executable, 1, "tenant")
    try:
        task = str(uuid.uuid4())
        (outcome,) = ex.run([(task, "d", cloudpickle.dumps(flood), cloudpickle.dumps(((64,), {})), Limits(None))])
    finally:
        pool.release(ex)
        pool.close()
    size, allocated = json.loads(outcome.payload)
    assert size == 64 * 2**20 and allocated <= 24 * 2**20  # the file's length stays, its blocks go
    assert outcome.log is not None and len(outcome.log) < 2**20 + 200
    assert outcome.log.startswith(b"x" * 1023 + b"\n") and outcome.log.endswith(b"x" * 1023 + b"\n")
    assert b"[hmq: 66060288 bytes of output left out here;" in outcome.log
