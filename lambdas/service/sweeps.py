"""The maintenance sweeps that keep tasks from waiting forever, and their one trigger.

- **Leases**: a running task whose lease ran out returns to pending with one more attempt, or
  fails once it is out of attempts (:meth:`Lifecycle.expire_leases`).
- **Placement**: a pending task that no worker seen within ``placement_timeout_seconds`` could
  run fails with an error naming what was missing (:meth:`Lifecycle.fail_unplaceable`).
- **Nonces**: request nonces past their expiry (twice the clock-skew window) are deleted
  (:meth:`Sweeps.sweep_nonces`), one indexed range delete.
- **Uploads**: objects uploaded through URLs issued more than ``upload_grace_seconds`` ago and
  never registered (a submit that was killed, a report that never came) are deleted from the
  store, a page at a time (:meth:`Sweeps.sweep_uploads`).
- **Metrics**: per-minute samples of the fleet older than ``metrics_retention_seconds`` are
  deleted (:meth:`Sweeps.sweep_metrics`, see :mod:`lambdas.service.metrics`).

Trigger: the API has no background process (on AWS Lambda it cannot have one), so requests
drive the sweeps. The one call site is the ``principal`` dependency of the routes
(:func:`lambdas.routes.principal`): once a caller is authenticated, :meth:`Sweeps.run_due`
runs the sweeps that are due, each in a short transaction of its own, before the route runs.
Claims and heartbeats, the hot path of an idle fleet, authenticate in their own transaction
instead; they run the due sweeps after their answer is sent (:meth:`Sweeps.due` is a clock
comparison, so a request that finds nothing due pays nothing). Workers claim and heartbeat, and
a blocking pull asks again, so expired and unplaceable tasks fail eventually even when no worker
is left. Due means, per API process and by the API's clock:

- the lease check at most every ``min(lease_sweep_seconds, lease_seconds / 4)``; it reads one
  row of the ``(status, lease_until)`` index and opens a write transaction only when a lease
  did run out, so it is cheap when nothing is due;
- the placement sweep at most every ``min(placement_sweep_seconds, placement_timeout_seconds / 4)``,
  never when the timeout is 0;
- the upload sweep at most every ``min(upload_sweep_seconds, upload_grace_seconds / 4)``;
- the metrics purge at most every ``metrics_sweep_seconds``;
- the nonce purge at most every ``nonce_purge_seconds``.

One thread of a process sweeps at a time (the others go on without waiting). Processes that
sweep at once (several Lambda sandboxes) do no harm: PostgreSQL's ``SKIP LOCKED`` and the state
each update requires make a second sweep change nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, Optional, cast

from sqlalchemy import CursorResult, delete, select

from hmq._errors import StorageError
from lambdas.db import Index
from lambdas.db.models import Nonce, Upload
from lambdas.service.lifecycle import Lifecycle
from lambdas.service.metrics import Metrics
from lambdas.settings import Settings
from lambdas.storage import ObjectStore

log = logging.getLogger("hmq.api")
UPLOAD_SWEEP_PAGE = 1000
"""Unregistered uploads deleted per sweep (one store request)."""


class Sweeps:
    """The sweeps of one API process, rate-limited by the lifecycle's clock."""

    def __init__(
        self, settings: Settings, index: Index, lifecycle: Lifecycle, store: ObjectStore, metrics: Metrics
    ) -> None:
        self.index = index
        self.lifecycle = lifecycle
        self.store = store
        self.metrics = metrics
        self.metrics_every = settings.metrics_sweep_seconds
        self.upload_grace = settings.upload_grace_seconds
        self.upload_every = min(settings.upload_sweep_seconds, settings.upload_grace_seconds / 4)
        self.lease_every = min(settings.lease_sweep_seconds, settings.lease_seconds / 4)
        timeout = settings.placement_timeout_seconds
        self.placement_every: Optional[float] = (
            min(settings.placement_sweep_seconds, timeout / 4) if timeout > 0 else None
        )
        self.nonce_every = settings.nonce_purge_seconds
        self._last_lease = self._last_placement = self._last_upload = self._last_nonce = -math.inf
        self._last_metrics = -math.inf
        self._next = -math.inf  # no sweep is due before this
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether some sweep is due (no index access: a clock comparison)."""
        return self.lifecycle.clock() >= self._next

    def run_due(self) -> None:
        """Run the sweeps whose interval has passed (the one trigger: see the module docstring)."""
        if not self.due() or not self._lock.acquire(blocking=False):
            return  # nothing due, or another request of this process is sweeping
        try:
            now = self.lifecycle.clock()
            if now - self._last_nonce >= self.nonce_every:
                self._last_nonce = now
                self.sweep_nonces()
            if now - self._last_lease >= self.lease_every:
                self._last_lease = now
                self.sweep_leases()
            if self.placement_every is not None and now - self._last_placement >= self.placement_every:
                self._last_placement = now
                self.sweep_placement()
            if now - self._last_upload >= self.upload_every:
                self._last_upload = now
                self.sweep_uploads()
            if now - self._last_metrics >= self.metrics_every:
                self._last_metrics = now
                self.sweep_metrics()
        finally:
            self._next = self._next_due()
            self._lock.release()

    def _next_due(self) -> float:
        times = [self._last_lease + self.lease_every, self._last_upload + self.upload_every]
        times += [self._last_nonce + self.nonce_every, self._last_metrics + self.metrics_every]
        if self.placement_every is not None:
            times.append(self._last_placement + self.placement_every)
        return min(times)

    def sweep_nonces(self) -> int:
        """Forget request nonces past their expiry; return how many."""
        with self.index.write() as session:
            purged = session.execute(delete(Nonce).where(Nonce.expires < self.lifecycle.clock()))
            return cast(CursorResult[Any], purged).rowcount

    def sweep_leases(self) -> int:
        """Requeue or fail the tasks whose lease ran out; return how many."""
        with self.index.read() as session:
            if not self.lifecycle.leases_ran_out(session):
                return 0
        with self.index.write() as session:
            return self.lifecycle.expire_leases(session)

    def sweep_uploads(self) -> int:
        """Delete a page of objects uploaded but never registered within the grace period;
        return how many. The objects go first, then their rows: a store that fails keeps the
        rows for the next sweep (and the request that triggered the sweep goes on)."""
        cutoff = self.lifecycle.clock() - self.upload_grace
        with self.index.read() as session:
            keys = list(
                session.scalars(
                    select(Upload.key).where(Upload.issued < cutoff).order_by(Upload.issued).limit(UPLOAD_SWEEP_PAGE)
                )
            )
        if not keys:
            return 0
        try:
            self.store.delete(keys)
        except StorageError as exc:
            log.warning("could not delete %d unregistered upload(s), will try again: %s", len(keys), exc)
            return 0
        with self.index.write() as session:
            session.execute(delete(Upload).where(Upload.key.in_(keys)))
        log.info("deleted %d upload(s) never registered within %.0f s", len(keys), self.upload_grace)
        return len(keys)

    def sweep_metrics(self) -> int:
        """Delete the fleet's samples older than the retention; return how many rows went."""
        with self.index.write() as session:
            return self.metrics.purge(session, self.lifecycle.clock())

    def sweep_placement(self) -> int:
        """Fail the pending tasks no worker seen within the placement timeout can run; return how many."""
        with self.index.write() as session:
            return self.lifecycle.fail_unplaceable(session)
