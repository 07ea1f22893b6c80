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

from __future__ import annotations

import importlib as _importlib
import threading as _threading
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
    from hmq.api import API
    from hmq.tag import Tag
    from hmq.task import task
    from worker.runner import CachedWorker

    api: API

# The client (httpx, cloudpickle) loads on first use, so `import hmq.crypto` in the API's cold
# start and `import hmq` in a script stay light.
_LAZY = {
    "API": ("hmq.api", "API"),
    "Tag": ("hmq.tag", "Tag"),
    "task": ("hmq.task", "task"),
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
            value: _Any = _importlib.import_module("hmq.api").API()
        else:
            module, attr = _LAZY[name]
            value = getattr(_importlib.import_module(module), attr)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
