"""``python -m bench``: start a local queue, run each scenario in its own process, print figures.

Options: ``--quick`` (small sizes), ``--workers N``, ``--million`` (the 1,000,000-task tag).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from hmq import stack


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--million", action="store_true", help="also submit and pull a 1,000,000-task tag")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    plan = [
        ("end_to_end", 2_000 if args.quick else 50_000),
        ("large_tag", 5_000 if args.quick else 200_000),
        ("payload", 10 if args.quick else 100),
    ]
    if args.million:
        plan.append(("large_tag", 1_000_000))
    print(f"machine: {machine()}; {args.workers} local workers x 1 core")
    with tempfile.TemporaryDirectory(prefix="hmq-bench-") as tmp:
        home = Path(tmp)
        stack.up(home, workers=args.workers, cores=1)
        env = {**os.environ, "HMQ_HOME": str(home)}
        try:
            for name, n in plan:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.scenarios", name, str(n)], env=env, capture_output=True, text=True
                )
                if out.returncode != 0:
                    print(f"{name}: FAILED\n{out.stderr}", file=sys.stderr)
                    sys.exit(1)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"{name:<11} "
                    + "  ".join(
                        f"{k}={v:,.0f}" if isinstance(v, (int, float)) and v >= 100 else f"{k}={v:.2f}"
                        for k, v in figures.items()
                    )
                )
        finally:
            stack.down(home)


if __name__ == "__main__":
    main()
