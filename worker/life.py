"""``Life``: when a worker stops claiming and leaves.

A worker under a batch scheduler or an autoscaler leaves by itself: after ``idle_timeout``
seconds holding no task, once it has claimed ``max_tasks`` tasks, ``grace`` seconds before its
``max_runtime`` is up, or when asked to (SIGTERM: :meth:`Life.leave`). From then on it claims
nothing, hands back what it has not started, and lets running calls finish until the
*deadline*; whatever still runs then is stopped and handed back. Then it exits 0. (A worker
that has claimed ``max_tasks`` tasks claims no more, and leaves once it has run and reported
them, however long they take.)

Time is read from the clock given (``time.monotonic`` by default), so tests pass time instead
of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

from worker.settings import WorkerSettings


class Life:
    """The leaving rules of one worker (see the module docstring), by its own clock."""

    def __init__(self, settings: WorkerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.claimed = 0
        self.leaving: Optional[str] = None
        """Why the worker is leaving (``None`` while it works)."""
        self.deadline: Optional[float] = None
        """When calls still running are stopped and handed back (``None``: they may finish)."""
        self._idle_since: Optional[float] = self.started

    def budget(self, want: int) -> int:
        """How many of ``want`` tasks the worker may still claim."""
        if self.leaving is not None:
            return 0
        if self.settings.max_tasks is not None:
            want = min(want, self.settings.max_tasks - self.claimed)
        return max(want, 0)

    def took(self, count: int) -> None:
        """Count tasks a claim handed to the worker."""
        self.claimed += count

    def observe(self, busy: bool) -> None:
        """Note whether the worker holds any task now, and start leaving when a rule says so."""
        now = self.clock()
        if busy:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if self.leaving is not None:
            return
        s = self.settings
        if s.max_runtime is not None and now - self.started >= s.max_runtime - s.grace:
            self.leaving, self.deadline = (
                f"its run time of {s.max_runtime:g} s is almost up",
                self.started + s.max_runtime,
            )
        elif s.max_tasks is not None and self.claimed >= s.max_tasks and not busy:
            self.leaving = f"it has taken its {s.max_tasks} task(s)"
        elif s.idle_timeout is not None and self._idle_since is not None and now - self._idle_since >= s.idle_timeout:
            self.leaving = f"it was idle for {s.idle_timeout:g} s"

    def leave(self, reason: str, grace: Optional[float] = None) -> None:
        """Start leaving now: running calls get ``grace`` seconds (default: the settings')."""
        if self.leaving is None:
            self.leaving = reason
            self.deadline = self.clock() + (self.settings.grace if grace is None else grace)

    def overdue(self) -> bool:
        """Whether the deadline has passed: calls still running are to be stopped."""
        return self.deadline is not None and self.clock() >= self.deadline

    def patience(self, longest: float) -> float:
        """How long an idle worker may wait for work: at most ``longest``, never past the moment
        a rule would have it leave (idle timeout, run time)."""
        now, s = self.clock(), self.settings
        limits = [longest]
        if s.idle_timeout is not None and self._idle_since is not None:
            limits.append(self._idle_since + s.idle_timeout - now)
        if s.max_runtime is not None:
            limits.append(self.started + s.max_runtime - s.grace - now)
        return max(0.0, min(limits))

    def wait(self, longest: float) -> float:
        """How long to wait for something to happen: at most ``longest``, never past the deadline."""
        if self.deadline is None:
            return longest
        return max(0.0, min(longest, self.deadline - self.clock()))
