"""The ``hmq`` group and what its command modules share: one line per error, lazily loaded
commands, the tag-name argument, the client and machine-readable output.

Exit codes: 0 success; 1 an error of hmq or the API (one line, ``Error: ...``); 2 wrong
arguments (one line, ``Error: ... (see 'hmq CMD --help')``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional, TypeVar, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import click

from hmq._errors import HmqError

if TYPE_CHECKING:
    from hmq._client import API

SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "mangum", "boto3", "psycopg")
"""What the ``server`` extra installs (pyproject.toml): `hmq up`, `hmq serve` and `hmq migrate` need it."""

SERVER_SPEEDUPS = ("httptools",)
"""Also in the ``server`` extra, but not needed: uvicorn picks its C HTTP parser when it is installed."""

_Command = TypeVar("_Command", bound=Callable[..., Any])


def one_line(text: str) -> str:
    """``text`` on one line (a message with a traceback or several lines is joined)."""
    return " ".join(text.split())


def _error(message: str) -> None:
    click.echo(f"Error: {one_line(message)}", err=True)


class HmqGroup(click.Group):
    """The ``hmq`` command group.

    - Every error is one line on stderr: a usage error (wrong arguments, exit 2) names the
      command's ``--help``, an :class:`hmq.HmqError` or another ``click.ClickException`` exits 1.
    - :meth:`add_lazy_command` registers a command that lives in a module imported only when
      the command runs (``hmq worker`` is ``worker.__main__:main``, whose options it shows).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, target: str, help: str) -> None:
        """Register ``name`` as the click command ``target`` (``"module:attribute"``), imported
        when the command is run or asked for its ``--help``; ``help`` is its line in ``hmq --help``."""
        self.add_command(click.Command(name, help=help, short_help=help), name)
        self._lazy[name] = target

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[Optional[str], Optional[click.Command], list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in self._lazy:
            module, _, attribute = self._lazy[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
        return name, command, rest

    def main(
        self,
        args: Optional[Sequence[str]] = None,
        prog_name: Optional[str] = None,
        complete_var: Optional[str] = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            _show_usage_error(exc)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except HmqError as exc:
            _error(str(exc))
            sys.exit(1)
        except click.Abort:
            _error("aborted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _show_usage_error(exc: click.UsageError) -> None:
    if type(exc).show is not click.UsageError.show:  # e.g. `hmq` alone, which shows the help
        exc.show()
        return
    path = exc.ctx.command_path if exc.ctx is not None else "hmq"
    _error(f"{exc.format_message()} (see '{path} --help')")


def fail(exc: Exception) -> NoReturn:
    """Stop with ``exc``'s message as the command's one-line error (exit 1)."""
    raise click.ClickException(str(exc)) from None


@click.group(cls=HmqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hmq")
@click.option(
    "--retry-deadline",
    type=click.FloatRange(min=0),
    envvar="HMQ_RETRY_DEADLINE",
    default=None,
    help="Seconds a request is retried while the API, its database or the object store is down "
    "(default: 300; 0 sends each request once).",
)
@click.pass_context
def main(ctx: click.Context, retry_deadline: Optional[float]) -> None:
    """hmq: an end-to-end encrypted task queue. `hmq up` starts a local one."""
    ctx.obj = {"retry_deadline": retry_deadline}


def client(retry_deadline: Optional[float] = None) -> API:
    """``hmq.api``, the user's client configured by ``$HMQ_HOME``, with the ``--retry-deadline``
    given to ``hmq`` (or ``retry_deadline`` when that was not given)."""
    import hmq

    ctx = click.get_current_context(silent=True)
    given = (ctx.find_root().obj or {}).get("retry_deadline") if ctx is not None else None
    deadline = given if given is not None else retry_deadline
    if deadline is not None:
        hmq.api.retry_deadline = deadline
    return hmq.api


def echo_json(data: Any) -> None:
    """``--json`` output: one JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


class TagName(click.ParamType):
    """A tag's name as the API accepts it (1-200 letters, digits, ``_``, ``.`` or ``-``)."""

    name = "TAG"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        from hmq import wire

        try:
            return wire.check_name(str(value))
        except ValueError as exc:
            self.fail(f"{value!r} {exc}", param, ctx)


TAG = TagName()


def admin_key_text(admin_key_file: Optional[Path]) -> str:
    """The admin key from ``admin_key_file``, or typed at a prompt."""
    if admin_key_file is not None:
        return admin_key_file.read_text().strip()
    return click.prompt("Admin key", hide_input=True).strip()


def _missing(modules: tuple[str, ...]) -> Optional[str]:
    """The first of MODULES that cannot be imported, without importing any."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:
            return name
    return None


def _with_extra(extra: str) -> str:
    """The pip arguments that install this hmq with EXTRA, from where it was installed (PEP 610)."""
    records = (d.read_text("direct_url.json") for d in importlib.metadata.distributions(name="hmq"))
    origin = json.loads(next((r for r in records if r), "{}"))  # a checkout's hmq.egg-info has none
    url = origin.get("url")
    if url is None:  # from a package index
        return shlex.quote(f"hmq[{extra}]")
    if origin.get("dir_info", {}).get("editable"):
        return "-e " + shlex.quote(f"{url2pathname(urlparse(url).path)}[{extra}]")
    vcs = origin.get("vcs_info", {}).get("vcs")
    return shlex.quote(f"hmq[{extra}] @ {vcs + '+' if vcs else ''}{url}")


def needs_server(command: _Command) -> _Command:
    """Run COMMAND only with the server extra installed; otherwise say in one line how to get it."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        missing = _missing(SERVER_MODULES)
        if missing is not None:
            path = click.get_current_context().command_path
            raise click.ClickException(
                f"{path} needs the server extra ({missing} is not installed): pip install {_with_extra('server')}"
            )
        return command(*args, **kwargs)

    return cast(_Command, checked)
