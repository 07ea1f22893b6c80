"""Real components for tests: the API under uvicorn in a thread, users, worker processes."""

from __future__ import annotations

import json
import os
import secrets
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import uvicorn

from hmq import API, crypto, provision
from hmq.admin import Admin
from hmq.credentials import WorkerCredentials
from hmq.stack import free_port
from lambdas.app import create_app
from lambdas.settings import Settings
from worker.session import WorkerSession

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    """A running API: its URL, settings, admin key and the app object (under uvicorn in a
    thread), or the process serving it (:func:`start_server_process`)."""

    url: str
    settings: Settings
    admin_key: crypto.AdminKey
    app: Any = None
    uvicorn: Optional[uvicorn.Server] = None
    thread: Optional[threading.Thread] = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    clients: list[API] = field(default_factory=list)
    process: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None

    def stop(self) -> None:
        for proc in self.workers:
            stop_process(proc)
        for client in self.clients:
            client.close()
        if self.process is not None:
            stop_process(self.process)
        if self.uvicorn is not None and self.thread is not None:
            self.uvicorn.should_exit = True
            self.thread.join(timeout=10)
            self.app.state.ctx.index.dispose()

    # --- an API in a process of its own ---------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the API process (no shutdown of any kind)."""
        assert self.process is not None, "only an API started by start_server_process can be killed"
        os.killpg(self.process.pid, 9)
        self.process.wait()

    def restart(self) -> None:
        """Start the API process again, on the same port and settings."""
        assert self.log_path is not None
        self.process = _serve(self.url, self.settings, self.log_path)

    # --- the object store, whichever it is ------------------------------------------------------
    @property
    def store(self) -> Any:
        return self.app.state.ctx.store

    def object_keys(self) -> list[str]:
        from lambdas.storage.local import LocalStore

        if isinstance(self.store, LocalStore):
            root = self.store.root
            return sorted(
                str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        pages = self.store.client.get_paginator("list_objects_v2").paginate(Bucket=self.store.bucket)
        return sorted(o["Key"][len(self.store.prefix) :] for page in pages for o in page.get("Contents", []))

    def read_object(self, key: str) -> bytes:
        from lambdas.storage.local import LocalStore

        if isinstance(self.store, LocalStore):
            return self.store.path(key).read_bytes()
        return self.store.client.get_object(Bucket=self.store.bucket, Key=self.store.prefix + key)["Body"].read()

    def write_object(self, key: str, data: bytes) -> None:
        from lambdas.storage.local import LocalStore

        if isinstance(self.store, LocalStore):
            self.store.path(key).write_bytes(data)
        else:
            self.store.client.put_object(Bucket=self.store.bucket, Key=self.store.prefix + key, Body=data)

    def admin(self) -> Admin:
        return Admin(self.url, self.admin_key)

    def user(self, name: Optional[str] = None) -> API:
        """A new user, granted access, with a client of its own."""
        identity = crypto.Identity.generate()
        with self.admin() as admin:
            provision.grant_key(admin, name or f"user-{uuid.uuid4().hex[:8]}", "user", identity.public)
        return self.client(identity)

    def client(self, identity: Optional[crypto.Identity] = None) -> API:
        """An API client for ``identity`` (closed when the server stops)."""
        api = API(self.url, identity, self.admin_key.identity.public)
        self.clients.append(api)
        return api

    def worker_credentials(self, directory: Path, name: Optional[str] = None) -> Path:
        """New worker credentials, granted, in ``directory``; returns the file."""
        name = name or f"worker-{uuid.uuid4().hex[:8]}"
        path = directory / f"{name}.json"
        with self.admin() as admin:
            provision.new_worker(admin, path, name, self.url)
        return path

    def start_worker(
        self,
        directory: Path,
        *,
        cores: int = 1,
        datacenter: str = "default",
        cache_dir: Optional[Path] = None,
        name: Optional[str] = None,
        extra: tuple[str, ...] = (),
        env: Optional[dict[str, str]] = None,
        python: str = sys.executable,
    ) -> subprocess.Popen:
        """A worker process (``python -m worker``) against this API."""
        creds = self.worker_credentials(directory, name)
        log = open(directory / f"{creds.stem}.log", "ab")  # noqa: SIM115 - closed by stop_process
        argv = [
            python,
            "-m",
            "worker",
            "--api",
            self.url,
            "--credentials",
            str(creds),
            "--cores",
            str(cores),
            "--datacenter",
            datacenter,
            "--cache-dir",
            str(cache_dir or directory / "cache"),
            "--log-level",
            "INFO",
            "--grace",
            "0",  # stopped at once by stop_process; a test passes its own --grace in extra
            *extra,
        ]
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(directory),
            env={**os.environ, **(env or {})},
        )
        proc.log_file = log  # type: ignore[attr-defined]
        proc.log_path = directory / f"{creds.stem}.log"  # type: ignore[attr-defined]
        proc.credentials = creds  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc


def stop_process(proc: subprocess.Popen, sig_timeout: float = 20) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=sig_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    log = getattr(proc, "log_file", None)
    if log is not None:
        log.close()


def local_settings(root: Path, admin: crypto.AdminKey, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{root / 'index.db'}",
        "storage_url": (root / "objects").as_uri(),
        "storage_secret": secrets.token_bytes(32),
        **overrides,
    }
    return Settings(admin_public_key=admin.identity.public.to_text(), **values)


class ManualClock:
    """An API clock that stands still until a test moves it (``advance``): leases, placement,
    sweeps and request signatures are judged by it, so tests pass time instead of sleeping.
    It starts at the real time, so that clients' signed timestamps are current."""

    def __init__(self, start: Optional[float] = None) -> None:
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.now += seconds
            return self.now


def start_server(settings: Settings, admin: crypto.AdminKey, clock: Optional[Callable[[], float]] = None) -> Server:
    """The API of ``settings`` under uvicorn in a thread; ``clock`` replaces ``time.time``."""
    app = create_app(settings, clock=clock or time.time)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return Server(url, settings, admin, app, server, thread)


def _serve(url: str, settings: Settings, log_path: Path) -> subprocess.Popen:
    port = url.rsplit(":", 1)[1]
    env = {**os.environ, **settings.to_env(), "HMQ_PUBLIC_URL": url}
    argv = [sys.executable, "-m", "lambdas.serve", "--port", port, "--log-level", "warning"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_for(lambda: proc.poll() is not None or _healthy(url), timeout=60, what=f"the API at {url} to start")
    assert proc.poll() is None, f"the API exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
    return proc


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/v1/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start_server_process(settings: Settings, admin: crypto.AdminKey, log_path: Path) -> Server:
    """The API of ``settings`` as its own process (``python -m lambdas.serve``), which a test
    may kill and restart (:meth:`Server.kill`, :meth:`Server.restart`)."""
    url = f"http://127.0.0.1:{free_port()}"
    return Server(url, settings, admin, process=_serve(url, settings, log_path), log_path=log_path)


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (returns its value); fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def raw_request(
    url: str, method: str, path: str, body: bytes = b"", headers: Optional[dict[str, str]] = None
) -> httpx.Response:
    with httpx.Client(timeout=30) as client:  # generous: a loaded machine may be slow
        return client.request(method, url + path, content=body or None, headers=headers or {})


def submit(api: API, func: Any, calls: list[tuple], tag: Optional[str] = None, **kwargs: Any) -> Any:
    """Record ``calls`` of ``func`` as an ``@hmq.task`` and submit them through ``api``."""
    import hmq

    task = hmq.task(func)
    for args in calls:
        task(*args)
    return task.submit(tag=tag, quiet=True, api=api, **kwargs)


def signed(identity: crypto.Identity, method: str, target: str, body: bytes = b"") -> dict[str, str]:
    return {"content-type": "application/json", **crypto.sign_request(identity, method, target, body)}


class ManualWorker:
    """A worker identity driven step by step by a test: claim, (not) heartbeat, complete.

    ``session`` is its :class:`worker.session.WorkerSession`; ``api`` is a client with the
    same key whose worker methods (``sync_tasks``, ``store_results``, ...) speak through that
    session, as the user guide's ``hmq.API`` worker methods do."""

    def __init__(
        self,
        server: Server,
        directory: Path,
        datacenter: str = "default",
        cores: int = 1,
        memory: Optional[int] = None,
        python: Optional[str] = None,
    ) -> None:
        self.creds = WorkerCredentials.load(server.worker_credentials(directory))
        self.api = server.client(self.creds.identity)
        self.session: WorkerSession = self.api._worker_session()
        self.session.register(datacenter, cores, python, memory=memory)

    def claim(self, n: int = 100, available: int = 1) -> list[Any]:
        return self.session.claim(n, available).groups

    def complete(self, group: Any, values: dict[str, Any], errors: Optional[dict[str, str]] = None) -> Any:
        """Upload results for ``values`` (task id -> value) and ``errors`` (task id ->
        traceback text) of one claim group and report them."""
        from hmq import formats, wire

        user = crypto.verify_certificate(group.certificate, self.creds.admin)
        records = [
            formats.ResultRecord(t, formats.KIND_RESULT, formats.compress(formats.to_json(v)))
            for t, v in values.items()
        ] + [
            formats.ResultRecord(t, formats.KIND_ERROR, formats.compress(e.encode())) for t, e in (errors or {}).items()
        ]
        blob = formats.encode_results(self.creds.identity, self.creds.certificate, user, group.tag, records)
        slot = self.session.result_slots(1)[0]
        self.session.transport.put_object(slot.url, blob)
        stored = wire.StoredResults(key=slot.key, tag=group.tag, completed=list(values), failed=list(errors or {}))
        return self.session.complete(wire.CompleteIn(results=[stored]))


class Ledger(socketserver.ThreadingTCPServer):
    """JSON lines sent by tasks (:func:`tell`) to 127.0.0.1:port, kept in arrival order: how a
    sandboxed task, which cannot write the test's files, reports to the test. Each line is
    answered with how many records of its kind the ledger holds, that one included."""

    daemon_threads = True

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _LedgerHandler)
        self.port = self.server_address[1]

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if r["kind"] == kind]

    def wait(self, kind: str, n: int = 1) -> list[dict[str, Any]]:
        return wait_for(lambda: len(self.of(kind)) >= n and self.of(kind), what=f"{n} {kind!r} report(s)")


class _LedgerHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            record = json.loads(line)
            with self.server.lock:  # type: ignore[attr-defined]
                self.server.records.append(record)  # type: ignore[attr-defined]
                count = sum(r["kind"] == record["kind"] for r in self.server.records)  # type: ignore[attr-defined]
            self.wfile.write(b"%d\n" % count)


def tell(port: int, kind: str, **data: Any) -> int:
    """Called inside tasks: one record to the test's ledger; returns how many records of
    ``kind`` it holds now (this one included)."""
    import json
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(json.dumps({"kind": kind, **data}).encode() + b"\n")
        return int(conn.makefile("rb").readline())


class HttpLedger:
    """A loopback HTTP server that tasks report to (``GET /EVENT/KEY[?at=WHERE]``): sandboxed
    calls cannot write the test's files, but they reach the network. ``count(event, key)`` is
    how often a call said so."""

    def __init__(self) -> None:
        import http.server

        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        ledger = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, where = self.path.partition("?at=")
                _, event, key = path.split("/", 2)
                with ledger._lock:
                    ledger.events.append((event, key, where))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="ledger")
        self._thread.start()

    def count(self, event: str, key: Any = None) -> int:
        with self._lock:
            return sum(1 for e, k, _ in self.events if e == event and (key is None or k == str(key)))

    def keys(self, event: str) -> list[str]:
        with self._lock:
            return [k for e, k, _ in self.events if e == event]

    def running_at(self) -> set[str]:
        """Where calls are running now: the ``at`` of starts without a done (the Slurm job)."""
        with self._lock:
            done = {k for e, k, _ in self.events if e == "done"}
            return {w for e, k, w in self.events if e == "start" and k not in done and w}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def reporting_sleeper(ledger_url: str, key: Any, seconds: float) -> Any:
    """A task: tell the ledger it started (and in which Slurm job, if any), sleep, tell it it is
    done; returns ``key``."""
    import os
    import time
    import urllib.request

    array = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    at = f"{array[0]}_{array[1]}" if all(array) else os.environ.get("SLURM_JOB_ID", "")  # as squeue names it
    urllib.request.urlopen(f"{ledger_url}/start/{key}?at={at}", timeout=30).close()
    time.sleep(seconds)
    urllib.request.urlopen(f"{ledger_url}/done/{key}", timeout=30).close()
    return key
