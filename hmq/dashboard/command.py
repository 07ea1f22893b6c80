"""``hmq dashboard``: the dashboard served on 127.0.0.1 by this process, until Ctrl-C."""

from __future__ import annotations

import secrets
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from hmq._errors import HmqError
from hmq.config import ClientConfig, hmq_home

if TYPE_CHECKING:
    from hmq.dashboard.board import Board

MODULES = ("starlette", "uvicorn", "jinja2")
"""What the ``dashboard`` extra installs (pyproject.toml)."""
RETRY_SECONDS = 5.0
"""How long the dashboard's requests to the API are retried: a page says the API is down soon
instead of waiting as long as a script would (``REQUEST_RETRY_DEADLINE_SECONDS``)."""


def _require_extra() -> None:
    """Stop with one line naming the extra to install when a module of it is missing."""
    from hmq.cli._app import _missing, _with_extra

    missing = _missing(MODULES)
    if missing is not None:
        raise click.ClickException(
            f"hmq dashboard needs the dashboard extra ({missing} is not installed): "
            f"pip install {_with_extra('dashboard')}"
        )


def _bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def _admin_key(admin_key_file: Optional[Path], home: Path) -> Optional[str]:
    """The admin key's text from the file given, else ``$HMQ_HOME/admin.key`` when it exists."""
    path = admin_key_file or (home / "admin.key")
    if admin_key_file is None and not path.is_file():
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read the admin key {path}: {exc.strerror}") from None


@click.command("dashboard")
@click.option(
    "--port", type=click.IntRange(min=0, max=65535), default=0, help="Port on 127.0.0.1 (default: a free one)."
)
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The deployment's admin key, for the fleet page (default: $HMQ_HOME/admin.key when it exists).",
)
def dashboard(port: int, admin_key_file: Optional[Path]) -> None:
    """Serve a dashboard of your tags (and, with the admin key, the fleet) on 127.0.0.1.

    Prints its URL, with a secret token, first; serves until Ctrl-C. Results, errors and logs
    are decrypted here with your key ($HMQ_HOME); the page answers only requests carrying the
    token.
    """
    _require_extra()
    from hmq._client import API
    from hmq.admin import Admin
    from hmq.dashboard.board import Board

    home = hmq_home()
    try:
        config = ClientConfig.load(home)
        admin = Admin(config.url, key) if (key := _admin_key(admin_key_file, home)) else None
    except HmqError as exc:
        raise click.ClickException(str(exc)) from None
    if admin is not None:
        admin.transport.retry_deadline = RETRY_SECONDS
    sock = _bind(port)
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="hmq-dashboard-") as cache:
        board = Board(API(home=home, retry_deadline=RETRY_SECONDS), Path(cache), admin)
        try:
            _serve(board, sock, token)
        finally:
            board.close()
            sock.close()


def _serve(board: Board, sock: socket.socket, token: str) -> None:
    import uvicorn

    from hmq.dashboard.app import create_app

    bound = sock.getsockname()[1]
    app = create_app(board, token, bound)
    click.echo(f"http://127.0.0.1:{bound}/?token={token}")
    sys.stdout.flush()
    click.echo(f"hmq dashboard for {board.api.url} (Ctrl-C stops it)", err=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stopped serving, then re-raised the Ctrl-C it caught
        pass
    click.echo("hmq dashboard stopped", err=True)
