"""The autoscaler's loop: poll the queue depth, compare it with the provider's workers, start or
stop some.

Each round (every ``interval`` seconds) reads ``GET /v1/queue`` for the datacenter and Python
this autoscaler's workers have, and computes the *target*: for each group of open tasks those
workers can run (``ncores`` at most ``cores``), the pending tasks plus those running in this
datacenter, divided by how many fit on one worker (``cores // ncores``), rounded up and summed;
then kept between ``min_workers`` and ``max_workers``. Against the provider's fleet (workers
queued, i.e. submitted but not started, and running):

- below target: start ``min(target - current, scale_up_step)`` workers, at most one such step
  per ``cooldown`` seconds; never more than ``max_workers`` in all;
- above target: cancel queued workers that are no longer needed (never running ones);
- running workers leave by themselves after ``idle_timeout`` seconds without work (the option
  is passed to them). Where a provider cannot let workers leave (a Kubernetes Deployment
  restarts them), the autoscaler retires the surplus itself once the target has stayed below
  the fleet for ``idle_timeout`` seconds.

:func:`decide` is the rule, free of I/O; :class:`Autoscaler` applies it with a clock it is
given, so tests pass time instead of sleeping.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional, Protocol

from hmq import wire
from hmq._errors import ConfigurationError, HmqError

log = logging.getLogger("hmq.autoscale")


@dataclass(frozen=True)
class ScalerSettings:
    """What every provider's autoscaler is told (see ``hmq autoscale --help``)."""

    datacenter: str = "default"
    """The datacenter its workers register in: only tasks that may run there count."""

    python: str = wire.PYTHON
    """The Python version (major.minor) its workers run."""

    cores: int = 1
    """Cores of each worker."""

    min_workers: int = 0
    """Workers kept queued or running even with an empty queue."""

    max_workers: int = 1
    """Never more workers than this, queued and running together."""

    idle_timeout: float = 300.0
    """Seconds a worker stays without work before it leaves (passed to the workers)."""

    grace: float = 30.0
    """Seconds a stopped worker's running calls may take to finish (passed to the workers)."""

    interval: float = 10.0
    """Seconds between two rounds."""

    scale_up_step: int = 10
    """Most workers started in one round."""

    cooldown: float = 30.0
    """Seconds after starting workers before more are started."""

    def __post_init__(self) -> None:
        try:
            wire.check_name(self.datacenter)
        except ValueError as exc:
            raise ConfigurationError(f"datacenter {self.datacenter!r}: {exc}") from None
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise ConfigurationError("need 0 <= min_workers <= max_workers and max_workers >= 1")
        if self.cores < 1 or self.scale_up_step < 1:
            raise ConfigurationError("cores and scale_up_step must be at least 1")
        if self.interval <= 0 or self.idle_timeout <= 0 or self.cooldown < 0 or self.grace < 0:
            raise ConfigurationError("interval and idle_timeout must be positive, cooldown and grace not negative")


@dataclass(frozen=True)
class Fleet:
    """A provider's workers: submitted but not started yet (``queued``), and ``running``."""

    queued: int = 0
    running: int = 0

    @property
    def size(self) -> int:
        return self.queued + self.running


class Provider(Protocol):
    """Where workers come from: Slurm jobs, a Kubernetes Deployment's replicas, local processes."""

    name: str
    leave_by_themselves: bool
    """Whether workers exit when idle (Slurm jobs, processes), or must be retired (a Deployment)."""

    def fleet(self) -> Fleet: ...

    def start(self, count: int) -> None: ...

    def cancel_queued(self, count: int) -> int:
        """Cancel up to ``count`` workers that have not started; return how many were."""
        ...

    def retire(self, count: int) -> None:
        """Stop ``count`` running workers (they drain); only where they do not leave by themselves."""
        ...

    def close(self) -> None: ...


def target(depth: wire.QueueDepth, settings: ScalerSettings) -> int:
    """How many workers the open tasks call for, between ``min_workers`` and ``max_workers``."""
    wanted = 0
    for group in depth.groups:
        if group.python != settings.python or group.ncores > settings.cores:
            continue  # these workers cannot run them
        open_here = group.pending + group.running_in.get(settings.datacenter, 0)
        wanted += math.ceil(open_here / (settings.cores // group.ncores))
    return max(settings.min_workers, min(settings.max_workers, wanted))


@dataclass(frozen=True)
class Plan:
    """One round's decision."""

    target: int
    start: int = 0
    cancel: int = 0
    retire: int = 0


@dataclass
class History:
    """What the rule remembers between rounds (monotonic times)."""

    last_start: float = float("-inf")
    below_since: Optional[float] = None
    """Since when the target has been below the fleet (for retiring)."""


def decide(
    wanted: int, fleet: Fleet, settings: ScalerSettings, history: History, now: float, leave_by_themselves: bool
) -> Plan:
    """The rule of the module docstring; updates ``history``."""
    if wanted > fleet.size:
        history.below_since = None
        if now - history.last_start < settings.cooldown:
            return Plan(wanted)
        start = min(wanted - fleet.size, settings.scale_up_step, settings.max_workers - fleet.size)
        if start > 0:
            history.last_start = now
        return Plan(wanted, start=max(start, 0))
    if wanted == fleet.size:
        history.below_since = None
        return Plan(wanted)
    cancel = min(fleet.queued, fleet.size - wanted)
    surplus = fleet.size - cancel - wanted
    if leave_by_themselves or surplus == 0:
        return Plan(wanted, cancel=cancel)
    if history.below_since is None:
        history.below_since = now
    if now - history.below_since < settings.idle_timeout:
        return Plan(wanted, cancel=cancel)
    history.below_since = None
    return Plan(wanted, cancel=cancel, retire=surplus)


@dataclass
class Autoscaler:
    """Runs rounds of :func:`decide` against a provider.

    Args:
        settings: the shared options.
        provider: where workers come from.
        depth: reads the queue depth (e.g. ``WorkerSession.queue_depth`` for the datacenter).
        clock: monotonic seconds (``time.monotonic`` unless a test passes one).
    """

    settings: ScalerSettings
    provider: Provider
    depth: Callable[[], wire.QueueDepth]
    clock: Callable[[], float] = time.monotonic
    history: History = field(default_factory=History)
    last: Optional[Plan] = None
    """The latest round's plan (what ``--metrics-port`` serves)."""

    def step(self) -> Plan:
        """One round: read, decide, apply; returns the plan."""
        wanted = target(self.depth(), self.settings)
        fleet = self.provider.fleet()
        plan = decide(wanted, fleet, self.settings, self.history, self.clock(), self.provider.leave_by_themselves)
        log.debug("round: target %d, have %d queued + %d running", wanted, fleet.queued, fleet.running)
        if plan.start:
            log.info(
                "target %d, have %d queued + %d running: starting %d", wanted, fleet.queued, fleet.running, plan.start
            )
            self.provider.start(plan.start)
        if plan.cancel:
            done = self.provider.cancel_queued(plan.cancel)
            log.info(
                "target %d, have %d queued + %d running: cancelled %d queued", wanted, fleet.queued, fleet.running, done
            )
        if plan.retire:
            log.info("target %d, have %d running: retiring %d", wanted, fleet.running, plan.retire)
            self.provider.retire(plan.retire)
        self.last = plan
        return plan

    def run(self, stop: threading.Event) -> None:
        """Rounds every ``interval`` seconds until ``stop`` is set; a failed round is logged and
        the next one tries again."""
        log.info(
            "autoscaling %s workers for datacenter %s (Python %s, %d cores each, at most %d)",
            self.provider.name,
            self.settings.datacenter,
            self.settings.python,
            self.settings.cores,
            self.settings.max_workers,
        )
        while not stop.is_set():
            try:
                self.step()
            except HmqError as exc:
                log.warning("round failed, trying again in %g s: %s", self.settings.interval, exc)
            stop.wait(self.settings.interval)
