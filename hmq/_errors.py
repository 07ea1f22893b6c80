"""The one exception tree of hmq.

    HmqError
    ├── ConfigurationError          missing or invalid settings, keys or config files
    │   └── TagFileError            a tag file that is missing, foreign or of an unknown version
    ├── UsageError                  the library was called wrongly (nothing recorded, oversize call,
    │                               invalid package requirement, unpicklable argument)
    ├── AccessError                 who may do what
    │   ├── AuthenticationError     unsigned, badly signed, stale, future or replayed request
    │   └── PermissionDenied        authenticated, but not allowed (wrong role, revoked, not yours)
    ├── IntegrityError              a blob or message failed decryption or signature checks
    ├── StorageError                an object could not be stored or fetched
    ├── APIError                    the API answered with an error (carries status and reason)
    │   ├── BadRequest              400/413/422: the request itself is wrong
    │   ├── NotFound                404: unknown tag, task, function or object
    │   └── ServerError             5xx: the API failed; retry later
    └── TaskFailed                  a task raised on the worker; carries the remote traceback

Some also derive from the builtin the user guide promises (``ValueError``), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class HmqError(Exception):
    """Root of every error raised by hmq."""


class ConfigurationError(HmqError, ValueError):
    """Settings, keys or configuration files are missing or invalid."""


class TagFileError(ConfigurationError):
    """A tag file does not exist, is not an hmq tag file, or has an unknown schema."""


class UsageError(HmqError, ValueError):
    """The library was called in a way that cannot work; the message says how to fix it."""


class AccessError(HmqError):
    """Base for authentication and authorisation failures."""


class AuthenticationError(AccessError):
    """The request's signature is missing, invalid, stale, from the future or replayed."""


class PermissionDenied(AccessError, ValueError):
    """The caller is known but not allowed to do this."""


class IntegrityError(HmqError):
    """A blob or message failed authentication (tampered, truncated or wrongly keyed)."""


class StorageError(HmqError):
    """An object could not be uploaded to or downloaded from the object store.

    Attributes:
        status: the store's HTTP status, when it answered (404: the object does not exist).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class APIError(HmqError):
    """The API answered with an error status.

    Attributes:
        status: HTTP status code.
        code: machine-readable error code from the API (e.g. ``not_found``).
        reason: the human-readable reason the API gave.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(f"{reason} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.reason = reason


class BadRequest(APIError, ValueError):
    """The API refused the request as malformed, oversize or invalid (HTTP 400/413/422)."""


class NotFound(APIError, KeyError):
    """The API does not know the named tag, task, function or object (HTTP 404)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class ServerError(APIError):
    """The API failed to handle a valid request (HTTP 5xx)."""


class TaskFailed(HmqError):
    """A task raised an exception on the worker.

    Attributes:
        task_id: the task's id.
        remote_traceback: the formatted traceback from the worker.
    """

    def __init__(self, task_id: str, remote_traceback: str) -> None:
        super().__init__(f"task {task_id} failed:\n{remote_traceback}")
        self.task_id = task_id
        self.remote_traceback = remote_traceback


def error_for_status(status: int, code: str, reason: str) -> APIError | AccessError:
    """Map an API error response back to the exception a caller should see."""
    if status == 401:
        return AuthenticationError(reason)
    if status == 403:
        return PermissionDenied(reason)
    if status == 404:
        return NotFound(status, code, reason)
    if status in (400, 409, 413, 422):
        return BadRequest(status, code, reason)
    if status >= 500:
        return ServerError(status, code, reason)
    return APIError(status, code, reason)
