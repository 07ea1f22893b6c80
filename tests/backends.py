"""Real backing services for the suite: a throwaway PostgreSQL cluster and an S3 server.

PostgreSQL: ``HMQ_TEST_DATABASE_URL`` names a server to use; otherwise a cluster is made with
the machine's binaries (``initdb`` in a temporary directory, run as the ``postgres`` user when
the suite runs as root, since PostgreSQL refuses root). S3: moto's server mode on a free port
(it speaks the S3 API over HTTP; it does not check presigned-URL signatures, which the local
store's tests and the opt-in LocalStack test cover), or ``HMQ_TEST_S3_URL``'s endpoint.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Optional

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hmq.stack import free_port


class Unavailable(RuntimeError):
    """A backing service cannot be started on this machine."""


def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) were not found")


class PostgresCluster:
    """A PostgreSQL server for the session; :meth:`database` makes a fresh empty database."""

    def __init__(self) -> None:
        self.url: str = ""
        self._dir: Optional[Path] = None
        self._bindir: Optional[Path] = None
        self._as_user: list[str] = []
        self._options = ""

    def start(self) -> PostgresCluster:
        external = os.environ.get("HMQ_TEST_DATABASE_URL")
        if external:
            self.url = external
            return self
        self._bindir = _pg_bindir()
        self._dir = Path(tempfile.mkdtemp(prefix="hmq-pg-"))
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root, and there is no postgres user to run the server as") from None
            os.chown(self._dir, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        port = free_port()
        data = self._dir / "data"
        password = uuid.uuid4().hex
        pwfile = self._dir / "pw"
        pwfile.write_text(password + "\n")
        if self._as_user:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        # TCP logins need the password (as in production); the socket in our own directory trusts.
        self._run(
            [
                str(self._bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )
        self._options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self._dir} -c fsync=off -c max_connections=200"
        self.resume()
        self.url = f"postgresql+psycopg://postgres:{password}@127.0.0.1:{port}/postgres"
        return self

    @property
    def local(self) -> bool:
        """Whether this cluster was started here (and so can be halted)."""
        return self._dir is not None

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions are ended), keeping its data for :meth:`resume`."""
        assert self._dir is not None and self._bindir is not None, "an external server cannot be halted"
        self._run([str(self._bindir / "pg_ctl"), "-D", str(self._dir / "data"), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        """Start the server (again), on the same port."""
        assert self._dir is not None and self._bindir is not None
        data, log = str(self._dir / "data"), str(self._dir / "log")
        self._run([str(self._bindir / "pg_ctl"), "-D", data, "-o", self._options, "-l", log, "-w", "start"])

    def _run(self, argv: list[str]) -> None:
        out = subprocess.run([*self._as_user, *argv], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise Unavailable(f"{Path(argv[0]).name} failed: {out.stderr.strip() or out.stdout.strip()}")

    def execute(self, *statements: str) -> None:
        """Run statements as the superuser, outside a transaction."""
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
        engine.dispose()

    def database(self, owner: str = "postgres") -> str:
        """URL of a new, empty database on this server."""
        name = f"hmq_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def stop(self) -> None:
        if self._dir is None or self._bindir is None:
            return
        subprocess.run(
            [*self._as_user, str(self._bindir / "pg_ctl"), "-D", str(self._dir / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self._dir, ignore_errors=True)


class S3Server:
    """moto's S3 server (or the endpoint of ``HMQ_TEST_S3_URL``); :meth:`bucket` makes a bucket."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._server = None

    def start(self) -> S3Server:
        given = os.environ.get("HMQ_TEST_S3_URL")
        if given:
            self.endpoint = given.rstrip("/")
            return self
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its per-request log halves the throughput
        port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def bucket(self, endpoint: Optional[str] = None) -> str:
        """A new bucket; returns the ``s3://`` storage URL for it (through ``endpoint``, e.g. a
        :class:`TcpProxy`, when given)."""
        name = f"hmq-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        client.close()
        return f"s3://{name}?region=us-east-1&endpoint_url={endpoint or self.endpoint}&addressing_style=path"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


class TcpProxy:
    """A TCP forwarder on a port of its own in front of ``target`` (``host:port``), which a test
    can take down: :meth:`refuse` stops listening (connections are refused) and cuts every open
    connection; :meth:`accept` listens again on the same port."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self.accept()

    def accept(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._serve, args=(listener,), daemon=True, name="tcp-proxy").start()

    def refuse(self) -> None:
        if self._listener is not None:
            _cut(self._listener)
            self._listener = None
        with self._lock:
            connections, self._open = self._open, set()
        for conn in connections:
            _cut(conn)

    close = refuse

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                if listener.fileno() < 0:
                    return  # refused: no longer listening
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True, name="tcp-proxy-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for conn in (src, dst):
            with self._lock:
                self._open.discard(conn)
            _cut(conn)


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
