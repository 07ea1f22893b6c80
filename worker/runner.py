"""``CachedWorker``: claims tasks, runs them in executor processes, uploads results.

Threads: the main loop (claim, prepare, report), one runner per core (hands mini-batches of one
user's jobs to that user's executor processes), and a heartbeat (extends the leases of the tasks
the worker holds, learns of cancellations). Functions, chunk headers, package environments and
executor processes are cached between tasks.

Every claimed task stays in ``_held`` until the API has been told its outcome (or that it is
released): the heartbeat extends exactly those leases, so a task the worker lost track of is
never kept alive and returns to the queue when its lease runs out.

Leaving (:mod:`worker.life`): idle too long, enough tasks taken, run time almost up, or asked to
(:meth:`CachedWorker.drain`, on SIGTERM). The worker then claims nothing more, hands back what it
has not started at once, lets running calls finish until the deadline, and stops and hands back
whatever still runs then. A claim waiting on the API when the worker is asked to leave or stop
is ended at once (:class:`hmq._http.Interrupt`): the API hands back what it leased for a claim
whose worker hung up, and whatever answer still arrives is handed back by the shutdown.

Outages are waited out, never turned into failures: requests are retried by the transport (see
``hmq._transport``); tasks whose objects cannot be fetched now are handed back unrun and the
worker pauses its claims (jittered, doubling up to ``WorkerSettings.backoff_max_seconds``);
results that cannot be reported are kept and reported later.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any, Optional

from hmq import wire
from hmq._errors import HmqError, IntegrityError
from hmq._http import Interrupt
from hmq._transport import backoff_delay
from hmq.credentials import WorkerCredentials
from worker.envs import EnvManager
from worker.life import Life
from worker.pace import ClaimSize, Pace
from worker.pool import ExecutorDied, ExecutorPool, ExecutorProcess, Outcome
from worker.prepare import Job, Preparer
from worker.report import report
from worker.session import WorkerSession
from worker.settings import WorkerSettings

log = logging.getLogger("hmq.worker")


class CachedWorker:
    """A worker process: verified functions, package environments and executor processes are
    cached between tasks.

    Args:
        credentials: the worker's credentials (see ``hmq add-worker``).
        settings: the API's URL, datacenter, cores, cache directory and tunables (built once
            at start, by ``python -m worker`` from its options).
    """

    def __init__(self, credentials: WorkerCredentials, settings: WorkerSettings) -> None:
        self.credentials = credentials
        self.settings = settings
        self.session = WorkerSession.connect(
            settings.url,
            credentials.identity,
            function_cache=settings.function_cache,
            retry_deadline=settings.retry_deadline_seconds,
        )
        self.datacenter = settings.datacenter
        self.cores = settings.cores
        self.pool = ExecutorPool(
            settings.cache_dir / "scratch" / f"{os.getpid()}",
            max_idle=self.cores,
            user=settings.executor_user,
            sandbox=settings.isolation,
            max_log=settings.max_log_bytes,
        )
        self.envs = EnvManager(
            settings.cache_dir / "envs", settings.pip_args, sandbox=self.pool.sandbox, on_change=self._beat_soon
        )
        self.preparer = Preparer(self.session, credentials, settings.header_cache)
        self._cv = threading.Condition()
        self._held: set[str] = set()
        self._handback: set[str] = set()  # held, not started, to be released with the next report
        self._terminated: set[str] = set()  # their executor was terminated from outside once
        self.life = Life(settings)
        self.pace = Pace(settings.claim_horizon_seconds, settings.start_within_seconds, settings.claim_max_tasks)
        self._queue: deque[Job] = deque()
        self._running: dict[str, tuple[Job, ExecutorProcess]] = {}
        self._outcomes: list[tuple[Job, Outcome]] = []
        self._rejected: list[wire.RejectedTask] = []
        self._released: list[str] = []  # to hand back unrun (their objects could not be fetched)
        self._setbacks = 0  # claims in a row whose tasks had to be handed back
        self._resume_at = 0.0  # no claim before this (time.monotonic)
        self._settle_until = 0.0  # after a short claim: no claim before this while tasks are held
        self._claims_failing = False
        self._dropped: set[str] = set()  # running when dropped: their outcomes are discarded
        self._oldest_outcome: Optional[float] = None
        self._free = self.cores
        self._beaten = time.monotonic()  # when the held leases were last extended (heartbeat or claim)
        self._stop = threading.Event()
        self._waiting: Optional[Interrupt] = None  # ends the claim waiting on the API, if one is
        self._avg_seconds: Optional[float] = None
        self._threads: list[threading.Thread] = []
        self._changes = 0  # bumped (under the lock) by the other threads as they change what the main loop acts on
        self.completed = 0

    # --- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop now: unstarted and interrupted tasks are handed back to the queue."""
        self._stop.set()
        self._end_wait()

    def drain(self, reason: str = "asked to stop", grace: Optional[float] = None) -> None:
        """Ask the worker to leave gracefully: it claims nothing more, hands back what it has not
        started, gives running calls ``grace`` seconds (default: ``settings.grace``) to finish,
        then stops and hands back the rest. Safe to call from a signal handler."""
        self.life.leave(reason, grace)
        self._end_wait()

    def _end_wait(self) -> None:
        """Wake the main loop; end the claim waiting on the API, if one is."""
        with self._cv:
            waiting = self._waiting
            self._cv.notify_all()
        if waiting is not None:
            waiting.fire()

    def run(self) -> None:
        """Work until the worker leaves (see :mod:`worker.life`) or :meth:`stop` is called."""
        info = self.session.register(
            self.datacenter, self.cores, memory=self.settings.memory, isolation=self.pool.sandbox.mode.value
        )
        log.info(
            "worker %s (%s) registered as %s in datacenter %s with %d cores",
            self.credentials.name,
            self.session.url,
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
        delay = self.settings.poll_min_seconds
        while not self._stop.is_set():
            with self._cv:
                seen = self._changes
            self._flush(force=False)
            with self._cv:
                busy = bool(self._held)
            self.life.observe(busy)
            if self.life.leaving is None:
                delay = self._work(delay, seen)
            elif not self._draining():
                log.info("leaving: %s", self.life.leaving)
                return

    def _work(self, delay: float, seen: int) -> float:
        """One round of claiming (or waiting for work); returns the next idle wait. The wait is
        skipped when another thread changed something since the round began (``seen``): an
        outcome recorded or a core freed while a claim was out is acted on at once."""
        poll_min, poll_max = self.settings.poll_min_seconds, self.settings.poll_max_seconds
        size = self._want() if self._may_claim() else None
        want = self.life.budget(size.total) if size is not None and size.total > 0 else 0
        if size is not None and want > 0:
            try:
                claimed, waited = self._claim(replace(size, total=want))
            except HmqError as exc:
                if not self._claims_failing:  # once per outage
                    log.warning("claiming failed, trying again every %.0f s: %s", poll_max, exc)
                self._claims_failing = True
                claimed, waited = 0, False
                delay = poll_max
            if claimed or waited:  # the API waited for work on our behalf: no sleep here
                return poll_min
        with self._cv:
            idle = not self._queue and not self._running
            if self._changes != seen:
                return delay
            settling = self._settle_until - time.monotonic()
            timeout = delay if want > 0 else self.settings.flush_seconds
            self._cv.wait(timeout=min(timeout, settling) if settling > 0 else timeout)
        return min(delay * 2, poll_max) if want > 0 and idle else delay

    def _may_claim(self) -> bool:
        """Whether to claim now: not during a pause after handed-back tasks, and not right after a
        claim that got less than it asked for (the queue had no more) while its tasks are still
        held: their results go out first, then the worker waits for work at the API. Only a
        worker whose calls run a while claims again, a poll interval later."""
        now = time.monotonic()
        if now < self._resume_at:
            return False
        with self._cv:
            return not self._held or now >= self._settle_until

    def _draining(self) -> bool:
        """One round of leaving: hand back what has not started, wait for running calls. False
        once nothing runs any more, or at the deadline (the shutdown stops what still runs)."""
        with self._cv:
            if self._queue:
                self._handback.update(j.task_id for j in self._queue)
                self._queue.clear()  # in place: runners may hold a reference to it
            if not self._running or self.life.overdue():
                return False
            self._cv.wait(timeout=self.life.wait(self.settings.flush_seconds))
        return True

    def _shutdown(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self.pool.close()  # interrupts running calls; runners put them back in the queue
        for t in self._threads:
            t.join(timeout=10)
        try:
            self._flush(force=True, release_rest=True)
        except HmqError as exc:
            log.warning("could not hand back %d tasks on shutdown (their leases will expire): %s", len(self._held), exc)
        self.session.close()
        log.info("worker stopped after %d tasks", self.completed)

    # --- claiming ----------------------------------------------------------------------------
    def _want(self) -> ClaimSize:
        """What to claim: what the free cores can start within the claim horizon, by the
        durations measured so far (:class:`worker.pace.Pace`), less what is queued; nothing
        while more than half of the last claim's worth still waits to start. A core whose call
        is not measured yet, runs past the horizon or has run ``start_within_seconds`` is busy."""
        with self._cv:
            now = time.monotonic()
            calls = {id(ex): (job, ex) for job, ex in self._running.values()}
            busy = sum(
                min(job.ncores, self.cores) for job, ex in calls.values() if self.pace.busy(job, now - ex.call_started)
            )
            size = self.pace.size(max(0, self.cores - busy), self._queue)
            queued = len(self._queue)
        if queued > size.total // 2:
            return replace(size, total=0)
        return replace(size, total=size.total - queued)

    def _claim(self, size: ClaimSize) -> tuple[int, bool]:
        """Claim what ``size`` says; return how many tasks came and whether the API waited for
        them. The claim names every task held (a heartbeat too). A worker that holds nothing
        and has nothing to report lets the API wait for work (``claim_wait_seconds`` less a
        random part, ``WorkerSettings.idle_claim_wait``; never past the moment it would leave):
        it is idle, and its main loop has nothing else to do."""
        with self._cv:
            used, running = self.cores - self._free, len(self._running)
            held = sorted(self._held)
            idle = not held and not (self._outcomes or self._rejected or self._released)
        wait = self.life.patience(self.settings.idle_claim_wait()) if idle else 0.0
        sent = time.monotonic()
        claim = self._send_claim(size, wait, held, running, used)
        if self._claims_failing:
            log.warning("claiming works again")
            self._claims_failing = False
        if claim.held_until is not None:
            self._beaten = sent  # the held leases were extended: the heartbeat may skip a beat
        if claim.drop:
            self._drop({str(t) for t in claim.drop})
        with self._cv:
            self._held.update(str(t.id) for g in claim.groups for t in g.tasks)
        self.life.took(sum(len(g.tasks) for g in claim.groups))
        jobs: list[Job] = []
        rejected: list[wire.RejectedTask] = []
        released: list[str] = []
        for group in claim.groups:
            ok, bad, back = self.preparer.prepare(group)
            self.pace.claimed(ok)
            jobs += ok
            rejected += bad
            released += back
        if sum(len(g.tasks) for g in claim.groups) < size.total:
            self._settle_until = time.monotonic() + self.settings.poll_min_seconds
        with self._cv:
            self._queue.extend(j for j in jobs if j.task_id in self._held)  # not dropped meanwhile
            self._rejected += [r for r in rejected if str(r.id) in self._held]
            self._released += [t for t in released if t in self._held]
            self._cv.notify_all()
        self._pause(bool(released))
        return len(jobs) + len(rejected) + len(released), wait > 0 and claim.wait > 0

    def _send_claim(self, size: ClaimSize, wait: float, held: list[str], running: int, used: int) -> wire.ClaimOut:
        """One claim; a waiting one (``wait``) can be ended by :meth:`drain` or :meth:`stop`
        (then, or when the worker was asked to leave meanwhile, the answer is empty, or what
        was already on its way)."""
        interrupt = Interrupt() if wait > 0 else None
        with self._cv:
            self._waiting = interrupt
        if interrupt is not None and (self._stop.is_set() or self.life.leaving is not None):
            interrupt.fire()  # asked to leave before the claim could be ended: not sent
        try:
            return self.session.claim(
                size.total,
                self.cores,
                allocated=self.cores,
                running=running,
                used=used,
                per_function=size.per_function,
                unmeasured=size.unmeasured,
                building=self.envs.building(),
                wait=wait,
                held=held,
                interrupt=interrupt,
                spare=self.settings.result_slot_spare,
            )
        finally:
            with self._cv:
                self._waiting = None

    def _pause(self, handed_back: bool) -> None:
        """After tasks had to be handed back, claim again only after a pause: jittered, doubling
        with each such claim in a row up to ``backoff_max_seconds``; a claim without resets it."""
        if not handed_back:
            self._setbacks = 0
            return
        delay = backoff_delay(self._setbacks, self.settings.poll_max_seconds, self.settings.backoff_max_seconds)
        self._setbacks += 1
        self._resume_at = time.monotonic() + delay

    # --- running -----------------------------------------------------------------------------
    def _take(self) -> Optional[list[Job]]:
        """Under the lock: a mini-batch of jobs of one group once its cores are free."""
        while not self._stop.is_set():
            if self._queue:
                need = min(self._queue[0].ncores, self.cores)
                if self._free >= need:
                    group = self._queue[0].group
                    limit = self._batch_size()
                    batch = [j for j in list(self._queue)[: 4 * limit] if j.group == group][:limit]
                    for j in batch:
                        self._queue.remove(j)
                    self._free -= need
                    return batch
            self._cv.wait()
        return None

    def _batch_size(self) -> int:
        """Calls per executor round trip: several only for short calls (by the average so far),
        since a call queued behind a slow one in its batch waits for it."""
        if self._avg_seconds is None:
            return 1
        short = int(self.settings.executor_batch_seconds / max(self._avg_seconds, 1e-6))
        return max(1, min(self.settings.executor_batch, len(self._queue) // self.cores, short))

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
                    self._changed()
                    report_now = bool(self._outcomes) and self._idle()
            if report_now:
                self._report_idle()

    def _changed(self) -> None:
        """Under the lock: wake the main loop, which acts on this change before it waits again."""
        self._changes += 1
        self._cv.notify_all()

    def _report_idle(self) -> None:
        """Report from this runner thread: the worker has nothing else to do, and the main loop
        may be out claiming. A result waited for is then on its way as soon as it is known."""
        try:
            self._flush(force=False)
        except Exception:  # a defect: the main loop reports what is left
            log.exception("reporting results failed")

    def execute_job(self, job: Job | list[Job], queue: Any = None) -> list[Outcome]:
        """Run verified job(s) of one group in an executor; record and return the outcomes.

        Jobs whose run was interrupted by the worker (cancellation, shutdown) are handed back to
        ``queue`` (default: this worker's queue) instead of failing. Any other failure fails the
        unfinished jobs with the reason: a job is never lost.
        """
        jobs = job if isinstance(job, list) else [job]
        back = self._queue if queue is None else queue
        tenant, packages, ncores = jobs[0].group
        try:
            ex = self.pool.acquire(self.envs.python(list(packages)), ncores, tenant)
        except Exception as exc:  # pip failed, an executor cannot start: the calls fail, the worker goes on
            return self._fail(jobs, str(exc) if isinstance(exc, HmqError) else f"{type(exc).__name__}: {exc}")
        with self._cv:
            for j in jobs:
                self._running[j.task_id] = (j, ex)
        by_id = {j.task_id: j for j in jobs}
        outcomes: list[Outcome] = []
        try:
            for outcome in ex.run([(j.task_id, j.digest, j.function, j.call, j.limits) for j in jobs]):
                done = by_id.pop(outcome.task_id, None)
                if done is None:
                    raise IntegrityError(f"executor answered for task {outcome.task_id}, which it was not given")
                outcomes.append(outcome)
                self._record([(done, outcome)])
        except ExecutorDied as died:  # crashed, timed out, or stopped by us
            self._interrupted(list(by_id.values()), died, back, time.monotonic() - ex.call_started)
        except Exception as exc:  # a garbled reply or a defect: fail what is left, keep the worker
            log.exception("running %d calls failed", len(by_id))
            ex.kill()
            self._fail(list(by_id.values()), f"the worker failed while running the call: {type(exc).__name__}: {exc}")
        finally:
            self.pool.release(ex)
            with self._cv:
                for j in jobs:
                    self._running.pop(j.task_id, None)
                    self._dropped.discard(j.task_id)
        return outcomes

    def _fail(self, jobs: list[Job], reason: str) -> list[Outcome]:
        return self._record([(j, Outcome(j.task_id, False, reason.encode())) for j in jobs])

    def _interrupted(self, unfinished: list[Job], died: ExecutorDied, back: Any, seconds: float) -> None:
        with self._cv:
            live = [j for j in unfinished if j.task_id not in self._dropped]
            if died.killed or self._terminated_from_outside(died, live):  # not the calls' fault
                back.extendleft(reversed(live))  # run again, or handed back by the shutdown
                self._cv.notify_all()
                return
        if live:  # the first unfinished call crashed its executor or timed out; the rest never started
            self._record([(live[0], Outcome(live[0].task_id, False, str(died).encode(), seconds, log=died.log))])
            with self._cv:
                back.extendleft(reversed(live[1:]))
                self._cv.notify_all()

    def _terminated_from_outside(self, died: ExecutorDied, live: list[Job]) -> bool:
        """Under the lock: whether an executor's death is a batch system, container runtime or
        terminal stopping the whole job (SIGTERM or SIGINT to every process), not the call's
        doing. Its calls go back to the queue (and are handed back when the worker, signalled
        too, leaves); a call whose executor is terminated twice on this worker fails as a crash."""
        if died.returncode not in (-signal.SIGTERM, -signal.SIGINT) or not live:
            return False
        if self.life.leaving is None and live[0].task_id in self._terminated:
            return False
        self._terminated.update(j.task_id for j in live)
        return True

    def _record(self, items: list[tuple[Job, Outcome]]) -> list[Outcome]:
        with self._cv:
            for job, outcome in items:
                if job.task_id in self._dropped or job.task_id not in self._held:
                    continue
                if not outcome.ok and job.limits.retries:  # the error says which attempt this was
                    outcome = replace(outcome, payload=job.attempt_line().encode() + outcome.payload)
                self._outcomes.append((job, outcome))
                if outcome.seconds > 0:
                    self.pace.record(job, outcome.seconds)
                self._avg_seconds = (
                    outcome.seconds if self._avg_seconds is None else 0.9 * self._avg_seconds + 0.1 * outcome.seconds
                )
            if self._outcomes and self._oldest_outcome is None:
                self._oldest_outcome = time.monotonic()
            self._changed()
        return [o for _, o in items]

    # --- results -----------------------------------------------------------------------------
    def _flush(self, force: bool, release_rest: bool = False) -> None:
        """Report outcomes and rejections when a batch is full, old enough or the worker idles,
        and hand back queued tasks that did not start soon enough (for another worker); on
        shutdown (``release_rest``) hand back every other task still held."""
        with self._cv:
            stale = self._take_stale()
            due = (
                self._oldest_outcome is not None
                and time.monotonic() - self._oldest_outcome >= self.settings.flush_seconds
            )
            full = len(self._outcomes) >= self.settings.result_batch
            idle = self._idle()
            handback = self._handback or stale or self._released
            if not (force or due or full or (idle and self._outcomes) or self._rejected or handback):
                return
            outcomes, self._outcomes, self._oldest_outcome = self._outcomes, [], None
            rejected, self._rejected = self._rejected, []
            handed, self._released = self._released, []
            reported = {j.task_id for j, _ in outcomes} | {str(r.id) for r in rejected}
            if release_rest:
                release = sorted(self._held - reported)
            else:
                again = (self._handback & self._held) | {j.task_id for j in stale} | set(handed)
                release = sorted(again - reported)
        if not (outcomes or rejected or release):
            return
        try:
            report(self.session, self.credentials, self.settings, outcomes, rejected, release)
        except HmqError as exc:
            log.warning("reporting %d results failed, will retry: %s", len(outcomes), exc)
            with self._cv:
                self._outcomes = outcomes + self._outcomes
                self._rejected = rejected + self._rejected
                self._released = handed + self._released
                self._oldest_outcome = time.monotonic()
                self._queue.extendleft(reversed([j for j in stale if j.task_id in self._held]))
            if force:
                raise
            return
        with self._cv:
            self._held -= reported | set(release)
            self._handback &= self._held
            self.completed += len(outcomes)
            self._changed()  # holding nothing now, the main loop may wait for work at the API
        if outcomes and not release_rest:
            self._keep_slots()
        if stale:
            log.info(
                "handed back %d tasks that could not start within %g s", len(stale), self.settings.start_within_seconds
            )

    def _keep_slots(self) -> None:
        """Spare result upload URLs for the next report, asked for once this one is done (and
        the main loop free to claim), so that a result waited for costs its PUT and complete."""
        try:
            self.session.keep_result_slots(self.settings.result_slot_spare)
        except HmqError as exc:  # the next report asks for its slots itself
            log.debug("could not keep spare result slots: %s", exc)

    def _idle(self) -> bool:
        """Under the lock: whether the worker has nothing else to do than report: nothing
        queued, and every call it runs has its outcome (the runner is only tidying up). Then
        results go out at once; batching them is for a worker under load."""
        if self._queue:
            return False
        done = {job.task_id for job, _ in self._outcomes}
        return all(task_id in done for task_id in self._running)

    def _take_stale(self) -> list[Job]:
        """Under the lock: the queued jobs claimed ``start_within_seconds`` ago that have not
        started, taken out of the queue to be handed back."""
        cutoff = time.monotonic() - self.settings.start_within_seconds
        stale = [j for j in self._queue if j.claimed <= cutoff]
        if stale:
            keep = [j for j in self._queue if j.claimed > cutoff]
            self._queue.clear()  # in place: runners may hold a reference to it
            self._queue.extend(keep)
        return stale

    # --- heartbeat ---------------------------------------------------------------------------
    def _heartbeat(self, every: float) -> None:
        """Extend the held leases every ``every`` seconds, unless a claim did (claims name the
        held tasks): a worker that claims often sends no heartbeat at all."""
        while not self._stop.wait(max(0.01, self._beaten + every - time.monotonic())):
            if time.monotonic() - self._beaten >= every:
                self._beat()

    def _beat(self) -> None:
        """One heartbeat: the tasks held, the environments being built; drop what the API says."""
        self._beaten = time.monotonic()
        with self._cv:
            held = sorted(self._held)
        try:
            drop = set(self.session.heartbeat(held, self.envs.building()))
        except HmqError as exc:
            log.warning("heartbeat failed: %s", exc)
            return
        if drop:
            self._drop(drop)

    def _beat_soon(self) -> None:
        """A heartbeat now, beside the building thread (a package build started or ended: the
        tag status of the tasks that wait for it says so without waiting a quarter lease)."""
        if not self._stop.is_set() and self.session.worker_id is not None:
            threading.Thread(target=self._beat_quietly, name="hmq-heartbeat-now", daemon=True).start()

    def _beat_quietly(self) -> None:
        try:
            self._beat()
        except Exception as exc:  # the session closed meanwhile (shutdown): the next claim says it
            log.debug("extra heartbeat failed: %s", exc)

    def _drop(self, drop: set[str]) -> None:
        """Forget tasks the queue no longer wants from us; stop the ones already running."""
        with self._cv:
            self._held -= drop
            keep = [j for j in self._queue if j.task_id not in drop]
            self._queue.clear()  # in place: runners may hold a reference to it
            self._queue.extend(keep)
            victims = {id(ex): ex for tid, (_, ex) in self._running.items() if tid in drop}
            self._dropped |= {tid for tid in drop if tid in self._running}
            self._outcomes = [(j, o) for j, o in self._outcomes if j.task_id not in drop]
            self._rejected = [r for r in self._rejected if str(r.id) not in drop]
            self._released = [t for t in self._released if t not in drop]
        for ex in victims.values():
            ex.kill()
        log.info("dropped %d tasks (cancelled, deleted or re-leased); stopped %d executors", len(drop), len(victims))
