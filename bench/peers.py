"""The peers, measured on the workloads of :mod:`bench.compare`: RQ with Redis, and Lithops'
localhost backend, each with 2 workers.

This module runs in the peers' own virtual environment (``.bench-venv``, see
:mod:`bench.peer_env`), never in hmq's: it imports neither hmq nor anything of the project but
this file. ``python -m bench.peers PEER SPEC`` (``PEER``: ``rq`` or ``lithops``; ``SPEC``: the
workloads as JSON, ``{"latency": 30, "noop": [5000, 50000], "kilobyte": 5000}``) starts the peer
(Redis on a free port and ``--workers`` RQ ``SimpleWorker`` processes; Lithops with a temporary
configuration), runs each workload and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROBE_CALLS = 100
"""Calls run before the call workloads, to estimate whether each fits in the time budget."""
LITHOPS_TIMEOUT = 120
"""Seconds Lithops may take for one call (plus one per call of a map) before the workload is
given up, so that a call its runner never starts is a figure saying so, not a bench that hangs."""
LITHOPS_RUNNER = 1
"""Lithops' localhost runner version. Version 2 (its default) hangs here: ``get_result`` tears
down its consumer threads once no job is left, and the next ``call_async`` starts them again only
if the job manager thread of the call before has already exited; when that thread is slower
(a loaded machine) the call is queued with nothing to run it and ``get_result`` waits for ever.
Version 2 also starts a new interpreter for each call (about 2-4 calls/s here). Version 1 runs
each job in one process that forks the worker processes, and has no such teardown."""


def noop(x: Any) -> Any:
    """The no-op call of every workload."""
    return x


def kilobyte(x: int) -> str:
    """A call returning 1 KB (1,024 characters)."""
    return str(x).rjust(1024, ".")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 of one-call latencies, in ms, and how many there were."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1e3, "p95_ms": p95 * 1e3, "repeats": len(ordered)}


# --- RQ -------------------------------------------------------------------------------------------
@contextmanager
def rq_queue(workers: int) -> Iterator[Any]:
    """Redis (Debian's ``redis-server``) on a free port, with no persistence, and ``workers`` RQ
    ``SimpleWorker`` processes (the fastest class: no fork per job) on one queue; yields the queue."""
    from redis import Redis
    from rq import Queue

    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        redis = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        procs: list[subprocess.Popen[bytes]] = []
        try:
            conn = Redis(port=port)
            _wait(lambda: _pings(conn))
            url = f"redis://127.0.0.1:{port}"
            argv = [str(Path(sys.executable).parent / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "-u", url, "-q"]
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            for i in range(workers):
                log = open(Path(tmp) / f"worker-{i}.log", "ab")  # noqa: SIM115 - closed with the process
                procs.append(subprocess.Popen([*argv, "-n", f"bench-{i}", "bench"], stdout=log, stderr=log, env=env))
                log.close()
            from rq import Worker

            _wait(lambda: len(Worker.all(connection=conn)) >= workers)
            yield Queue("bench", connection=conn)
        finally:
            for proc in [*procs, redis]:
                proc.terminate()
            for proc in [*procs, redis]:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _pings(conn: Any) -> bool:
    try:
        return bool(conn.ping())
    except Exception:  # not up yet, whatever the client raises
        return False


def _wait(ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the peer did not start in time")
        time.sleep(0.05)


def _ref(func: Callable[..., Any]) -> str:
    """The import path RQ's workers find ``func`` by (run as ``__main__``, this module is not
    importable under that name)."""
    return f"bench.peers.{func.__name__}"


def rq_latency(queue: Any, repeats: int, deadline: float) -> dict[str, float]:
    """One no-op enqueued, its result awaited (RQ's blocking ``latest_result``), ``repeats``
    times (fewer at ``deadline``) after one warm-up call."""
    times: list[float] = []
    for i in range(repeats + 1):
        if len(times) > 1 and time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        job = queue.enqueue(_ref(noop), i)
        result = job.latest_result(timeout=60)
        assert result is not None and result.return_value == i
        times.append(time.perf_counter() - t0)
    return percentiles(times[1:])


def rq_calls(queue: Any, func: Callable[[int], Any], n: int) -> float:
    """``n`` calls enqueued in pipelined batches, then every result fetched; calls per second."""
    registry = queue.finished_job_registry
    before = registry.count
    t0 = time.perf_counter()
    jobs = []
    for start in range(0, n, 1000):
        datas = [queue.prepare_data(_ref(func), (i,), result_ttl=3600) for i in range(start, min(n, start + 1000))]
        jobs += queue.enqueue_many(datas)
    _wait(lambda: registry.count >= before + n, timeout=3600)
    results = [job.return_value(refresh=True) for job in jobs]
    elapsed = time.perf_counter() - t0
    assert results[-1] == func(n - 1)
    return n / elapsed


# --- Lithops --------------------------------------------------------------------------------------
@contextmanager
def lithops_executor(workers: int) -> Iterator[Any]:
    """A Lithops ``FunctionExecutor`` on its localhost compute and storage backends (runner
    :data:`LITHOPS_RUNNER`), with ``workers`` worker processes, configured by a temporary file
    (``LITHOPS_CONFIG_FILE``)."""
    with tempfile.TemporaryDirectory(prefix="bench-lithops-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "lithops:\n  backend: localhost\n  storage: localhost\n  log_level: WARNING\n"
            f"localhost:\n  version: {LITHOPS_RUNNER}\n  worker_processes: {workers}\n  runtime: {sys.executable}\n"
        )
        os.environ["LITHOPS_CONFIG_FILE"] = str(config)
        import lithops

        executor = lithops.FunctionExecutor()
        try:
            yield executor
        finally:
            executor.clean(clean_cloudobjects=True)


def lithops_latency(executor: Any, repeats: int, deadline: float) -> dict[str, float]:
    """One no-op (``call_async``), its result awaited (``get_result``), ``repeats`` times (fewer
    at ``deadline``) after one warm-up call."""
    times: list[float] = []
    for i in range(repeats + 1):
        if len(times) > 1 and time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        future = executor.call_async(noop, i)
        assert executor.get_result(fs=[future], timeout=LITHOPS_TIMEOUT, show_progressbar=False) in ([i], i)
        times.append(time.perf_counter() - t0)
    return percentiles(times[1:])


def lithops_calls(executor: Any, func: Callable[[int], Any], n: int) -> float:
    """``n`` calls as one ``map``, every result fetched; calls per second."""
    t0 = time.perf_counter()
    futures = executor.map(func, range(n))
    results = executor.get_result(fs=futures, timeout=LITHOPS_TIMEOUT + n, show_progressbar=False)
    elapsed = time.perf_counter() - t0
    assert len(results) == n and results[-1] == func(n - 1)
    return n / elapsed


PEERS: dict[str, tuple[Callable[[int], Any], Callable[..., dict[str, float]], Callable[..., float]]] = {
    "rq": (rq_queue, rq_latency, rq_calls),
    "lithops": (lithops_executor, lithops_latency, lithops_calls),
}


def run(peer: str, spec: dict[str, Any], workers: int, budget: float) -> dict[str, Any]:
    """Each workload of ``spec`` on ``peer``, within about ``budget`` seconds: the latency
    repeats stop after a quarter of it, and a call workload that would not fit in what is left
    at the best rate measured so far (a probe of ``PROBE_CALLS`` calls first) is skipped; a
    workload that fails or is skipped says so in its figure. Figures are keyed as
    :mod:`bench.compare` reads them."""
    start, latency, calls = PEERS[peer]
    figures: dict[str, Any] = {}
    deadline = time.monotonic() + budget
    with start(workers) as target:
        if spec.get("latency"):
            figures["latency"] = _attempt(latency, target, spec["latency"], time.monotonic() + budget / 4)
        work = [(f"noop:{n}", noop, n) for n in spec.get("noop", [])]
        if spec.get("kilobyte"):
            work.append((f"kilobyte:{spec['kilobyte']}", kilobyte, spec["kilobyte"]))
        rate = _attempt(calls, target, noop, PROBE_CALLS)  # the first estimate, not reported
        for key, func, n in work:
            left = deadline - time.monotonic()
            if not isinstance(rate, float):
                figures[key] = f"not run: the {PROBE_CALLS}-call probe {rate}"  # so would this
                continue
            if n / rate > left:
                remains = (
                    f"{left:.0f} s of the {budget:.0f} s budget left"
                    if left > 0
                    else f"the {budget:.0f} s budget used up"
                )
                figures[key] = f"skipped: ~{n / rate / 60:.0f} min at {rate:.0f} calls/s, {remains}"
                continue
            figures[key] = _attempt(calls, target, func, n)
            rate = max(rate, figures[key]) if isinstance(figures[key], float) else rate
    return figures


def _attempt(workload: Callable[..., Any], *args: Any) -> Any:
    """A workload's figure, or what made it fail (a peer's own failure is a figure too)."""
    try:
        return workload(*args)
    except Exception as exc:  # whatever the peer raises
        return f"failed: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("spec", help="the workloads, as JSON")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=float, default=600, help="seconds for all workloads (about)")
    args = parser.parse_args()
    print(json.dumps(run(args.peer, json.loads(args.spec), args.workers, args.budget)))


if __name__ == "__main__":
    main()
