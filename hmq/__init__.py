"""hmq: decorate a function, call it as often as you like, ``submit()``, and ``pull()`` the results.

import hmq

@hmq.task
def costly_calculation(a, b):
    return a * b

for case in [(2, 3), (4, 5)]:
    costly_calculation(*case)
tag = costly_calculation.submit()
tag.pull(blocking=True)
print(list(tag.results))
"""

import importlib as _importlib
import sys as _sys
import threading as _threading
import types as _types
import typing as _typing
from typing import Any as _Any

from hmq._errors import (
    AccessError,
    APIError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    Conflict,
    HmqError,
    IntegrityError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PullTimeout,
    ServerError,
    StorageError,
    TagFileError,
    TaskFailed,
    Unavailable,
    Unreachable,
    UsageError,
)
from hmq._version import __version__

if _typing.TYPE_CHECKING:
    from hmq._client import API
    from hmq._task import task
    from hmq.tag import Tag
    from worker.runner import CachedWorker

    api: API

# The client (httpx, cloudpickle) loads on first use, so `import hmq.crypto` in the API's cold
# start and `import hmq` in a script stay light.
_LAZY = {
    "API": ("hmq._client", "API"),
    "Tag": ("hmq.tag", "Tag"),
    "task": ("hmq._task", "task"),
    "CachedWorker": ("worker.runner", "CachedWorker"),
}


_LOCK = _threading.Lock()


def __getattr__(name: str) -> _Any:
    # `hmq.api` is the default client: one per process, configured from $HMQ_HOME on first use.
    if name not in _LAZY and name != "api":
        raise AttributeError(f"module 'hmq' has no attribute {name!r}")
    with _LOCK:
        if name in globals():
            return globals()[name]
        if name == "api":
            value: _Any = _importlib.import_module("hmq._client").API()
        else:
            module, attr = _LAZY[name]
            value = getattr(_importlib.import_module(module), attr)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _alias_old_client_module() -> None:
    """``from hmq.api import API`` and ``import hmq.api`` (code written when the client module
    was called ``hmq.api``) find this stand-in in ``sys.modules``. The import system binds a
    submodule to its parent's attribute only when it loads it, never when it is already there,
    so ``hmq.api`` stays the default client. Its names load from ``hmq._client`` on first use."""
    alias = _types.ModuleType("hmq.api", "The names of hmq._client, for code that imports them from hmq.api.")

    def __getattr__(name: str) -> _Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_importlib.import_module("hmq._client"), name)

    alias.__getattr__ = __getattr__  # type: ignore[method-assign]
    _sys.modules.setdefault("hmq.api", alias)


_alias_old_client_module()


def request_access(url: str) -> str:
    """Create this user's key for the API at ``url`` and print the signing request
    (``ADD-USER_...``) to hand to the administrator. Returns it too."""
    signing_request = __getattr__("api").setup(url)
    print(signing_request)
    return signing_request


def grant_access(signing_request: str, adminkey: str, username: str) -> None:
    """Admin: grant the user behind ``signing_request`` access as ``username``."""
    __getattr__("api").grant_access(signing_request, adminkey, username)


__all__ = [
    "API",
    "APIError",
    "AccessError",
    "AuthenticationError",
    "BadRequest",
    "CachedWorker",
    "ConfigurationError",
    "Conflict",
    "HmqError",
    "IntegrityError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PullTimeout",
    "ServerError",
    "StorageError",
    "Tag",
    "TagFileError",
    "TaskFailed",
    "Unavailable",
    "Unreachable",
    "UsageError",
    "__version__",
    "api",
    "grant_access",
    "request_access",
    "task",
]
