"""The autoscaler's rule (free of I/O, with time passed in) and its loop with the local provider
against `hmq up --workers 0`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import hmq
from hmq import ConfigurationError, wire
from tests.helpers import wait_for
from worker.autoscale.scaler import Fleet, History, Plan, ScalerSettings, decide, target

PY = wire.PYTHON


def _group(pending: int, running: int = 0, ncores: int = 1, python: str = PY, **running_in: int) -> wire.QueueGroup:
    return wire.QueueGroup(
        datacenters=None,
        python=python,
        ncores=ncores,
        pending=pending,
        running=running,
        cores_needed=ncores * (pending + running),
        running_in=running_in,
        workers=0,
    )


def _depth(*groups: wire.QueueGroup) -> wire.QueueDepth:
    return wire.QueueDepth(groups=list(groups), workers=0, live_seconds=120)


def test_the_target_counts_what_these_workers_can_run_here() -> None:
    s = ScalerSettings(datacenter="hpc", cores=4, max_workers=50)
    assert target(_depth(), s) == 0
    assert target(_depth(_group(9)), s) == 3  # 4 one-core calls fit on a worker
    assert target(_depth(_group(3, ncores=3)), s) == 3  # one three-core call per worker
    assert target(_depth(_group(1, running=5, hpc=2, cloud=3)), s) == 1  # running elsewhere does not count
    assert target(_depth(_group(5, ncores=8), _group(5, python="2.7")), s) == 0  # cannot run these
    assert target(_depth(_group(1000)), s) == 50
    assert target(_depth(), ScalerSettings(min_workers=2, max_workers=3)) == 2


def test_scaling_up_respects_step_cooldown_and_maximum() -> None:
    s = ScalerSettings(max_workers=10, scale_up_step=4, cooldown=30)
    h = History()
    assert decide(10, Fleet(), s, h, now=0, leave_by_themselves=True) == Plan(10, start=4)
    assert decide(10, Fleet(queued=4), s, h, now=29, leave_by_themselves=True) == Plan(10)  # cooling down
    assert decide(10, Fleet(queued=4), s, h, now=30, leave_by_themselves=True) == Plan(10, start=4)
    assert decide(10, Fleet(queued=2, running=6), s, h, now=60, leave_by_themselves=True) == Plan(10, start=2)
    assert decide(10, Fleet(running=10), s, h, now=90, leave_by_themselves=True) == Plan(10)


def test_scaling_down_cancels_queued_workers_only_where_workers_leave_by_themselves() -> None:
    s = ScalerSettings(max_workers=10, idle_timeout=60)
    h = History()
    assert decide(1, Fleet(queued=3, running=4), s, h, now=0, leave_by_themselves=True) == Plan(1, cancel=3)
    assert decide(0, Fleet(running=4), s, h, now=1000, leave_by_themselves=True) == Plan(0)  # they leave when idle


def test_a_deployment_is_scaled_down_after_the_idle_timeout() -> None:
    s = ScalerSettings(max_workers=10, idle_timeout=60)
    h = History()
    assert decide(2, Fleet(running=5), s, h, now=0, leave_by_themselves=False) == Plan(2)
    assert decide(2, Fleet(running=5), s, h, now=59, leave_by_themselves=False) == Plan(2)
    assert decide(2, Fleet(running=5), s, h, now=60, leave_by_themselves=False) == Plan(2, retire=3)
    assert decide(3, Fleet(running=2), s, h, now=61, leave_by_themselves=False) == Plan(3, start=1)
    assert decide(1, Fleet(running=3), s, h, now=100, leave_by_themselves=False) == Plan(1)  # the clock restarts
    assert decide(3, Fleet(running=3), s, h, now=130, leave_by_themselves=False) == Plan(3)
    assert decide(1, Fleet(running=3), s, h, now=140, leave_by_themselves=False) == Plan(1)


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(ConfigurationError):
        ScalerSettings(min_workers=3, max_workers=2)
    with pytest.raises(ConfigurationError):
        ScalerSettings(datacenter="no spaces")


def _hmq(home: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}, "HMQ_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "hmq", *args], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, f"hmq {args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_local_autoscaler_starts_workers_for_a_tag_and_they_leave(tmp_path: Path) -> None:
    from hmq.config import ClientConfig
    from hmq.stack import free_port

    home = tmp_path / "home"
    _hmq(home, "up", "--workers", "0")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}, "HMQ_HOME": str(home)}
    port = free_port()
    argv = [sys.executable, "-m", "hmq", "autoscale", "local", "--max-workers", "2", "--idle-timeout", "3"]
    argv += ["--interval", "0.5", "--metrics-port", str(port), "--log-level", "DEBUG"]
    log = open(tmp_path / "autoscale.log", "ab")  # noqa: SIM115 - closed below
    scaler = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    config = ClientConfig.load(home)
    client = hmq.API(config.url, config.identity, config.admin)
    try:
        task = hmq.task(lambda x: x + 1)
        for i in range(8):
            task(i)
        tag = task.submit(quiet=True, api=client)
        wait_for(lambda: tag.pull() == 0, timeout=120, interval=0.2, what="the tag to finish")
        assert list(tag.results) == [i + 1 for i in range(8)]
        started = sorted((home / "logs").glob("autoscale-worker-*.log"))
        assert 1 <= len(started) <= 2
        wait_for(lambda: all("leaving: it was idle for 3 s" in p.read_text() for p in started), what="idle workers")
        metrics = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10))
        assert metrics == {"target": 0, "datacenter": "default", "min_workers": 0, "max_workers": 2}
    finally:
        client.close()
        scaler.send_signal(signal.SIGTERM)
        code = scaler.wait(timeout=60)
        log.close()
        _hmq(home, "down")
    assert code == 0, (tmp_path / "autoscale.log").read_text()[-3000:]
    assert sorted((home / "logs").glob("autoscale-worker-*.log")) == started  # nothing more was started


def test_every_option_of_hmq_autoscale_is_documented() -> None:
    import click
    from click.testing import CliRunner

    from hmq.cli import main

    command = main.commands["autoscale"]
    options = [p for p in command.params if isinstance(p, click.Option)]
    assert len(options) >= 20 and all(o.help for o in options), [o.name for o in options if not o.help]
    text = CliRunner().invoke(main, ["autoscale", "--help"], terminal_width=200).output
    issue = ["--min-workers", "--max-workers", "--cores", "--idle-timeout", "--credentials", "--datacenter"]
    issue += ["--interval", "--scale-up-step", "--cooldown", "--template", "--partition", "--account", "--time"]
    assert all(f"  {flag} " in text for flag in issue + [o.opts[0] for o in options])
    wrong = CliRunner().invoke(main, ["autoscale", "local", "--partition", "x"])
    assert wrong.exit_code == 2 and "--partition: not an option of the local provider" in wrong.output
