"""One benchmark scenario per process, so its peak memory is its own.

``python -m bench.scenarios NAME N`` runs against the queue of ``$HMQ_HOME`` and prints one JSON
line of figures.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hmq
from bench.peers import percentiles


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STALL_SECONDS = 600.0
"""A scenario waiting for its results fails once this long passes without a new one."""


def _wait(tag: hmq.Tag) -> None:
    """Until every task of ``tag`` has its result: blocking pulls, which wait on the API, so the
    last result is pulled as soon as it is reported, not at a next poll (which added up to its
    interval to the figures). No overall deadline while results keep coming; none for ``STALL_SECONDS``
    fails the scenario (:class:`hmq.PullTimeout` names what is left) rather than hanging."""
    while True:
        before = tag.n_results + tag.n_errors
        try:
            tag.pull(blocking=True, timeout=STALL_SECONDS)
            return
        except hmq.PullTimeout:
            if tag.n_results + tag.n_errors == before:
                raise


def end_to_end(n: int) -> dict[str, Any]:
    """No-op tasks: submit, run on the workers, pull; tasks per second end to end."""

    @hmq.task
    def noop(x):
        return x

    for i in range(n):
        noop(i)
    t0 = time.perf_counter()
    tag = noop.submit(quiet=True)
    t1 = time.perf_counter()
    _wait(tag)
    t2 = time.perf_counter()
    assert tag.n_results == n
    return {"tasks": n, "submit_per_s": n / (t1 - t0), "end_to_end_per_s": n / (t2 - t0), "seconds": t2 - t0}


def submit_only(n: int) -> dict[str, Any]:
    """``n`` no-op tasks submitted, not waited for (the fleet scenario's workers drain them)."""

    @hmq.task
    def noop(x):
        return x

    for i in range(n):
        noop(i)
    t0 = time.perf_counter()
    tag = noop.submit(quiet=True)
    return {"tasks": n, "tag": tag.name, "submit_per_s": n / (time.perf_counter() - t0)}


def latency(n: int) -> dict[str, Any]:
    """One no-op submitted and its result pulled (``pull(blocking=True)``), ``n`` times after a
    warm-up call: p50 and p95 in ms."""

    @hmq.task
    def noop(x):
        return x

    times = []
    for i in range(n + 1):
        t0 = time.perf_counter()
        noop(i)
        tag = noop.submit(quiet=True)
        tag.pull(blocking=True)
        assert list(tag.results) == [i]
        times.append(time.perf_counter() - t0)
        tag.close()
    return percentiles(times[1:])


def kilobyte(n: int) -> dict[str, Any]:
    """Tasks returning 1 KB each (1,024 characters): submit, run, pull; tasks per second."""

    @hmq.task
    def kilobyte(x):
        return str(x).rjust(1024, ".")

    for i in range(n):
        kilobyte(i)
    t0 = time.perf_counter()
    tag = kilobyte.submit(quiet=True)
    _wait(tag)
    seconds = time.perf_counter() - t0
    assert tag.n_results == n and len(next(tag.results)) == 1024
    return {"tasks": n, "end_to_end_per_s": n / seconds, "seconds": seconds}


def large_tag(n: int) -> dict[str, Any]:
    """A big tag: submit rate, run, then pull into a linked file (results per second), memory."""

    @hmq.task
    def square(x):
        return x * x

    for i in range(n):
        square(i)
    t0 = time.perf_counter()
    tag = square.submit(quiet=True)
    t1 = time.perf_counter()
    submit_peak = _peak_mb()
    name = tag.name
    del tag
    while hmq.api.get_tag_status(name)["completed"] < n:
        time.sleep(1)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pulled = hmq.Tag.from_queue(name)
        pulled.to_file(Path(tmp) / "big.db", stay_linked=True)
        t3 = time.perf_counter()
        assert pulled.pull(workers=4) == 0
        t4 = time.perf_counter()
        assert pulled.n_results == n
        size = os.path.getsize(Path(tmp) / "big.db")
        pulled.close()
    peak = _peak_mb()  # before the clean-up: delete_tasks answers with every id it deleted
    hmq.api.delete_tasks(tag=name)
    return {
        "tasks": n,
        "submit_per_s": n / (t1 - t0),
        "run_per_s": n / (t2 - t1),
        "pull_per_s": n / (t4 - t3),
        "from_queue_per_s": n / (t3 - t2),
        "tag_file_mb": size / 1e6,
        "submit_peak_mb": submit_peak,
        "peak_mb": peak,
    }


def payload(n: int) -> dict[str, Any]:
    """1 MB of arguments in and 1 MB of results out per task: MB/s both ways."""

    @hmq.task
    def echo_size(blob):
        return [len(blob)] * (1024 * 1024 // 8)  # about 1 MB of JSON numbers, compressible

    mb = 1024 * 1024
    for _ in range(n):
        echo_size(os.urandom(mb))
    t0 = time.perf_counter()
    tag = echo_size.submit(quiet=True)
    t1 = time.perf_counter()
    while hmq.api.get_tag_status(tag.name)["completed"] < n:
        time.sleep(0.2)
    t2 = time.perf_counter()
    tag.pull()
    t3 = time.perf_counter()
    raw = sum(len(json.dumps(r)) for r in tag.results) / 1e6
    return {"tasks": n, "upload_mb_per_s": n * mb / 1e6 / (t1 - t0), "pull_json_mb_per_s": raw / (t3 - t2)}


def executor_calls(n: int) -> dict[str, Any]:
    """No-op calls straight through the worker's executors (no API), isolated as
    ``$HMQ_ISOLATION`` says (default ``auto``): the start of an executor until its first call
    returns (median of 10), and the time per call of ``n`` calls through one executor in
    batches of 64, the way a worker sends them."""
    import statistics
    import uuid

    import cloudpickle

    from hmq.limits import Limits
    from worker.pool import ExecutorPool

    def noop(x):
        return x

    function = cloudpickle.dumps(noop)
    calls = [(str(uuid.uuid4()), "noop", function, cloudpickle.dumps(((i,), {})), Limits(None)) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="hmq-bench-executor-") as tmp:
        pool = ExecutorPool(Path(tmp), max_idle=1, sandbox=os.environ.get("HMQ_ISOLATION", "auto"))
        try:
            starts = []
            for i in range(10):  # a new tenant each time: a new executor each time
                t0 = time.perf_counter()
                ex = pool.acquire(sys.executable, 1, f"tenant-{i}")
                list(ex.run(calls[:1]))
                starts.append(time.perf_counter() - t0)
                pool.release(ex)
            ex = pool.acquire(sys.executable, 1, "tenant-9")  # the last one, kept idle: warm
            t0 = time.perf_counter()
            for start in range(0, n, 64):
                done = list(ex.run(calls[start : start + 64]))
                assert all(o.ok for o in done)
            per_call = (time.perf_counter() - t0) / n
            pool.release(ex)
        finally:
            pool.close()
    return {
        "isolation": pool.sandbox.mode.value,
        "calls": n,
        "start_ms": statistics.median(starts) * 1e3,
        "per_call_us": per_call * 1e6,
    }


SCENARIOS: dict[str, Callable[[int], dict[str, Any]]] = {
    "end_to_end": end_to_end,
    "latency": latency,
    "submit_only": submit_only,
    "kilobyte": kilobyte,
    "large_tag": large_tag,
    "payload": payload,
    "executor_calls": executor_calls,
}

if __name__ == "__main__":
    name, n = sys.argv[1], int(sys.argv[2])
    out = SCENARIOS[name](n)
    out.setdefault("peak_mb", _peak_mb())
    print(json.dumps(out))
