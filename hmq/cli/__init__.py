"""The ``hmq`` command line: :data:`main` is the group (the console script ``hmq.cli:main``).

One module per group of commands, each adding its commands to :data:`main`:

    _app.py       the group: one-line errors, lazily loaded commands, shared options and helpers
    local.py      the embedded stack and the API's processes: up, down, serve, migrate
    status.py     status [TAG]: the local queue, a shared deployment, or one tag
    tags.py       your tags in the queue: ls (tags), cancel, delete, logs
    files.py      tag files: pull TAG [FILE], describe FILE
    access.py     request-access, grant-access, revoke, share, add-worker, admin-key
    fleet.py      workers (the fleet) and worker (run one; its options are worker/__main__.py's)
    autoscale.py  autoscale PROVIDER
    (lazy)        dashboard: hmq/dashboard/command.py

A new command goes into such a module (or a new one listed below) with ``@main.command()``, or,
when it lives in a module that should be imported only when the command runs, with
``main.add_lazy_command(NAME, "package.module:command", "one line of help")``. Every command is
listed in the README's command table (tests/test_docs.py checks it).
"""

from hmq.cli import access, autoscale, files, fleet, local, status, tags  # noqa: F401  (they add the commands)
from hmq.cli._app import SERVER_MODULES, SERVER_SPEEDUPS, main

main.add_lazy_command(
    "dashboard",
    "hmq.dashboard.command:dashboard",
    "Serve a web dashboard of your tags (and, with the admin key, the fleet) on 127.0.0.1.",
)

__all__ = ["SERVER_MODULES", "SERVER_SPEEDUPS", "main"]
