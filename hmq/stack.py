"""The embedded stack: ``hmq up`` runs an API (uvicorn, SQLite, local object directory) and
local workers in the background, with keys made and access granted, so that the user guide's
examples run unchanged; ``hmq down`` stops everything it started.

Layout under ``HMQ_HOME``::

    client.json        the user's key and the API URL (what ``import hmq`` uses)
    admin.key          the admin key (0600)
    worker.json        the local workers' credentials (0600)
    stack.json         what is running: URL, pids, logs
    server/            settings.json (0600), index.db, objects/, port (the API's last port)
    logs/              api.log, worker-N.log
    worker-cache/      package environments and scratch directories
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from hmq import crypto, defaults, provision
from hmq._errors import ConfigurationError, HmqError, StackError
from hmq._transport import Transport
from hmq.admin import Admin
from hmq.config import ClientConfig, write_private


@dataclass
class Proc:
    pid: int
    log: str
    name: str = ""

    def alive(self) -> bool:
        return pid_alive(self.pid)


@dataclass
class StackState:
    url: str
    home: str
    api: Proc
    workers: list[Proc] = field(default_factory=list)
    database: str = ""
    storage: str = ""
    started: float = 0.0

    @classmethod
    def load(cls, home: Path) -> Optional[StackState]:
        try:
            data = json.loads((home / "stack.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cls(
            url=data["url"],
            home=data["home"],
            api=Proc(**data["api"]),
            workers=[Proc(**w) for w in data["workers"]],
            database=data.get("database", ""),
            storage=data.get("storage", ""),
            started=data.get("started", 0.0),
        )

    def save(self, home: Path) -> None:
        (home / "stack.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    def status(self) -> dict[str, Any]:
        return {
            "running": self.api.alive(),
            "url": self.url,
            "home": self.home,
            "database": self.database,
            "storage": self.storage,
            "api": {**asdict(self.api), "alive": self.api.alive()},
            "workers": [{**asdict(w), "alive": w.alive()} for w in self.workers],
        }


def runs_local_queue(home: Path) -> bool:
    """Whether ``home`` is set up for the local queue of `hmq up` (not for a shared deployment)."""
    return (home / "server" / "settings.json").exists()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _api_port(home: Path, asked: Optional[int]) -> int:
    """The port asked for; else the one this stack's API had last time, so that a client that
    keeps the URL (a running notebook) finds the API again after ``hmq down; hmq up``; else,
    when that one is taken, a free one (clients re-read ``client.json`` when refused)."""
    path = home / "server" / "port"
    port = asked
    if port is None:
        try:
            previous = int(path.read_text())
        except (FileNotFoundError, ValueError):
            previous = 0
        port = previous if 0 < previous < 65536 and _port_free(previous) else free_port()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{port}\n")
    return port


def _server_settings(
    home: Path, admin: crypto.AdminKey, database: Optional[str], storage: Optional[str]
) -> dict[str, str]:
    """The API's ``HMQ_*`` environment, kept in ``server/settings.json`` across restarts."""
    server = home / "server"
    path = server / "settings.json"
    try:
        env = json.loads(path.read_text())
    except FileNotFoundError:
        env = {"HMQ_STORAGE_SECRET": secrets.token_hex(32)}
    env["HMQ_ADMIN_PUBLIC_KEY"] = admin.identity.public.to_text()
    env["HMQ_DATABASE_URL"] = database or env.get("HMQ_DATABASE_URL") or f"sqlite:///{server / 'index.db'}"
    env["HMQ_STORAGE_URL"] = storage or env.get("HMQ_STORAGE_URL") or (server / "objects").as_uri()
    write_private(path, json.dumps(env, indent=2) + "\n")
    return env


# Processes this interpreter started: kept so they are reaped by `down` (not left as zombies
# when `up` and `down` run in one long-lived process, such as a notebook).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the background in a session of its own, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A session of its own: `hmq down` can signal the process and everything it started.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    transport = Transport(url, None, retry_deadline=0, timeout=defaults.STACK_PROBE_TIMEOUT_SECONDS)
    deadline = time.monotonic() + defaults.STACK_START_TIMEOUT_SECONDS
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"the API exited during start-up (code {proc.returncode}); {log}:\n{_tail(log)}")
            try:
                if transport.call("GET", "/v1/health", signed=False, retry=False) == {"status": "ok"}:
                    return
            except HmqError:
                pass
            time.sleep(0.1)
    finally:
        transport.close()
    raise StackError(
        f"the API did not become healthy within {defaults.STACK_START_TIMEOUT_SECONDS:.0f} s; {log}:\n{_tail(log)}"
    )


def child_env() -> dict[str, str]:
    """This process's environment for a child of the stack (output unbuffered)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def up(
    home: Path,
    *,
    workers: int = 1,
    cores: Optional[int] = None,
    port: Optional[int] = None,
    database: Optional[str] = None,
    storage: Optional[str] = None,
    username: Optional[str] = None,
    isolation: Optional[str] = None,
) -> StackState:
    """Start the embedded stack (or return the running one). ``isolation`` is the workers'
    ``--isolation`` (default: theirs, ``auto``, or ``$HMQ_ISOLATION``)."""
    home.mkdir(parents=True, exist_ok=True)
    current = StackState.load(home)
    if current is not None:
        if current.api.alive():
            return current
        down(home)  # stale state from a crashed stack
    if ClientConfig.exists(home) and not runs_local_queue(home):
        raise ConfigurationError(
            f"{home} is set up for the deployment at {ClientConfig.load(home).url}; `hmq up` would replace that "
            f"configuration. Use another HMQ_HOME for a local queue (e.g. HMQ_HOME=~/.hmq-local hmq up)"
        )
    admin = provision.ensure_admin_key(home / "admin.key")
    try:
        state = _start_api(home, admin, _api_port(home, port), database, storage)
        with Admin(state.url, admin) as adm:
            provision.ensure_user(adm, home, username or _default_username(), state.url)
            provision.ensure_worker(adm, home / "worker.json", "local-worker", state.url)
        started = time.time()
        per_worker = cores or max(1, (os.cpu_count() or 1) // max(workers, 1))
        for i in range(workers):
            state.workers.append(_start_worker(home, state.url, i, per_worker, isolation))
        state.save(home)
        _wait_workers(state.url, admin, state, started)
    except BaseException:
        down(home)
        raise
    return state


def _start_api(
    home: Path, admin: crypto.AdminKey, port: int, database: Optional[str], storage: Optional[str]
) -> StackState:
    """Start the API on ``port`` and wait until it is healthy. Its state is saved before the
    wait, so that ``down`` stops it if the start fails."""
    env = {**child_env(), **_server_settings(home, admin, database, storage)}
    url = f"http://127.0.0.1:{port}"
    env["HMQ_PUBLIC_URL"] = url
    api_log = home / "logs" / "api.log"
    api = spawn(
        [sys.executable, "-m", "lambdas.serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        api_log,
        env,
    )
    state = StackState(
        url=url,
        home=str(home),
        api=Proc(api.pid, str(api_log), "api"),
        database=env["HMQ_DATABASE_URL"],
        storage=env["HMQ_STORAGE_URL"],
        started=time.time(),
    )
    state.save(home)
    _wait_healthy(url, api, api_log)
    return state


def _start_worker(home: Path, url: str, index: int, cores: int, isolation: Optional[str] = None) -> Proc:
    """Start local worker ``index`` (``python -m worker``) with the local worker credentials."""
    log = home / "logs" / f"worker-{index}.log"
    argv = [sys.executable, "-m", "worker", "--api", url, "--credentials", str(home / "worker.json")]
    argv += ["--datacenter", "local", "--cores", str(cores), "--cache-dir", str(home / "worker-cache")]
    argv += ["--grace", "0"]  # `hmq down` hands running calls back at once
    argv += ["--isolation", isolation] if isolation else []
    proc = spawn(argv, log, child_env())
    return Proc(proc.pid, str(log), f"worker-{index}")


def _default_username() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "user"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "user"


def _wait_workers(url: str, admin: crypto.AdminKey, state: StackState, since: float) -> None:
    deadline = time.monotonic() + defaults.STACK_START_TIMEOUT_SECONDS
    with Admin(url, admin) as adm:
        while time.monotonic() < deadline:
            for w in state.workers:
                if not w.alive():
                    raise StackError(f"{w.name} exited during start-up; {w.log}:\n{_tail(Path(w.log))}")
            if len([w for w in adm.workers() if w.registered >= since]) >= len(state.workers):
                return
            time.sleep(0.1)
    raise StackError(
        f"workers did not register within {defaults.STACK_START_TIMEOUT_SECONDS:.0f} s; see {Path(state.home) / 'logs'}"
    )


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and pid_alive(int(entry.name)):
                    return True
            except (ProcessLookupError, PermissionError):
                continue
    return False


def stop_groups(procs: list[Proc], timeout: float = defaults.STACK_STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM each process group, wait up to ``timeout`` seconds, then SIGKILL whatever is left."""
    for p in procs:
        _signal_group(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_group_alive(p.pid) for p in procs):
        for p in procs:
            if p.pid in _CHILDREN and _CHILDREN[p.pid].poll() is not None:
                _reap(p.pid)
        time.sleep(0.05)
    for p in procs:
        if _group_alive(p.pid):
            _signal_group(p.pid, signal.SIGKILL)
    for p in procs:
        _reap(p.pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_group_alive(p.pid) for p in procs):
        time.sleep(0.05)


def down(home: Path) -> Optional[StackState]:
    """Stop the workers (they hand back unfinished tasks), then the API."""
    state = StackState.load(home)
    if state is None:
        return None
    stop_groups(state.workers)
    stop_groups([state.api])
    (home / "stack.json").unlink(missing_ok=True)
    return state
