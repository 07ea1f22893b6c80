"""The Slurm provider: one worker per batch job, submitted from a job script the admin edits.

- **start**: ``sbatch --parsable --job-name=NAME --cpus-per-task=CORES [--partition ..]
  [--account ..] [--time ..] [extra sbatch arguments] TEMPLATE WORKER_OPTIONS...``; several
  workers at once go as one job array (``--array=0-N``). The worker options name the API, the
  credentials (an absolute path: compute nodes must see it, e.g. on a shared filesystem), the
  datacenter, ``--idle-timeout`` and ``--grace``, and ``--max-runtime`` when ``--time`` is
  given (the time limit less :data:`EXIT_MARGIN_SECONDS`). ``HMQ_WORKER_PYTHON`` (this
  interpreter, unless set) tells the template which Python to run.
- **fleet**: ``squeue --noheader --array --name NAME --user USER --format '%i %T'``: pending
  jobs are queued workers; running, configuring and completing ones are running.
- **cancel**: ``scancel`` of the newest queued jobs (by id: ``--state=PENDING`` would take a
  whole job array with it); running jobs are not cancelled, their workers leave by themselves
  when idle. (A job that starts between the listing and the cancel is stopped by its SIGTERM:
  the worker drains and hands its tasks back.)

Slurm commands are run as subprocesses (there is no maintained Python binding for every Slurm
release) with the autoscaler's environment, so ``SLURM_CONF`` and the like apply.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hmq._errors import ConfigurationError, ProviderError
from worker.autoscale.scaler import Fleet

DEFAULT_TEMPLATE = Path(__file__).with_name("hmq-worker.sbatch")
"""The shipped job script (also ``infra/slurm/hmq-worker.sbatch`` in the repository)."""

EXIT_MARGIN_SECONDS = 30.0
"""A worker given a time limit leaves this long before it (to report and exit)."""

QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
RUNNING = frozenset({"RUNNING", "CONFIGURING", "SUSPENDED", "RESIZING", "COMPLETING"})
"""Counted as running until Slurm is done with them, so that queued and running never exceed the maximum."""

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<rest>\d+(?::\d+){0,2})$")


def time_limit_seconds(text: str) -> float:
    """Seconds of a Slurm time limit: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    match = _TIME.match(text.strip())
    if match is None:
        raise ConfigurationError(f"{text!r} is not a Slurm time limit (e.g. 90, 4:00:00 or 1-12:00:00)")
    parts = [int(p) for p in match["rest"].split(":")]
    if match["d"] is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return float(((int(match["d"]) * 24 + hours) * 60 + minutes) * 60 + seconds)
    units = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(parts)]  # M, M:S, H:M:S
    return float(sum(p * u for p, u in zip(parts, units, strict=True)))


@dataclass(frozen=True)
class SlurmOptions:
    """How jobs are submitted (see ``hmq autoscale --help``)."""

    template: Path = DEFAULT_TEMPLATE
    job_name: str = "hmq-worker"
    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = None
    sbatch_args: tuple[str, ...] = ()
    arrays: bool = True

    def max_runtime(self) -> Optional[float]:
        """The worker's ``--max-runtime`` for the time limit, if one is given."""
        return None if self.time is None else time_limit_seconds(self.time) - EXIT_MARGIN_SECONDS


def _job_order(job: str) -> tuple[int, int]:
    """``123`` and ``123_4`` (an array element) in submission order."""
    head, _, index = job.partition("_")
    return int(head) if head.isdigit() else 0, int(index) if index.isdigit() else -1


class SlurmProvider:
    """Workers as Slurm batch jobs of one job name, submitted and tracked by this user."""

    name = "slurm"
    leave_by_themselves = True

    def __init__(
        self, options: SlurmOptions, cores: int, worker_args: list[str], env: Optional[Mapping[str, str]] = None
    ) -> None:
        if not Path(options.template).is_file():
            raise ConfigurationError(f"job template {options.template} does not exist")
        self.options = options
        self.cores = cores
        self.worker_args = worker_args
        self.env = {**(os.environ if env is None else env)}
        self.env.setdefault("HMQ_WORKER_PYTHON", sys.executable)
        self.user = getpass.getuser()

    def _run(self, argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderError(f"{argv[0]} could not run: {exc}") from None
        if out.returncode != 0:
            raise ProviderError(f"{' '.join(argv[:2])} ... failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def jobs(self) -> list[tuple[str, str]]:
        """``(job id, state)`` of this provider's jobs Slurm still lists, array elements one by one."""
        out = self._run(
            [
                "squeue",
                "--noheader",
                "--array",
                "--name",
                self.options.job_name,
                "--user",
                self.user,
                "--format",
                "%i %T",
            ]
        )
        return [(job, state) for job, state in (line.split()[:2] for line in out.splitlines() if line.strip())]

    def fleet(self) -> Fleet:
        states = [state for _, state in self.jobs()]
        return Fleet(queued=sum(s in QUEUED for s in states), running=sum(s in RUNNING for s in states))

    def sbatch_argv(self, count: int) -> list[str]:
        """The ``sbatch`` command that submits ``count`` workers (one job, or one job array)."""
        o = self.options
        argv = ["sbatch", "--parsable", f"--job-name={o.job_name}", f"--cpus-per-task={self.cores}"]
        argv += [
            f"--{name}={value}"
            for name, value in (("partition", o.partition), ("account", o.account), ("time", o.time))
            if value
        ]
        if count > 1:
            argv.append(f"--array=0-{count - 1}")
        return [*argv, *o.sbatch_args, str(o.template), *self.worker_args]

    def start(self, count: int) -> None:
        rounds = [count] if self.options.arrays else [1] * count
        for n in rounds:
            job = self._run(self.sbatch_argv(n)).strip().split(";")[0]
            if not job:
                raise ProviderError("sbatch --parsable printed no job id")

    def cancel_queued(self, count: int) -> int:
        queued = sorted((job for job, state in self.jobs() if state in QUEUED), key=_job_order)
        victims = queued[-count:] if count > 0 else []  # the newest
        if victims:
            self._run(["scancel", *victims])
        return len(victims)

    def retire(self, count: int) -> None:
        raise NotImplementedError("Slurm workers leave by themselves")

    def close(self) -> None:
        """Nothing to do: queued jobs stay (they start, find no work, leave) unless cancelled."""
