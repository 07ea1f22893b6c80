"""`hmq autoscale slurm` against a real Slurm cluster: jobs appear as work arrives, every call
completes exactly once (a worker job killed with scancel mid-run included), and once the queue is
empty the workers leave and nothing more is submitted."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import hmq
from tests.helpers import HttpLedger, reporting_sleeper, wait_for
from tests.slurm import SlurmCluster
from worker.autoscale.scaler import Fleet
from worker.autoscale.slurm import time_limit_seconds

HMQ = [sys.executable, "-m", "hmq"]
JOB_NAME = "hmq-worker-default"


@pytest.fixture
def ledger() -> Iterator[HttpLedger]:
    book = HttpLedger()
    yield book
    book.close()


class Site:
    """`hmq up --workers 0` in a temporary HMQ_HOME, with this cluster's SLURM_CONF around."""

    def __init__(self, home: Path, cluster: SlurmCluster) -> None:
        self.home = home
        self.cluster = cluster
        env = {k: v for k, v in cluster.env().items() if not k.startswith("HMQ_")}
        self.env = {**env, "HMQ_HOME": str(home), "HMQ_LEASE_SECONDS": "20"}

    def hmq(self, *args: str) -> str:
        out = subprocess.run([*HMQ, *args], capture_output=True, text=True, env=self.env, timeout=180, cwd=self.home)
        assert out.returncode == 0, f"hmq {args} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def autoscale(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.home / "autoscale.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [*HMQ, "autoscale", "slurm", *args], stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.home
        )
        log.close()
        return proc

    def client(self) -> hmq.API:
        from hmq.config import ClientConfig

        config = ClientConfig.load(self.home)
        return hmq.API(config.url, config.identity, config.admin)

    def log(self) -> str:
        out = (self.home / "autoscale.log").read_text(errors="replace")
        jobs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.home.glob("*.out"))
        return out[-5000:] + jobs


@pytest.fixture
def site(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Site]:
    home = tmp_path / "home"
    home.mkdir()
    s = Site(home, slurm)
    s.hmq("up", "--workers", "0")
    try:
        yield s
    finally:
        s.hmq("down")
        slurm.run("scancel", "--name", JOB_NAME, check=False)
        wait_for(lambda: not slurm.live_jobs(), timeout=60, what="the worker jobs to end")


def test_time_limits_in_every_slurm_format() -> None:
    cases = {"90": 5400, "3:30": 210, "4:00:00": 14400, "2-12": 216000, "1-0:30": 88200, "1-00:00:10": 86410}
    assert {text: time_limit_seconds(text) for text in cases} == cases


def test_slurm_autoscaler_runs_a_tag_and_leaves_nothing_behind(
    site: Site, slurm: SlurmCluster, ledger: HttpLedger
) -> None:
    scaler = site.autoscale(
        "--max-workers", "2", "--cores", "1", "--idle-timeout", "10", "--interval", "1", "--log-level", "DEBUG"
    )
    try:
        _run_a_tag_through_slurm(site, slurm, ledger)
        assert scaler.poll() is None  # it keeps going with nothing to do
    except BaseException:
        print(site.log())
        raise
    finally:
        scaler.send_signal(signal.SIGTERM)
        assert scaler.wait(timeout=60) == 0


def _run_a_tag_through_slurm(site: Site, slurm: SlurmCluster, ledger: HttpLedger) -> None:
    client = site.client()
    try:
        _watch(site, slurm, ledger, _submit(client, [(ledger.url, i, 1.5) for i in range(20)]))
    finally:
        client.close()


def _watch(site: Site, slurm: SlurmCluster, ledger: HttpLedger, tag: hmq.Tag) -> None:
    most = 0

    def busy_on_two() -> set[str]:
        nonlocal most
        live = slurm.live_jobs()
        most = max(most, len(live))
        running = {job for job, state in live.items() if state == "RUNNING"}
        return ledger.running_at() & running if len(running) == 2 else set()

    victim = sorted(wait_for(busy_on_two, timeout=120, interval=0.2, what="two worker jobs running calls"))[0]
    slurm.run("scancel", victim)  # TERM to every process of the job, its running call's too
    wait_for(lambda: tag.pull() == 0, timeout=240, interval=0.5, what="the tag to finish")
    assert list(tag.results) == list(range(20))
    assert all(ledger.count("done", i) == 1 for i in range(20)), sorted(ledger.keys("done"))  # exactly once
    assert ledger.count("start") > 20  # the call the cancelled job was running started again elsewhere
    assert slurm.jobs().get(victim) in ("CANCELLED", "COMPLETED")
    submitted = set(slurm.jobs())
    assert len(submitted) >= 2 and most <= 2  # jobs appeared, never more than --max-workers at once
    wait_for(lambda: not slurm.live_jobs(), timeout=90, interval=0.5, what="the idle workers to leave")
    rounds_before = _rounds(site)
    wait_for(lambda: _rounds(site) >= rounds_before + 3, timeout=60, what="three more autoscaler rounds")
    assert set(slurm.jobs()) == submitted and not slurm.live_jobs()  # and nothing more was submitted


def _submit(client: hmq.API, calls: list[tuple]) -> hmq.Tag:
    task = hmq.task(reporting_sleeper)
    for args in calls:
        task(*args)
    return task.submit(quiet=True, api=client)


def _rounds(site: Site) -> int:
    return (site.home / "autoscale.log").read_text().count(" round: ")


def test_slurm_jobs_are_submitted_as_the_template_says(slurm: SlurmCluster, tmp_path: Path) -> None:
    from worker.autoscale.slurm import SlurmOptions, SlurmProvider

    env = {**slurm.env(), "HMQ_WORKER_PYTHON": "/bin/echo"}  # the job prints what the worker would be given
    options = SlurmOptions(job_name="hmq-template-test", time="10:00", sbatch_args=("--chdir", str(tmp_path)))
    provider = SlurmProvider(options, 1, ["--datacenter", "hpc", "--max-runtime", "570"], env)
    held = SlurmProvider(SlurmOptions(job_name="hmq-held-test", sbatch_args=("--hold",)), 1, [], env)
    try:
        held.start(3)  # one job array of three, held: they stay queued
        assert held.fleet() == Fleet(queued=3) and len({job.split("_")[0] for job, _ in held.jobs()}) == 1
        assert held.cancel_queued(2) == 2 and held.fleet() == Fleet(queued=1)
        provider.start(1)
        wait_for(lambda: list(tmp_path.glob("hmq-template-test-*.out")) and not provider.jobs(), what="the job to run")
        (out,) = tmp_path.glob("hmq-template-test-*.out")
        words = out.read_text().split()
        assert words[:5] == ["-m", "worker", "--cores", "1", "--cache-dir"]
        assert words[6:] == ["--datacenter", "hpc", "--max-runtime", "570"]
    finally:
        slurm.run("scancel", "--name", "hmq-held-test", check=False)
