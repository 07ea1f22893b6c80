"""``CachedWorker``: claims tasks, runs them in executor processes, uploads results.

Threads: the main loop (claim, prepare, flush results), one runner per core (hands mini-batches
of jobs to executor processes), and a heartbeat (extends leases, learns of cancellations).
Functions, chunk headers and executor processes are cached between tasks.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Optional

from hmq import defaults, formats, wire
from hmq._errors import HmqError
from hmq.api import API
from worker.credentials import WorkerCredentials
from worker.envs import EnvManager, PackageEnvError
from worker.pool import ExecutorDied, ExecutorPool, ExecutorProcess, Outcome
from worker.prepare import Job, Preparer

log = logging.getLogger("hmq.worker")


class CachedWorker:
    """A worker process: verified functions, package environments and executor processes are
    cached between tasks.

    Args:
        credentials: the worker's credentials (see ``hmq add-worker``).
        url: the API (default: the URL in the credentials).
        datacenter: name reported to the API; tasks submitted with ``datacenters=`` only run
            on workers of those datacenters.
        cores: cores this worker may use (default: all of the machine's).
        cache_dir: where package environments and scratch directories live.
        pip_args: extra pip arguments for building environments (e.g. an index URL).
    """

    def __init__(
        self,
        credentials: WorkerCredentials,
        url: Optional[str] = None,
        *,
        datacenter: str = "default",
        cores: Optional[int] = None,
        cache_dir: Optional[Path] = None,
        pip_args: tuple[str, ...] = (),
    ) -> None:
        url = url or credentials.url
        if not url:
            raise HmqError("no API URL: pass --api or put it in the credentials")
        self.credentials = credentials
        self.api = API(url, credentials.identity, credentials.admin)
        self.datacenter = datacenter
        self.cores = cores or os.cpu_count() or 1
        cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "hmq-worker"
        self.envs = EnvManager(cache / "envs", pip_args)
        self.pool = ExecutorPool(cache / "scratch" / f"{os.getpid()}", max_idle=self.cores)
        self.preparer = Preparer(self.api, credentials)
        self._cv = threading.Condition()
        self._queue: deque[Job] = deque()
        self._running: dict[str, tuple[Job, ExecutorProcess]] = {}
        self._outcomes: list[tuple[Job, Outcome]] = []
        self._rejected: list[wire.RejectedTask] = []
        self._dropped: set[str] = set()
        self._oldest_outcome: Optional[float] = None
        self._free = self.cores
        self._stop = threading.Event()
        self._avg_seconds: Optional[float] = None
        self._threads: list[threading.Thread] = []
        self.completed = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop: unstarted and interrupted tasks are handed back to the queue."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def run(self) -> None:
        """Work until :meth:`stop` is called."""
        info = self.api.register_worker(self.datacenter, self.cores)
        log.info(
            "worker %s (%s) registered as %s in datacenter %s with %d cores",
            self.credentials.name,
            self.api.url,
            info.worker_id,
            self.datacenter,
            self.cores,
        )
        self._threads = [
            threading.Thread(target=self._runner, name=f"hmq-runner-{i}", daemon=True) for i in range(self.cores)
        ]
        self._threads.append(
            threading.Thread(target=self._heartbeat, args=(info.heartbeat_seconds,), name="hmq-heartbeat", daemon=True)
        )
        for t in self._threads:
            t.start()
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self) -> None:
        delay = defaults.WORKER_POLL_MIN_SECONDS
        while not self._stop.is_set():
            self._flush(force=False)
            want = self._want()
            if want > 0:
                try:
                    claimed = self._claim(want)
                except HmqError as exc:
                    log.warning("claiming failed: %s", exc)
                    claimed = 0
                    delay = defaults.WORKER_POLL_MAX_SECONDS
                if claimed:
                    delay = defaults.WORKER_POLL_MIN_SECONDS
                    continue
            with self._cv:
                idle = not self._queue and not self._running
                self._cv.wait(timeout=delay if want > 0 else defaults.WORKER_FLUSH_SECONDS)
            if want > 0 and idle:
                delay = min(delay * 2, defaults.WORKER_POLL_MAX_SECONDS)

    def _shutdown(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self.pool.close()  # interrupts running calls; runners hand them back
        for t in self._threads:
            t.join(timeout=10)
        with self._cv:
            release = [j.task_id for j in self._queue] + list(self._running)
            self._queue.clear()
            self._running.clear()
        try:
            self._flush(force=True, release=release)
        except HmqError as exc:
            log.warning("could not hand back %d tasks on shutdown (their leases will expire): %s", len(release), exc)
        self.api.close()
        log.info("worker stopped after %d tasks", self.completed)

    # --- claiming ----------------------------------------------------------------------------
    def _want(self) -> int:
        """How many more tasks to hold: enough to keep every core busy for about a second."""
        per_core = 2 if self._avg_seconds is None else max(1, min(64, math.ceil(1.0 / max(self._avg_seconds, 1e-4))))
        target = min(defaults.CLAIM_MAX_TASKS, self.cores * per_core * 2)
        with self._cv:
            return target - len(self._queue) - len(self._running)

    def _claim(self, want: int) -> int:
        with self._cv:
            used = self.cores - self._free
            running = len(self._running)
        claim = self.api.dequeue_tasks(
            self.datacenter,
            self.envs.ready(),
            want,
            available=self.cores,
            allocated=self.cores,
            running=running,
            used=used,
        )
        jobs: list[Job] = []
        rejected: list[wire.RejectedTask] = []
        for group in claim.groups:
            ok, bad = self.preparer.prepare(group)
            jobs += ok
            rejected += bad
        with self._cv:
            self._queue.extend(jobs)
            self._rejected += rejected
            self._cv.notify_all()
        return len(jobs) + len(rejected)

    # --- running -----------------------------------------------------------------------------
    def _take(self) -> Optional[list[Job]]:
        """Under the lock: a mini-batch of jobs of one group once its cores are free."""
        while not self._stop.is_set():
            if self._queue:
                need = min(self._queue[0].ncores, self.cores)
                if self._free >= need:
                    group = self._queue[0].group
                    limit = max(1, min(defaults.WORKER_EXECUTOR_BATCH, len(self._queue) // self.cores))
                    batch = [j for j in list(self._queue)[: 4 * limit] if j.group == group][:limit]
                    for j in batch:
                        self._queue.remove(j)
                    self._free -= need
                    return batch
            self._cv.wait()
        return None

    def _runner(self) -> None:
        while True:
            with self._cv:
                batch = self._take()
            if batch is None:
                return
            try:
                self.execute_job(batch)
            finally:
                with self._cv:
                    self._free += min(batch[0].ncores, self.cores)
                    self._cv.notify_all()

    def execute_job(self, job: Job | list[Job], queue: Any = None) -> list[Outcome]:
        """Run verified job(s) of one package set in an executor; record and return the outcomes.

        Jobs whose run was interrupted by the worker (cancellation, shutdown) are handed back to
        ``queue`` (default: this worker's queue) instead of failing.
        """
        jobs = job if isinstance(job, list) else [job]
        back = self._queue if queue is None else queue
        packages, ncores = list(jobs[0].group[0]), jobs[0].ncores
        try:
            python = self.envs.python(packages)
        except (PackageEnvError, HmqError, ValueError) as exc:
            return self._record([(j, Outcome(j.task_id, False, str(exc).encode())) for j in jobs])
        ex = self.pool.acquire(python, ncores)
        with self._cv:
            for j in jobs:
                self._running[j.task_id] = (j, ex)
        by_id = {j.task_id: j for j in jobs}
        outcomes: list[Outcome] = []
        try:
            for outcome in ex.run([(j.task_id, j.digest, j.function, j.call) for j in jobs]):
                outcomes.append(outcome)
                self._record([(by_id.pop(outcome.task_id), outcome)])
        except ExecutorDied as died:
            self._interrupted(list(by_id.values()), died, back)
        finally:
            self.pool.release(ex)
            with self._cv:
                for j in jobs:
                    self._running.pop(j.task_id, None)
        return outcomes

    def _interrupted(self, unfinished: list[Job], died: ExecutorDied, back: Any) -> None:
        with self._cv:
            live = [j for j in unfinished if j.task_id not in self._dropped]
            if died.killed:  # stopped by us (cancellation, shutdown): not the calls' fault
                back.extendleft(reversed(live))  # run again, or handed back by the shutdown
                self._cv.notify_all()
                return
        if live:  # the first unfinished call crashed its executor; the rest never started
            self._record([(live[0], Outcome(live[0].task_id, False, str(died).encode()))])
            with self._cv:
                back.extendleft(reversed(live[1:]))
                self._cv.notify_all()

    def _record(self, items: list[tuple[Job, Outcome]]) -> list[Outcome]:
        with self._cv:
            for job, outcome in items:
                if job.task_id in self._dropped:
                    continue
                self._outcomes.append((job, outcome))
                self._avg_seconds = (
                    outcome.seconds if self._avg_seconds is None else 0.9 * self._avg_seconds + 0.1 * outcome.seconds
                )
            if self._outcomes and self._oldest_outcome is None:
                self._oldest_outcome = time.monotonic()
            self._cv.notify_all()
        return [o for _, o in items]

    # --- results -----------------------------------------------------------------------------
    def _flush(self, force: bool, release: Optional[list[str]] = None) -> None:
        with self._cv:
            due = (
                self._oldest_outcome is not None
                and time.monotonic() - self._oldest_outcome >= defaults.WORKER_FLUSH_SECONDS
            )
            full = len(self._outcomes) >= defaults.WORKER_RESULT_BATCH
            idle = not self._queue and not self._running
            if not (force or due or full or (idle and self._outcomes) or self._rejected):
                return
            outcomes, self._outcomes, self._oldest_outcome = self._outcomes, [], None
            rejected, self._rejected = self._rejected, []
        if not (outcomes or rejected or release):
            return
        try:
            self._upload(outcomes, rejected, release or [])
        except HmqError as exc:
            log.warning("reporting %d results failed, will retry: %s", len(outcomes), exc)
            with self._cv:
                self._outcomes = outcomes + self._outcomes
                self._rejected = rejected + self._rejected
                self._oldest_outcome = time.monotonic()
            if force:
                raise

    def _upload(
        self, outcomes: list[tuple[Job, Outcome]], rejected: list[wire.RejectedTask], release: list[str]
    ) -> None:
        groups: dict[tuple[str, str], list[tuple[Job, Outcome]]] = defaultdict(list)
        for job, outcome in outcomes:
            groups[(job.user.key_id, job.tag)].append((job, outcome))
        stored: list[wire.StoredResults] = []
        parts = [
            items[i : i + defaults.WORKER_RESULT_BATCH]
            for items in groups.values()
            for i in range(0, len(items), defaults.WORKER_RESULT_BATCH)
        ]
        slots = self.api.result_slots(len(parts)) if parts else []
        for slot, items in zip(slots, parts, strict=True):
            job0 = items[0][0]
            records = [
                formats.ResultRecord(
                    o.task_id, formats.KIND_RESULT if o.ok else formats.KIND_ERROR, formats.compress(o.payload)
                )
                for _, o in items
            ]
            blob = formats.encode_results(
                self.credentials.identity, self.credentials.certificate, job0.user, job0.tag, records
            )
            self.api.transport.put_object(slot.url, blob)
            stored.append(
                wire.StoredResults(
                    key=slot.key,
                    tag=job0.tag,
                    completed=[uuid.UUID(o.task_id) for _, o in items if o.ok],
                    failed=[uuid.UUID(o.task_id) for _, o in items if not o.ok],
                )
            )
        for i in range(0, max(len(stored), 1), 50):
            body = wire.CompleteIn(
                results=stored[i : i + 50],
                rejected=rejected if i == 0 else [],
                release=[uuid.UUID(t) for t in release] if i == 0 else [],
            )
            out = self.api.store_results(body)
            if out.ignored:
                log.info(
                    "%d results were not accepted (tasks cancelled, deleted or re-leased meanwhile)", len(out.ignored)
                )
        self.completed += len(outcomes)

    # --- heartbeat ---------------------------------------------------------------------------
    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._cv:
                known = [j.task_id for j in self._queue] + list(self._running)
            try:
                drop = set(self.api.sync_tasks(self.datacenter, known))
            except HmqError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            if drop:
                self._drop(drop)

    def _drop(self, drop: set[str]) -> None:
        """Forget tasks the queue no longer wants from us; stop the ones already running."""
        with self._cv:
            self._dropped |= drop
            self._queue = deque(j for j in self._queue if j.task_id not in drop)
            victims = {id(ex): ex for tid, (_, ex) in self._running.items() if tid in drop}
            self._outcomes = [(j, o) for j, o in self._outcomes if j.task_id not in drop]
        for ex in victims.values():
            ex.kill()
        log.info("dropped %d tasks (cancelled, deleted or re-leased); stopped %d executors", len(drop), len(victims))
