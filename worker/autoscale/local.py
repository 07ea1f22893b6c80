"""The local provider: worker processes on this machine, as ``hmq up`` starts them.

Each worker is ``python -m worker`` in a session of its own (so it and its executors can be
signalled together), logging to ``LOG_DIR/autoscale-worker-N.log``. Workers leave by
themselves when idle; when the autoscaler stops, it stops the workers it started (they drain
within their grace and hand back what is unfinished).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hmq import stack
from worker.autoscale.scaler import Fleet


class LocalProvider:
    """Worker processes started by this autoscaler (``argv``: the worker's options)."""

    name = "local"
    leave_by_themselves = True

    def __init__(self, worker_args: list[str], log_dir: Path, grace: float) -> None:
        self.worker_args = worker_args
        self.log_dir = Path(log_dir)
        self.grace = grace
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started = 0

    def fleet(self) -> Fleet:
        self._procs = [p for p in self._procs if p.poll() is None]  # reaps the workers that left
        return Fleet(running=len(self._procs))

    def start(self, count: int) -> None:
        for _ in range(count):
            log = self.log_dir / f"autoscale-worker-{self._started}.log"
            self._started += 1
            env = stack.child_env()
            self._procs.append(stack.spawn([sys.executable, "-m", "worker", *self.worker_args], log, env))

    def cancel_queued(self, count: int) -> int:
        return 0  # a process runs as soon as it is started: nothing is ever queued

    def retire(self, count: int) -> None:
        raise NotImplementedError("local workers leave by themselves")

    def close(self) -> None:
        alive = [stack.Proc(p.pid, "") for p in self._procs if p.poll() is None]
        stack.stop_groups(alive, timeout=self.grace + 10)
        for p in self._procs:
            p.wait()
        self._procs = []
