"""The embedded stack and the API's own processes: `hmq up`, `hmq down`, `hmq serve`, `hmq migrate`."""

from __future__ import annotations

from typing import Optional

import click

from hmq._errors import HmqError
from hmq.cli._app import fail, main, needs_server
from hmq.config import hmq_home


@main.command()
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True, help="Local worker processes.")
@click.option(
    "--cores", type=click.IntRange(min=1), default=None, help="Cores per worker (default: all cores / workers)."
)
@click.option("--port", type=click.IntRange(min=1, max=65535), default=None, help="API port (default: a free one).")
@click.option("--database", default=None, help="Index database URL (default: SQLite under $HMQ_HOME/server).")
@click.option("--storage", default=None, help="Object store URL (default: file://$HMQ_HOME/server/objects).")
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "uid", "none"]),
    default=None,
    help="How the workers isolate calls (default: auto, a bubblewrap sandbox); `none` only on a "
    "machine without bubblewrap, for a queue only you use.",
)
@needs_server
def up(
    workers: int,
    cores: Optional[int],
    port: Optional[int],
    database: Optional[str],
    storage: Optional[str],
    isolation: Optional[str],
) -> None:
    """Start a local queue (API + workers) in the background; returns once it is healthy."""
    from hmq import stack

    home = hmq_home()
    try:
        state = stack.up(
            home, workers=workers, cores=cores, port=port, database=database, storage=storage, isolation=isolation
        )
    except HmqError as exc:
        fail(exc)
    click.echo(f"hmq is up at {state.url} with {len(state.workers)} worker(s); HMQ_HOME={home}")


@main.command()
def down() -> None:
    """Stop the local queue started by `hmq up`."""
    from hmq import stack

    state = stack.down(hmq_home())
    click.echo("hmq is down" if state is not None else "hmq was not running")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
@needs_server
def serve(ctx: click.Context) -> None:
    """Run the API under uvicorn, configured by HMQ_* variables (same as `python -m lambdas.serve`)."""
    from lambdas.serve import main as serve_main

    serve_main(ctx.args)


@main.command()
@needs_server
def migrate() -> None:
    """Apply index schema migrations to HMQ_DATABASE_URL (credentials from HMQ_DATABASE_SECRET_ARN if set)."""
    from sqlalchemy.exc import SQLAlchemyError

    from lambdas.migrate import run
    from lambdas.settings import DatabaseSettings

    try:
        revision = run(DatabaseSettings.from_env())
    except HmqError as exc:
        fail(exc)
    except SQLAlchemyError as exc:  # e.g. the database refused the connection
        fail(RuntimeError(f"cannot migrate the index: {exc}"))
    click.echo(f"index schema at revision {revision}")
