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

from typing import Any as _Any

from hmq._errors import (
    AccessError,
    APIError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    HmqError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    ServerError,
    StorageError,
    TagFileError,
    TaskFailed,
    UsageError,
)
from hmq._version import __version__
from hmq.api import API
from hmq.tag import Tag
from hmq.task import task

api = API()
"""The default client, configured from ``$HMQ_HOME`` (``~/.hmq``) on first use."""


def request_access(url: str) -> str:
    """Create this user's key for the API at ``url`` and print the signing request
    (``ADD-USER_...``) to hand to the administrator. Returns it too."""
    signing_request = api.setup(url)
    print(signing_request)
    return signing_request


def grant_access(signing_request: str, adminkey: str, username: str) -> None:
    """Admin: grant the user behind ``signing_request`` access as ``username``."""
    api.grant_access(signing_request, adminkey, username)


def __getattr__(name: str) -> _Any:
    # The worker is heavier and rarely needed on a laptop: import it on first use.
    if name == "CachedWorker":
        from worker.runner import CachedWorker

        return CachedWorker
    raise AttributeError(f"module 'hmq' has no attribute {name!r}")


__all__ = [
    "API",
    "APIError",
    "AccessError",
    "AuthenticationError",
    "BadRequest",
    "CachedWorker",
    "ConfigurationError",
    "HmqError",
    "IntegrityError",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "StorageError",
    "Tag",
    "TagFileError",
    "TaskFailed",
    "UsageError",
    "__version__",
    "api",
    "grant_access",
    "request_access",
    "task",
]
