"""``--only fleet``: many simulated workers against ONE API process (uvicorn) on PostgreSQL and
S3 (moto's server).

A simulated worker is a :class:`worker.session.WorkerSession` (the real protocol client, signed
requests and all) driven by a thread; a few processes hold the threads. Two figures:

- idle fleets (100, 500, 1,000 workers) waiting for work as a real idle worker does
  (:func:`idle_worker`: waiting claims of the worker's default ``claim_wait_seconds``), while
  one task is submitted every second (:func:`trickle`): requests per second, the API process's
  CPU (% of one core, from ``/proc/<pid>/stat``), and two latencies, p50 and p99:

  - *claim beyond its wait*: how much longer than the wait the API granted an empty claim took
    to answer (what a worker waits for the API, not for work), for the claims sent once the
    fleet runs (:data:`RAMP` seconds after its start, as the CPU figure: every worker starts
    within half a second, and the first claims of a thousand queue for seconds);
  - *submit to claimed*: from the start of a one-task submit to a waiting claim answering with
    that task (what a submitter waits for an idle fleet to pick work up; it includes the
    submit's own request);
- an empty claim: API CPU per signed claim that finds nothing (:func:`claim_cost`);
- busy fleets (100 and 10 workers) draining 20,000 no-op tasks (:func:`busy_worker`), three
  times each in alternating order (:func:`busy_rounds`: the median drain, and the ratio of each
  round): they claim as a real worker claims for no-op calls (a worker that holds nothing sends
  a waiting claim), skip running them (a no-op result for each) and upload and report results as a real worker
  does; tasks per second, and the API's CPU, over the drain (first claim to last report).

``python -m bench.fleet idle|busy COUNT URL CREDENTIALS GO SECONDS`` is one process of a
fleet (it prints ``ready`` once registered, starts at the time the file ``GO`` then says, and
prints one JSON line); :func:`run` starts the stack and the fleets and prints the table.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stacks import postgres_s3, scenario
from hmq import crypto, defaults, formats, stack, wire
from hmq._errors import HmqError
from hmq.credentials import WorkerCredentials

PROCESSES = 4
"""Processes a fleet's threads are spread over."""

RAMP = 3.0
"""Seconds after a fleet's start that its figures leave out (its first claims, sent together)."""


@dataclass
class Stats:
    """What the workers of one process saw."""

    claims: list[float] = field(default_factory=list)  # seconds per claim (idle: beyond its wait, past the ramp)
    picked: list[float] = field(default_factory=list)  # time.time() of each idle claim that got a task
    requests: int = 0
    errors: int = 0
    tasks: int = 0
    first: float = 0.0  # time.time() of the first claim that got tasks
    last: float = 0.0  # time.time() of the last report
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claimed(self, seconds: float, got: int) -> None:
        with self.lock:
            self.claims.append(seconds)
            self.requests += 1
            if got and not self.first:
                self.first = time.time()


def _session(url: str, creds: WorkerCredentials) -> tuple[Any, float]:
    """A registered worker of one core: its session and heartbeat interval."""
    from worker.session import WorkerSession

    session = WorkerSession.connect(url, creds.identity, retry_deadline=0)
    info = session.register("fleet", 1, memory=2**30, isolation="none")
    return session, info.heartbeat_seconds


def _claim(session: Any, stats: Stats, want: int, wait: float = 0.0) -> wire.ClaimOut:
    t0 = time.perf_counter()
    out = session.claim(want, 1, allocated=1, wait=wait, held=[], spare=defaults.RESULT_SLOT_SPARE)
    got = sum(len(g.tasks) for g in out.groups)
    stats.claimed(max(0.0, time.perf_counter() - t0 - (0.0 if got else out.wait)), got)
    return out


def idle_worker(session: Any, stats: Stats, until: float, creds: WorkerCredentials, ramp: float = 0.0) -> None:
    """Wait for work as a real idle worker of one core does (``worker.runner.CachedWorker._claim``):
    claim what a fresh one-core worker asks for (``Pace.size``: one task, ``others`` one),
    holding nothing (``held=[]``: the claim is its heartbeat, none is sent apart), waiting on
    the API as long as its settings say (``WorkerSettings.idle_claim_wait``, never past
    ``until``, as ``Life.patience``); claim again at once when it answers. A task that comes is
    reported done (a no-op result, as :func:`busy_worker`), then the worker is idle again.
    Claims sent before ``ramp`` (``time.monotonic``) are not timed. Change this function when
    the claim protocol changes."""
    from worker.settings import WorkerSettings

    settings = WorkerSettings(url=session.url)
    users: dict[str, crypto.PublicIdentity] = {}
    while (left := until - time.monotonic()) > 0:
        try:
            timed = time.monotonic() >= ramp
            t0 = time.perf_counter()
            wait = min(settings.idle_claim_wait(), left)
            out = session.claim(1, 1, allocated=1, others=1, wait=wait, held=[], spare=defaults.RESULT_SLOT_SPARE)
            seconds = time.perf_counter() - t0
            with stats.lock:
                stats.requests += 1
                if out.groups:
                    stats.picked.append(time.time())
                elif timed:
                    stats.claims.append(max(0.0, seconds - out.wait))
            for group in out.groups:
                user = users.get(group.certificate["sig"]) or crypto.verify_certificate(group.certificate, creds.admin)
                users[group.certificate["sig"]] = user
                _report(session, stats, creds, user, group)
        except HmqError:
            with stats.lock:
                stats.errors += 1
            time.sleep(WorkerSettings.poll_max_seconds)


def busy_worker(session: Any, stats: Stats, until: float, creds: WorkerCredentials) -> None:
    """Drain the queue as a worker of one core with no-op calls does (``CachedWorker._claim``):
    claim what it can start soon (``CachedWorker._want`` for calls of ~1 ms: 128), make a no-op
    result for each task (skipping the download and the run), upload one signed, encrypted
    result object per claim and report it. Having reported, it holds nothing, so its next claim
    waits on the API for work (``WorkerSettings.idle_claim_wait``, never past ``until``), which
    answers at once while tasks are pending; it stops once such a claim comes back empty (the
    queue is dry). An empty claim is timed beyond its wait, as :func:`idle_worker`'s."""
    from worker.settings import WorkerSettings

    settings = WorkerSettings(url=session.url)
    users: dict[str, crypto.PublicIdentity] = {}
    while (left := until - time.monotonic()) > 0:
        try:
            out = _claim(session, stats, 128, wait=min(settings.idle_claim_wait(), left))
        except HmqError:
            with stats.lock:
                stats.errors += 1
            time.sleep(WorkerSettings.poll_max_seconds)
            continue
        if not out.groups:
            return
        for group in out.groups:
            user = users.get(group.certificate["sig"]) or crypto.verify_certificate(group.certificate, creds.admin)
            users[group.certificate["sig"]] = user
            _report(session, stats, creds, user, group)


def _report(
    session: Any, stats: Stats, creds: WorkerCredentials, user: crypto.PublicIdentity, group: wire.ClaimGroup
) -> None:
    null = formats.compress(b"null")
    records = [formats.ResultRecord(str(t.id), formats.KIND_RESULT, null, None) for t in group.tasks]
    blob = formats.encode_results(creds.identity, creds.certificate, user, group.tag, records)
    asked = session.kept_result_slots == 0  # else the session's spare URLs: no request
    slot = session.result_slots(1)[0]
    session.transport.put_object(slot.url, blob)
    done = [t.id for t in group.tasks]
    session.complete(wire.CompleteIn(results=[wire.StoredResults(key=slot.key, tag=group.tag, completed=done)]))
    with stats.lock:
        stats.requests += 1 + asked
        stats.tasks += len(done)
        stats.last = time.time()


def fleet_process(kind: str, count: int, url: str, credentials: Path, go: Path, seconds: float) -> dict[str, Any]:
    """One process of a fleet: ``count`` workers registered (then it prints ``ready``), then
    from the start (the ``time.time()`` written to ``go`` once every process is ready) each runs
    :func:`idle_worker` or :func:`busy_worker` for up to ``seconds``."""
    creds = WorkerCredentials.load(credentials)
    sessions = [_session(url, creds) for _ in range(count)]
    stats = Stats()
    print("ready", flush=True)
    while not go.exists() or not go.read_text().strip():
        time.sleep(0.05)
    time.sleep(max(0.0, float(go.read_text()) - time.time()))
    until = time.monotonic() + seconds
    ramp = time.monotonic() + RAMP
    targets: dict[str, Callable[[Any, float], None]] = {
        "idle": lambda s, beat: idle_worker(s, stats, until, creds, ramp),
        "busy": lambda s, beat: busy_worker(s, stats, until, creds),
    }

    def one(session: Any, heartbeat: float) -> None:
        time.sleep(random.uniform(0, 0.5))  # real workers do not start in step
        try:
            targets[kind](session, heartbeat)
        except HmqError as exc:  # a simulated worker that gave up is an error of the run, said once
            with stats.lock:
                stats.errors += 1
                first = stats.errors == 1
            if first:
                print(f"a simulated {kind} worker stopped: {exc}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=one, args=s, daemon=True) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for session, _ in sessions:
        session.close()
    return {"claims": stats.claims, "requests": stats.requests, "errors": stats.errors, "tasks": stats.tasks,
            "first": stats.first, "last": stats.last, "picked": stats.picked}  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fleet(
    kind: str, workers: int, home: Path, seconds: float, during: Callable[[float], Any] = lambda until: None
) -> tuple[list[dict[str, Any]], list[tuple[float, float]], Any]:
    """Run a fleet of ``workers`` in :data:`PROCESSES` processes; their figures, the API's CPU
    seconds sampled every 0.1 s as ``(time.time(), seconds)`` from the fleet's start until the
    last process ended, and what ``during`` (called :data:`RAMP` seconds after the start with
    the ``time.time()`` at which the fleet's time ends) returned."""
    state = stack.StackState.load(home)
    assert state is not None
    per = [workers // PROCESSES + (i < workers % PROCESSES) for i in range(PROCESSES)]
    go = Path(tempfile.mkdtemp(dir=home)) / f"go-{kind}-{workers}"  # new each time: an old one would start it at once
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.fleet", kind, str(n), state.url, str(home / "worker.json"), str(go), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in per
        if n
    ]  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "a fleet process failed"
    start = time.time() + 1  # every worker is registered: all start together
    go.with_suffix(".tmp").write_text(str(start))
    go.with_suffix(".tmp").rename(go)  # whole, never half written
    samples: list[tuple[float, float]] = []
    ended = threading.Event()

    def sample() -> None:
        while not ended.wait(0.1):
            samples.append((time.time(), _cpu_seconds(state.api.pid)))

    time.sleep(max(0.0, start - time.time()))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(RAMP)  # past the first ramp of claims
    extra = during(start + seconds - 1)
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    ended.set()
    sampler.join()
    samples.append((time.time(), _cpu_seconds(state.api.pid)))
    return outs, samples, extra


def _cpu_share(samples: list[tuple[float, float]], begin: float, end: float) -> float:
    """The API's CPU (% of one core) between two ``time.time()``s, from the samples closest
    inside them."""
    inside = [s for s in samples if begin <= s[0] <= end] or samples[-2:]
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1 - t0) * 100 if t1 > t0 else float("nan")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def _p50_p99_ms(values: list[float]) -> str:
    """The p50 and p99 of ``values`` (seconds) in milliseconds, or "-" when nothing was measured
    (a quick run whose only pickup was the first, which is left out)."""
    if not values:
        return "-"
    return f"{_quantile(values, 0.5) * 1e3:.1f} / {_quantile(values, 0.99) * 1e3:.1f}"


def trickle(home: Path, until: float) -> list[float]:
    """Submit one no-op task a second until ``until`` (``time.time()``), as one user; the
    ``time.time()`` at which each submit started."""
    import hmq

    @hmq.task
    def noop(x: int) -> int:
        return x

    api = hmq.API(home=home)
    starts: list[float] = []
    while time.time() < until:
        starts.append(time.time())
        noop(len(starts))
        noop.submit(quiet=True, api=api)
        time.sleep(max(0.0, starts[-1] + 1.0 - time.time()))
    api.close()
    return starts


def _pickups(starts: list[float], picked: list[float]) -> list[float]:
    """Seconds from each submit to the claim that took its task: one task a second, each taken
    in well under a second, so the n-th claim that got a task took the n-th task. The first is
    left out: that submit registers the function too."""
    return [p - s for s, p in zip(sorted(starts)[1:], sorted(picked)[1:], strict=False)]


def idle_row(workers: int, home: Path, seconds: float) -> list[str]:
    outs, samples, starts = _fleet("idle", workers, home, seconds, lambda until: trickle(home, until))
    claims = [c for o in outs for c in o["claims"]]
    picked = [p for o in outs for p in o["picked"]]
    pickups = _pickups(starts, picked)
    requests, errors = sum(o["requests"] for o in outs), sum(o["errors"] for o in outs)
    return [
        f"{workers:,} idle workers waiting",
        f"{requests / seconds:,.0f}",
        f"{_cpu_share(samples, samples[0][0] + RAMP, samples[-1][0]):.0f}%",
        _p50_p99_ms(claims),
        f"{_p50_p99_ms(pickups)} ({len(picked)}/{len(starts)})",
        f"{errors}",
        "-",
    ]


def busy_drain(workers: int, tasks: int, home: Path) -> dict[str, Any]:
    """A busy fleet draining ``tasks``; its figures are over the drain, from the first claim that
    got tasks to the last report."""
    env = {**os.environ, "HMQ_HOME": str(home)}
    scenario("submit_only", tasks, env)
    outs, samples, _ = _fleet("busy", workers, home, 600)
    first = min(o["first"] for o in outs if o["first"])
    last = max(o["last"] for o in outs)
    done = sum(o["tasks"] for o in outs)
    return {
        "workers": workers,
        "requests": sum(o["requests"] for o in outs) / (last - first),
        "cpu": _cpu_share(samples, first, last),
        "claims": [c for o in outs for c in o["claims"]],
        "errors": sum(o["errors"] for o in outs),
        "done": done,
        "rate": done / (last - first),
    }


def busy_row(drain: dict[str, Any], tasks: int) -> list[str]:
    claims = drain["claims"]
    return [
        f"{drain['workers']:,} busy workers, {tasks:,} no-op tasks",
        f"{drain['requests']:,.0f}",
        f"{drain['cpu']:.0f}%",
        _p50_p99_ms(claims),
        "-",
        f"{drain['errors']}",
        f"{drain['rate']:,.0f} ({drain['done']:,} done)",
    ]


def busy_rounds(sizes: tuple[int, int], tasks: int, home: Path, rounds: int) -> tuple[list[list[str]], str]:
    """The busy fleets of ``sizes`` (large, small) drained in ``rounds`` rounds, the order of the
    two alternating from round to round (what the machine does meanwhile moves one drain by
    20-30%); the table rows of each size's median drain (by tasks/s) and a line of the
    large/small ratio of each round and their median."""
    large, small = sizes
    drains: dict[int, list[dict[str, Any]]] = {large: [], small: []}
    for r in range(rounds):
        for n in (small, large) if r % 2 == 0 else (large, small):
            drains[n].append(busy_drain(n, tasks, home))
    ratios = [big["rate"] / little["rate"] for big, little in zip(drains[large], drains[small], strict=True)]
    rows = [busy_row(sorted(drains[n], key=lambda d: d["rate"])[len(drains[n]) // 2], tasks) for n in sizes]
    each = ", ".join(f"{r:.2f}" for r in ratios)
    line = f"{large} busy / {small} busy workers, tasks/s: {each} (rounds); median {statistics.median(ratios):.2f}"
    return rows, line


def claim_cost(home: Path, claims: int) -> float:
    """API CPU (ms) per signed claim that finds nothing: one worker holding nothing claims
    ``claims`` times back to back without waiting, after the idle fleets (their tasks made
    its placement, as in an idle fleet: nothing is pending)."""
    state = stack.StackState.load(home)
    assert state is not None
    creds = WorkerCredentials.load(home / "worker.json")
    session, _ = _session(state.url, creds)
    try:
        for _ in range(20):  # warm: connections, caches
            session.claim(1, 1, allocated=1, others=1, wait=0, held=[])
        cpu0 = _cpu_seconds(state.api.pid)
        for _ in range(claims):
            session.claim(1, 1, allocated=1, others=1, wait=0, held=[])
        return (_cpu_seconds(state.api.pid) - cpu0) / claims * 1e3
    finally:
        session.close()


def run(quick: bool) -> None:
    """Start PostgreSQL, S3 and one API process, run the fleets, print the table."""
    idle, busy, tasks, seconds, rounds = (
        ((20, 50), (10, 2), 1_000, 5.0, 1) if quick else ((100, 500, 1_000), (100, 10), 20_000, 20.0, 3)
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the API holds a socket per worker
    rows = []
    with postgres_s3() as (database, storage), tempfile.TemporaryDirectory(prefix="hmq-fleet-") as tmp:
        home = Path(tmp)
        stack.up(home, workers=0, database=database, storage=storage)
        try:
            from worker.settings import WorkerSettings

            window = seconds if quick else max(seconds, 3 * WorkerSettings.claim_wait_seconds)
            rows += [idle_row(n, home, window) for n in idle]
            empty = claim_cost(home, 100 if quick else 1_000)
            busy_rows, ratios = busy_rounds(busy, tasks, home, rounds)
            rows += busy_rows
        finally:
            stack.down(home)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    head = [
        "fleet (one API process, PostgreSQL + S3)",
        "requests/s",
        "API CPU",
        "claim p50 / p99 (ms; idle: beyond its wait)",
        "submit to claimed p50 / p99 (ms; tasks)",
        "errors",
        "tasks/s",
    ]
    print(f"fleet       an empty claim (one worker, back to back): {empty:.2f} ms of API CPU")
    print("fleet       simulated workers (WorkerSession in threads) against one API process:")
    for line in [head, ["---"] * len(head), *rows]:
        print("  | " + " | ".join(line) + " |")
    print(f"fleet       busy rows: the median of {rounds} drains each; {ratios}")


if __name__ == "__main__":
    kind, count, url, creds_path, go_path, window = sys.argv[1:7]
    print(json.dumps(fleet_process(kind, int(count), url, Path(creds_path), Path(go_path), float(window))))
