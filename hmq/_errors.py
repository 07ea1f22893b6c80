"""The one exception tree of hmq, and the one table between errors and HTTP statuses.

    HmqError                                           (API: 500 internal)
    ├── ConfigurationError          missing or invalid settings, keys or config files (400 invalid)
    │   └── TagFileError            a tag file that is missing, foreign or of an unknown version
    ├── UsageError                  the library was called wrongly (nothing recorded, oversize call,
    │                               invalid package requirement, unpicklable argument) (400 bad_request)
    ├── AccessError                 who may do what
    │   ├── AuthenticationError     unsigned, badly signed, stale, future or replayed request (401)
    │   └── PermissionDenied        authenticated, but not allowed (wrong role, revoked, not yours) (403)
    ├── IntegrityError              a blob or message failed decryption or signature checks (400 invalid)
    ├── StorageError                an object could not be stored or fetched (502 storage)
    ├── Unreachable                 no answer from the API at all (refused, reset, timed out): no status
    ├── PullTimeout                 a blocking pull's timeout= ran out with tasks still open
                                    (also a TimeoutError); client-side, no status
    ├── StackError                  the local stack (`hmq up`) could not start its processes
    ├── ProviderError               an autoscaler's batch system or orchestrator refused a request
    ├── APIError                    the API answered with an error (carries status, code and reason)
    │   ├── BadRequest              400: the request itself is wrong
    │   │   └── PayloadTooLarge     413: a body or object over its limit
    │   ├── NotFound                404: unknown tag, task, function or object
    │   ├── Conflict                409: the name or object is taken by something else
    │   └── ServerError             500: the API failed; retry later
    │       └── Unavailable         503: a part the API depends on is down (retried by clients);
    │                                    the code names the part (``database``, ``storage``)
    └── TaskFailed                  a task raised on the worker; carries the remote traceback

Every class carries its HTTP ``status`` and error ``code``: the API turns a raised error into a
response with :func:`response_of`, the client turns a response back into the error with
:func:`error_for_status`; both read the same class attributes, so the two directions cannot drift.

``transient`` tells a failure that may go away (``Unreachable``; HTTP 502, 503, 504; a
``StorageError`` without a store status, or with a 5xx, 408 or 429 one) from one that will not
(integrity, verification, other 4xx): clients retry the first kind, workers hand those tasks back.

Some also derive from the builtin the user guide promises (``ValueError``), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations

TRANSIENT_STATUSES = frozenset({502, 503, 504})
"""HTTP statuses that mean "try again later": clients retry them (see ``hmq._transport``)."""


class HmqError(Exception):
    """Root of every error raised by hmq.

    ``transient`` says whether the same request may succeed later (the part that failed is
    down or overloaded): clients retry those, workers hand such tasks back instead of failing them.
    """

    status: int = 500
    code: str = "internal"

    @property
    def transient(self) -> bool:
        return False


class ConfigurationError(HmqError, ValueError):
    """Settings, keys or configuration files are missing or invalid."""

    status = 400
    code = "invalid"


class TagFileError(ConfigurationError):
    """A tag file does not exist, is not an hmq tag file, or has an unknown schema."""


class UsageError(HmqError, ValueError):
    """The library was called in a way that cannot work; the message says how to fix it."""

    status = 400
    code = "bad_request"


class AccessError(HmqError):
    """Base for authentication and authorisation failures."""

    status = 403
    code = "forbidden"


class AuthenticationError(AccessError):
    """The request's signature is missing, invalid, stale, from the future or replayed."""

    status = 401
    code = "unauthenticated"


class PermissionDenied(AccessError, ValueError):
    """The caller is known but not allowed to do this."""


class IntegrityError(HmqError):
    """A blob or message failed authentication (tampered, truncated or wrongly keyed)."""

    status = 400
    code = "invalid"


class StorageError(HmqError):
    """An object could not be uploaded to or downloaded from the object store.

    Attributes:
        store_status: the store's HTTP status, when it answered (404: the object does not exist).
    """

    status = 502
    code = "storage"

    def __init__(self, message: str, store_status: int | None = None) -> None:
        super().__init__(message)
        self.store_status = store_status

    @property
    def transient(self) -> bool:
        """No answer from the store (refused, reset, timed out), or an answer saying "later"."""
        return self.store_status is None or self.store_status >= 500 or self.store_status in (408, 429)


class Unreachable(HmqError):
    """The API could not be reached: the connection was refused, reset or timed out.

    There is no HTTP status: the API never answered. The message names the URL.
    """

    @property
    def transient(self) -> bool:
        return True


class PullTimeout(HmqError, TimeoutError):
    """``Tag.pull(blocking=True, timeout=...)`` ran out of time with tasks still open. Nothing
    is lost: what arrived is in the tag, and a later pull goes on.

    Attributes:
        tag: the tag's name.
        remaining: tasks still without a result or error.
        timeout: the seconds that were waited.
    """

    def __init__(self, tag: str, remaining: int, timeout: float, detail: str = "") -> None:
        super().__init__(
            f"tag {tag}: {remaining} task(s) still open after waiting {timeout:g} s{detail}; "
            f"the results so far are in the tag, pull again to go on waiting"
        )
        self.tag = tag
        self.remaining = remaining
        self.timeout = timeout


class StackError(HmqError):
    """A process of the local stack (``hmq up``) did not start or become healthy; the message
    holds the end of its log."""


class ProviderError(HmqError):
    """A batch system or orchestrator did not do what an autoscaler asked (``sbatch``, ``squeue``
    or ``scancel`` failed, the Kubernetes API refused); the message says what it answered."""


class APIError(HmqError):
    """The API answered with an error status.

    Args:
        code: machine-readable error code (e.g. ``unknown_tag``); default: the class's.
        reason: the human-readable reason.
        status: the HTTP status, when it differs from the class's (a status with no class of
            its own, as received by a client).

    Attributes:
        status: HTTP status code.
        code: machine-readable error code from the API (e.g. ``not_found``).
        reason: the human-readable reason the API gave.
    """

    status = 500
    code = "error"

    def __init__(self, code: str | None, reason: str, *, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        super().__init__(f"{reason} (HTTP {self.status}, {self.code})")
        self.reason = reason

    @property
    def transient(self) -> bool:
        """502, 503, 504: a gateway or a part behind the API is down."""
        return self.status in TRANSIENT_STATUSES


class BadRequest(APIError, ValueError):
    """The API refused the request as malformed or invalid (HTTP 400, 422 and other 4xx)."""

    status = 400
    code = "bad_request"


class PayloadTooLarge(BadRequest):
    """A request body or an object is over its limit (HTTP 413)."""

    status = 413
    code = "too_large"


class NotFound(APIError, KeyError):
    """The API does not know the named tag, task, function or object (HTTP 404)."""

    status = 404
    code = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return Exception.__str__(self)


class Conflict(APIError, ValueError):
    """The name or object is already taken by something else (HTTP 409)."""

    status = 409
    code = "conflict"


class ServerError(APIError):
    """The API failed to handle a valid request (HTTP 5xx)."""

    status = 500
    code = "internal"


class Unavailable(ServerError):
    """A part the API depends on (database, object store) is down; retry later (HTTP 503)."""

    status = 503
    code = "unavailable"


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


# The classes a response status maps back to; other statuses fall to their family's class.
_BY_STATUS: dict[int, type[HmqError]] = {
    cls.status: cls
    for cls in (
        AuthenticationError,
        PermissionDenied,
        BadRequest,
        PayloadTooLarge,
        NotFound,
        Conflict,
        ServerError,
        Unavailable,
    )
}


def class_for_status(status: int) -> type[HmqError]:
    """The error class of an HTTP status (its family's class when it has none of its own)."""
    return _BY_STATUS.get(status) or (BadRequest if status < 500 else ServerError)


def error_for_status(status: int, code: str, reason: str) -> HmqError:
    """Map an API error response back to the exception a caller should see."""
    cls = class_for_status(status)
    if issubclass(cls, APIError):
        return cls(code, reason, status=status)
    return cls(reason)


def response_of(exc: HmqError) -> tuple[int, str, str]:
    """``(status, code, message)`` of the API response for a raised error."""
    if isinstance(exc, APIError):
        return exc.status, exc.code, exc.reason
    return exc.status, exc.code, str(exc)
