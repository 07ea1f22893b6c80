"""Access to a deployment: `hmq request-access`, `hmq grant-access`, `hmq revoke`,
`hmq add-worker`, `hmq admin-key`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

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
