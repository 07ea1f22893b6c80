"""Access to a deployment: `hmq request-access`, `hmq grant-access`, `hmq revoke`,
`hmq add-worker`, `hmq admin-key`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from hmq import defaults
from hmq._errors import HmqError
from hmq.cli._app import admin_key_text, fail, main


@main.command("request-access")
@click.argument("url")
def request_access(url: str) -> None:
    """Create your key for the API at URL and print the signing request for the admin."""
    import hmq

    try:
        hmq.request_access(url)
    except HmqError as exc:
        fail(exc)


@main.command("grant-access")
@click.argument("signing_request")
@click.argument("username")
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin key (default: prompt).",
)
@click.option("--role", type=click.Choice(["user", "worker"]), default="user", show_default=True)
def grant_access(signing_request: str, username: str, admin_key_file: Optional[Path], role: str) -> None:
    """Admin: grant the key behind SIGNING_REQUEST access as USERNAME."""
    from hmq import provision

    try:
        out = provision.grant_request(signing_request, admin_key_text(admin_key_file), username, role)
    except HmqError as exc:
        fail(exc)
    click.echo(f"granted {out.role} {out.name!r} (key {out.key_id})")


@main.command()
@click.argument("username")
@click.option("--api", "url", required=True, help="API URL.")
@click.option("--admin-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def revoke(username: str, url: str, admin_key_file: Optional[Path]) -> None:
    """Admin: revoke USERNAME; their open tasks are cancelled."""
    from hmq.admin import Admin

    try:
        with Admin(url, admin_key_text(admin_key_file)) as admin:
            out = admin.revoke(username)
    except HmqError as exc:
        fail(exc)
    click.echo(f"revoked {out.name!r}; cancelled {out.cancelled} open task(s)")


@main.command()
@click.argument("username")
@click.argument("weight", type=click.FloatRange(min=0, min_open=True, max=defaults.MAX_SHARE))
@click.option("--api", "url", default=None, help="API URL (default: the one in $HMQ_HOME/client.json).")
@click.option(
    "--admin-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin key (default: $HMQ_HOME/admin.key when it exists, else a prompt).",
)
def share(username: str, weight: float, url: Optional[str], admin_key_file: Optional[Path]) -> None:
    """Admin: set USERNAME's share of the workers to WEIGHT (default 1 for everyone).

    While several users have tasks waiting, claims go to them in turn, each holding running
    tasks in proportion to their share: a user with 2 gets twice the slots of a user with 1.
    """
    from hmq.admin import Admin
    from hmq.config import ClientConfig, hmq_home

    home = hmq_home()
    default_key = home / "admin.key"
    try:
        url = url or ClientConfig.load(home).url
        key = admin_key_text(admin_key_file or (default_key if default_key.is_file() else None))
        with Admin(url, key) as admin:
            out = admin.share(username, weight)
    except HmqError as exc:
        fail(exc)
    click.echo(f"share of {out.name!r} is now {out.share:g}")


@main.command("add-worker")
@click.argument("name")
@click.option("--api", "url", required=True, help="API URL the worker will use.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Credentials file to write (a secret).",
)
@click.option("--admin-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
def add_worker(name: str, url: str, out: Path, admin_key_file: Optional[Path]) -> None:
    """Admin: create and grant worker credentials (run workers with --credentials OUT)."""
    from hmq import crypto, provision
    from hmq.admin import Admin

    try:
        with Admin(url, crypto.AdminKey.from_text(admin_key_text(admin_key_file))) as admin:
            provision.new_worker(admin, out, name, url)
    except HmqError as exc:
        fail(exc)
    click.echo(f"worker {name!r} granted; credentials written to {out} (keep them secret)")


@main.command("admin-key")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Where to write the new admin key."
)
def admin_key(out: Path) -> None:
    """Create a deployment's admin key; prints the public key for HMQ_ADMIN_PUBLIC_KEY."""
    from hmq import provision

    try:
        key = provision.new_admin_key(out)
    except HmqError as exc:
        fail(exc)
    click.echo(key.identity.public.to_text())
