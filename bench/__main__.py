"""``python -m bench``: start a local queue, run each scenario in its own process, print figures.

Options: ``--quick`` (small sizes), ``--workers N``, ``--million`` (the 1,000,000-task tag),
``--only NAME ...`` (some scenarios: end_to_end, large_tag, payload, sandbox).

``sandbox`` compares the cost per call with the workers' sandbox on (the default isolation)
and off (``HMQ_ISOLATION=none``) in the same run: no-op tasks end to end on a local queue whose
workers run each way, and no-op calls straight through one executor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from hmq import stack

SCENARIOS = ("end_to_end", "large_tag", "payload", "sandbox")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


@contextmanager
def local_queue(workers: int, isolation: Optional[str] = None) -> Iterator[dict[str, str]]:
    """A local queue (`hmq up`) in a temporary HMQ_HOME, its workers isolated as ``isolation``
    says (default: theirs); yields the environment of a client of it."""
    with tempfile.TemporaryDirectory(prefix="hmq-bench-") as tmp:
        home = Path(tmp)
        saved = os.environ.get("HMQ_ISOLATION")
        if isolation is not None:
            os.environ["HMQ_ISOLATION"] = isolation  # read by the workers `hmq up` starts
        try:
            stack.up(home, workers=workers, cores=1)
        finally:
            if saved is None:
                os.environ.pop("HMQ_ISOLATION", None)
            else:
                os.environ["HMQ_ISOLATION"] = saved
        try:
            yield {**os.environ, "HMQ_HOME": str(home)}
        finally:
            stack.down(home)


def scenario(name: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    """Run one scenario in a process of its own; its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scenarios", name, str(n)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        print(f"{name}: FAILED\n{out.stderr}", file=sys.stderr)
        sys.exit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _figure(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def compare_isolation(workers: int, quick: bool) -> None:
    """The ``sandbox`` scenario: the same figures with the sandbox on and off, side by side."""
    tasks, calls = (2_000, 2_000) if quick else (20_000, 20_000)
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--million", action="store_true", help="also submit and pull a 1,000,000-task tag")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="run only these")
    args = parser.parse_args()
    plan = [
        ("end_to_end", 2_000 if args.quick else 50_000),
        ("large_tag", 5_000 if args.quick else 200_000),
        ("payload", 10 if args.quick else 100),
    ]
    if args.million:
        plan.append(("large_tag", 1_000_000))
    plan = [(name, n) for name, n in plan if name in args.only]
    print(f"machine: {machine()}; {args.workers} local workers x 1 core")
    if plan:
        with local_queue(args.workers) as env:
            for name, n in plan:
                figures = scenario(name, n, env)
                print(f"{name:<11} " + "  ".join(f"{k}={_figure(v)}" for k, v in figures.items()))
    if "sandbox" in args.only:
        compare_isolation(args.workers, args.quick)


if __name__ == "__main__":
    main()
