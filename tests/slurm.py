"""A real single-node Slurm cluster for the suite: munge, slurmctld and slurmd from the machine's
Debian packages (slurmctld, slurmd, slurm-client, munge), with a private ``SLURM_CONF`` in a
temporary directory and ports of its own, so nothing in /etc/slurm is used or changed.

:meth:`SlurmCluster.stop` cancels every job, waits for the queue to empty, stops the daemons
and then sweeps, by PID, every process whose environment names this cluster's ``SLURM_CONF``
(double-forked job processes escape ``proctrack/linuxproc``); munged is stopped only if this
cluster started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from hmq.stack import free_port, pid_alive

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "munged", "munge", "unmunge")

CONFIG = """\
ClusterName=hmqtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={dir}/log/jobcomp.txt
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
Waittime=0
{node}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class Unavailable(RuntimeError):
    """Slurm cannot run here (its binaries are missing, or a daemon does not start)."""


PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
"""Where the daemons are looked for (Debian puts them in /usr/sbin)."""


def missing() -> list[str]:
    """The Slurm and munge binaries this machine lacks."""
    return [b for b in BINARIES if shutil.which(b, path=PATH) is None]


def _node_line(host: str) -> str:
    """The node as ``slurmd -C`` sees it (else slurmctld logs a reconfiguration)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, env={**os.environ, "PATH": PATH})
    out = out.stdout.splitlines()[0]
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return f"NodeName={host} NodeAddr=127.0.0.1 " + " ".join(f"{k}={fields[k]}" for k in keep) + " State=UNKNOWN"


class SlurmCluster:
    """One slurmctld and one slurmd on this machine; :meth:`env` is what Slurm commands need."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hmq-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._munged: Optional[int] = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": PATH, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        """A Slurm command against this cluster; its standard output."""
        out = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def start(self) -> SlurmCluster:
        if missing():
            raise Unavailable(f"Slurm is not installed (missing {', '.join(missing())})")
        self._start_munge()
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir()
        self.conf.write_text(
            CONFIG.format(host=host, dir=self.dir, ctld_port=free_port(), d_port=free_port(), node=_node_line(host))
        )
        for argv in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
            log = open(self.dir / "log" / f"{argv[0]}.out", "ab")  # noqa: SIM115 - the daemon keeps it
            self._daemons.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env()))
            log.close()
        deadline = time.monotonic() + 60
        while "idle" not in self.run("sinfo", "-h", "-N", "-o", "%T", check=False):
            if time.monotonic() > deadline or any(d.poll() is not None for d in self._daemons):
                raise Unavailable(f"the Slurm node did not become idle; logs in {self.dir / 'log'}")
            time.sleep(0.2)
        return self

    def _start_munge(self) -> None:
        if self._munge_works():
            return  # a munged is running already (shared by every cluster on this machine)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create", "--keyfile=/etc/munge/munge.key"], check=True, env=self.env())
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", "/run/munge"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True, capture_output=True, env=self.env())
        deadline = time.monotonic() + 20
        while not self._munge_works():
            if time.monotonic() > deadline:
                raise Unavailable("munged did not start")
            time.sleep(0.1)
        self._munged = int(Path("/run/munge/munged.pid").read_text())

    def _munge_works(self) -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, env=self.env()).stdout
            return (
                subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=10, env=self.env()).returncode == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    # --- jobs ------------------------------------------------------------------------------------
    def jobs(self, *, states: str = "all") -> dict[str, str]:
        """Job id -> state of every job (array elements one by one), finished ones included."""
        out = self.run("squeue", "-h", "-r", "-t", states, "-o", "%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def live_jobs(self) -> dict[str, str]:
        """Jobs that are queued or running."""
        return {j: s for j, s in self.jobs().items() if s in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")}

    # --- teardown --------------------------------------------------------------------------------
    def stop(self) -> None:
        if self._daemons and all(d.poll() is None for d in self._daemons):
            self.run("scancel", "--user", str(os.getuid()), check=False)
            deadline = time.monotonic() + 30
            while self.live_jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        for daemon in reversed(self._daemons):
            if daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        self._sweep()
        if self._munged is not None and pid_alive(self._munged):
            os.kill(self._munged, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sweep(self) -> None:
        """Kill, by PID, what is left of this cluster's jobs (their environment names our conf)."""
        marker = f"SLURM_CONF={self.conf}".encode()
        for pid in self._members(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in self._members(marker)) and time.monotonic() < deadline:
            time.sleep(0.1)

    @staticmethod
    def _members(marker: bytes) -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def processes(self) -> list[int]:
        """Live processes that belong to this cluster (daemons, jobs and what they started)."""
        return [p for p in self._members(f"SLURM_CONF={self.conf}".encode()) if pid_alive(p)]
