"""Fair claims on real stacks: a worker claims only what it can start soon, so long calls spread
over the workers; a user who submits while another's big tag runs is served at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import Stack
from tests.helpers import Ledger, Server, submit, tell, wait_for

SLOW = """
import json, sys, time
import hmq

@hmq.task
def slow(port, i):
    import json, os, socket, time

    def tell(kind):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            record = {"kind": kind, "i": i, "where": os.getcwd(), "at": time.time()}
            conn.sendall(json.dumps(record).encode() + b"\\n")
            conn.makefile("rb").readline()

    tell("start")
    time.sleep(6)
    tell("end")
    return i

port = int(sys.argv[1])
for i in range(4):
    slow(port, i)
submitted = time.time()
tag = slow.submit(quiet=True)
tag.pull(blocking=True)
print(json.dumps({"submitted": submitted, "results": list(tag.results)}))
"""


def _worker_of(record: dict) -> str:
    """The worker a call ran on: its scratch directory is under the worker's own (by pid)."""
    return record["where"].split("/scratch/")[1].split("/")[0]


def _wait_until_idle(embedded: Stack, timeout: float = 120) -> None:
    """The stack is shared by the session's tests: wait until no live worker still runs a call of
    an earlier test (a cancelled call runs until its worker drops it). Tasks no worker can run
    (placement tests) may stay pending: they do not keep a worker busy."""

    def hmq(*argv: str) -> object:
        out = subprocess.run(
            [sys.executable, "-m", "hmq", *argv, "--json"], capture_output=True, text=True, env=embedded.env()
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    deadline = time.time() + timeout
    while True:
        live = [w for w in hmq("workers") if time.time() - w["last_seen"] < 30]  # type: ignore[union-attr]
        if len(live) >= 2 and all(w["running"] == 0 for w in live):
            return
        assert time.time() < deadline, f"the workers are still busy: {live}"
        time.sleep(1)


def test_long_calls_spread_over_both_workers(embedded: Stack, tmp_path: Path, ledger: Ledger) -> None:
    _wait_until_idle(embedded)
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    out = json.loads(embedded.run(str(script), str(ledger.port)).strip().splitlines()[-1])
    assert out["results"] == [0, 1, 2, 3]
    ends, starts = ledger.of("end"), ledger.of("start")
    assert len(ends) == len(starts) == 4  # each call ran once: none was claimed twice
    # From the first call's start: before it, an idle worker may wait for its next poll (up to
    # its poll_max_seconds, 2 s), which is the claim's latency, not its size. On one worker the
    # four would take 24 s; spread over both, 12 s and what it takes to claim again.
    first = min(r["at"] for r in starts)
    took = max(r["at"] for r in ends) - first
    timeline = sorted((round(r["at"] - first, 2), r["kind"], r["i"], _worker_of(r)) for r in starts + ends)
    assert took < 14, f"4 calls of 6 s on 2 one-core workers took {took:.1f} s: {timeline}"
    assert first - out["submitted"] < 10, "no call started within 10 s of the submission"
    workers = [_worker_of(r) for r in starts]
    assert sorted(workers.count(w) for w in set(workers)) == [2, 2]


def _short(port: int, i: int) -> int:
    import time

    if i == 0:
        tell(port, "started")
    time.sleep(0.002)
    return i


def test_a_second_user_is_served_while_a_big_tag_runs(server: Server, tmp_path: Path, ledger: Ledger) -> None:
    for i in range(2):
        server.start_worker(tmp_path / f"w{i}")
    ada, bob = server.user("ada"), server.user("bob")
    big = submit(ada, _short, [(ledger.port, i) for i in range(20_000)])
    ledger.wait("started")
    wait_for(lambda: ada.get_tag_status(big.name)["completed"] >= 200, what="ada's tag to be under way")
    small = submit(bob, _short, [(ledger.port, i + 1) for i in range(10)])
    wait_for(lambda: bob.get_tag_status(small.name)["completed"] == 10, interval=0.02, what="bob's ten calls")
    done = ada.get_tag_status(big.name)["completed"]
    assert done < 10_000, f"bob's 10 calls waited until ada's tag was {done / 200:.0f}% done"
    assert small.pull() == 0 and list(small.results) == list(range(1, 11))
    big.cancel()
    started = time.monotonic()
    wait_for(lambda: ada.get_tag_status(big.name)["running"] == 0, what="ada's cancelled tag to stop")
    assert time.monotonic() - started < 60
