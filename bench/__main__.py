"""``python -m bench``: run each scenario in its own process, print figures.

Options: ``--quick`` (small sizes, a smoke run), ``--workers N``, ``--million`` (also
``memory``: client memory of a 100,000- and a 1,000,000-task tag), ``--only NAME ...`` (some scenarios of
:data:`RUNNERS`), ``--peers NAME ...`` (which peers ``compare`` runs: rq, lithops).

- ``end_to_end``, ``large_tag``, ``payload``: throughput and peak client memory on a local queue.
- ``compare``: hmq, RQ and Lithops on the same workloads, side by side (:mod:`bench.compare`).
- ``latency``: ``compare``'s one-call row alone (p50/p95 of 100 warm calls; 10 with ``--quick``):
  hmq embedded, hmq on PostgreSQL + S3 and the peers, in one run (only with ``--only``).
- ``fleet``: many simulated workers against one API process on PostgreSQL (:mod:`bench.fleet`).
- ``memory``: peak client memory of a 100,000- and a 1,000,000-task tag, submitted and pulled
  into a tag file in one process each, and its growth (only with ``--million`` or ``--only``).
- ``pending``: claims with 1,000,000 pending tasks pinned to a missing datacenter vs an empty queue
  (:mod:`bench.pending`, PostgreSQL).
- ``sandbox``: the cost per call with the workers' sandbox on (the default isolation) and off
  (``HMQ_ISOLATION=none``) in the same run: no-op tasks end to end on a local queue whose
  workers run each way, and no-op calls straight through one executor.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from bench import compare, fleet
from bench.stacks import figure, local_queue, machine, scenario


def compare_isolation(args: argparse.Namespace) -> None:
    """The ``sandbox`` scenario: the same figures with the sandbox on and off, side by side."""
    workers = args.workers
    tasks, calls = (2_000, 2_000) if args.quick else (20_000, 20_000)
    columns: dict[str, dict[str, Any]] = {}
    for isolation in ("auto", "none"):
        with local_queue(workers, None if isolation == "auto" else "none") as env:
            e2e = scenario("end_to_end", tasks, env)
        direct = scenario("executor_calls", calls, {**os.environ, "HMQ_ISOLATION": isolation})
        columns[direct["isolation"]] = {
            f"per no-op call through one executor ({calls:,} calls)": f"{direct['per_call_us']:.1f} µs",
            "executor start, to its first call's return (median of 10)": f"{direct['start_ms']:.1f} ms",
            f"no-op tasks end to end ({tasks:,}: submit, run, pull)": f"{e2e['end_to_end_per_s']:,.0f} tasks/s",
            f"wall time x {workers} workers per task": f"{e2e['seconds'] * workers / tasks * 1e6:,.0f} µs",
        }
    modes = list(columns)
    rows = list(columns[modes[0]])
    width = max(len(r) for r in rows)
    print(f"sandbox     per-call overhead with the sandbox on ({modes[0]}) and off ({modes[-1]}):")
    print(f"  {'':<{width}}  " + "".join(f"{m:>18}" for m in modes))
    for row in rows:
        print(f"  {row:<{width}}  " + "".join(f"{columns[m][row]:>18}" for m in modes))


def throughput(args: argparse.Namespace) -> None:
    """``end_to_end``, ``large_tag`` and ``payload`` (those of ``--only``), on one local queue."""
    plan = [
        ("end_to_end", 2_000 if args.quick else 50_000),
        ("large_tag", 5_000 if args.quick else 200_000),
        ("payload", 10 if args.quick else 100),
    ]
    plan = [(name, n) for name, n in plan if name in args.only]
    with local_queue(args.workers) as env:
        for name, n in plan:
            figures = scenario(name, n, env)
            print(f"{name:<11} " + "  ".join(f"{k}={figure(v)}" for k, v in figures.items()))


def million(args: argparse.Namespace) -> None:
    """``--million``: a 100,000- and a 1,000,000-task tag submitted and pulled into a tag file
    in one process each; peak client memory of both and its growth."""
    sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    peaks = []
    with local_queue(args.workers) as env:
        for n in sizes:
            figures = scenario("large_tag", n, env)
            peaks.append(figures["peak_mb"])
            print(f"{'large_tag':<11} " + "  ".join(f"{k}={figure(v)}" for k, v in figures.items()))
    growth = (peaks[1] / peaks[0] - 1) * 100
    print(
        f"memory      peak client RSS {sizes[0]:,} -> {sizes[1]:,} tasks: {peaks[0]:.0f} -> {peaks[1]:.0f} MB (+{growth:.0f}%)"
    )


def pending_claims(args: argparse.Namespace) -> None:
    """``pending``: claim cost with 1,000,000 pending tasks (10,000 with ``--quick``) pinned to a
    datacenter no worker has, against the same claims on an empty queue (PostgreSQL)."""
    from bench import pending
    from tests.backends import PostgresCluster

    n = 10_000 if args.quick else 1_000_000
    cluster = PostgresCluster().start()
    try:
        out = pending.measure(cluster.database(), n, repeats=11 if args.quick else 51)
    finally:
        cluster.stop()
    before, after = out["before"], out["after"]
    print(
        f"pending     {n:,} pending elsewhere: empty claim {before['empty_ms']:.2f} -> {after['empty_ms']:.2f} ms "
        f"({out['empty_ratio']:.2f}x), claim of 10 {before['ten_ms']:.2f} -> {after['ten_ms']:.2f} ms "
        f"({out['ten_ratio']:.2f}x)"
    )


RUNNERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "end_to_end": throughput,
    "large_tag": throughput,
    "payload": throughput,
    "compare": lambda args: compare.run(args.workers, args.quick, args.peers),
    "latency": lambda args: compare.run(args.workers, args.quick, args.peers, latency_only=True),
    "fleet": lambda args: fleet.run(args.quick),
    "sandbox": compare_isolation,
    "memory": million,
    "pending": pending_claims,
}
"""Each scenario ``--only`` can name and what runs it (scenarios sharing a runner run together).
A new scenario is one entry here."""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--million", action="store_true", help="also client memory at 100,000 and 1,000,000 tasks")
    parser.add_argument("--workers", type=int, default=2)
    everything = [name for name in RUNNERS if name not in ("memory", "latency")]  # memory: with --million
    parser.add_argument("--only", nargs="+", choices=list(RUNNERS), default=everything, help="run only these")
    parser.add_argument("--peers", nargs="*", choices=list(compare.PEER_NAMES), default=list(compare.PEER_NAMES))
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.workers} local workers x 1 core")
    done: set[Callable[[argparse.Namespace], None]] = set()
    for name in args.only:
        runner = RUNNERS[name]
        if runner not in done:
            done.add(runner)
            runner(args)
    if args.million and million not in done:
        million(args)


if __name__ == "__main__":
    main()
