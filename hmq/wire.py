"""The JSON schemas of the HTTP protocol, shared by the client, the API and the worker.

Unknown fields are ignored on both sides, so a newer client or server can add fields without
breaking the other (compatibility is by ``PROTOCOL_VERSION``, not by package version).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Optional
from uuid import UUID

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from hmq import defaults

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
"""This interpreter's ``major.minor``: calls are pickled by, and workers run, one Python version."""

NAME_RE = re.compile(r"^[\w.\-]{1,200}$")
DIGEST_RE = r"^[0-9a-f]{64}$"
KEY_RE = r"^[A-Za-z0-9_./\-]{1,512}$"


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("must be 1-200 letters, digits, '_', '.' or '-'")
    return value


ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz")
"""Names pip would take for a local file (``foo.whl`` installs ./foo.whl), not a package."""
_ONLY_NAMES = (
    "packages= takes PEP 508 requirements of packages on an index: names with version specifiers, "
    "extras and markers only"
)

_NOT_A_REQUIREMENT = "not a PEP 508 requirement"


def _kind_of(text: str) -> str:
    """What an entry that is not a requirement looks like, from its first word."""
    first = text.split()[0] if text.split() else ""
    if first.startswith("-"):
        return "a pip option"
    if "://" in first or first.startswith("file:"):
        return "a URL"
    if first.startswith(("/", ".", "~")) or "/" in first or "\\" in first:
        return "a local path"
    return _NOT_A_REQUIREMENT


def check_requirement(value: str) -> str:
    """A ``packages=`` entry must be one PEP 508 requirement of a package on an index: no direct
    reference (``name @ url``), local path, URL or pip option. It reaches pip as one argument,
    after ``--``. Raises ``ValueError`` naming the entry and what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"packages entry {value!r} is {'empty' if value == '' else 'not a string'}; {_ONLY_NAMES}")
    try:
        req = Requirement(value)
    except InvalidRequirement as exc:
        kind = _kind_of(value)
        why = f" ({str(exc).splitlines()[0]})" if kind == _NOT_A_REQUIREMENT else ""
        raise ValueError(f"packages entry {value!r} is {kind}{why}; {_ONLY_NAMES}") from None
    if req.url is not None:
        raise ValueError(f"packages entry {value!r} is a direct reference (name @ URL); {_ONLY_NAMES}")
    if req.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ValueError(f"packages entry {value!r} is a file name pip would install from disk; {_ONLY_NAMES}")
    return value.strip()


def normalise_packages(packages: Sequence[str] | str) -> list[str]:
    """Validated, de-duplicated, sorted: one package set, one environment (a string is one entry)."""
    return sorted({check_requirement(p) for p in ([packages] if isinstance(packages, str) else packages)})


Name = Annotated[str, AfterValidator(check_name)]
PackageReq = Annotated[str, AfterValidator(check_requirement)]
Digest = Annotated[str, Field(pattern=DIGEST_RE)]


def check_key(value: str) -> str:
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("object keys have no empty, '.' or '..' segments")
    return value


ObjectKey = Annotated[str, Field(pattern=KEY_RE), AfterValidator(check_key)]
ByteCount = Annotated[int, Field(ge=0, le=defaults.MAX_OBJECT_BYTES)]
"""An offset or length inside an object: bounded, so no request can carry an integer the index cannot hold."""
Count = Annotated[int, Field(ge=0, le=1_000_000)]
SEQ_RE = r"^(\d{1,18})?$"
"""A listing position (``after=``): a task's sequence number (fits the index's 64 bits), or empty for the start."""
CURSOR_RE = r"^(\d{1,18}:\d{1,18})?$"
"""A pull cursor (``cursor=``): ``batch:seq``, or empty for the start."""
TaskList = Annotated[list[UUID], Field(max_length=defaults.MAX_TASKS_PER_REQUEST)]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


# --- errors ------------------------------------------------------------------------------
class ErrorDetail(Model):
    code: str
    message: str


class ErrorOut(Model):
    """Every error answer of the API: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


# --- service info --------------------------------------------------------------------------
class Info(Model):
    service: Literal["hmq"] = "hmq"
    version: str
    protocol: int
    min_protocol: int
    admin_public_key: str
    compute_keys: list[dict[str, Any]]
    max_object_bytes: int
    max_request_bytes: int
    presign_expiry_seconds: int


# --- users -------------------------------------------------------------------------------
class GrantIn(Model):
    certificate: dict[str, Any]
    compute_key: Optional[dict[str, Any]] = None


class UserOut(Model):
    name: str
    role: str
    key_id: str
    revoked: bool
    created: float
    share: float = 1.0


class ShareIn(Model):
    share: float = Field(
        gt=0,
        allow_inf_nan=False,
        le=defaults.MAX_SHARE,
        description="the user's weight when claims are shared between users with pending tasks (default 1)",
    )


class RevokeOut(Model):
    name: str
    revoked: bool
    cancelled: int


# --- uploads and functions ----------------------------------------------------------------
class UploadsIn(Model):
    """``POST /v1/uploads`` (users) and ``POST /v1/workers/{id}/uploads`` (workers): presigned
    PUT URLs. Clients and workers ask for a few more than they need and use the rest for their
    next submits and reports while within half the URLs' lifetime (``UploadsOut.expires_in``)."""

    kind: Literal["function", "chunk", "results"]
    count: int = Field(ge=1, le=defaults.UPLOAD_SLOTS_MAX)


class UploadSlot(Model):
    key: str
    url: str


class UploadsOut(Model):
    slots: list[UploadSlot]
    expires_in: int


class FunctionIn(Model):
    digest: Digest
    key: ObjectKey
    size: int = Field(ge=1, le=defaults.MAX_OBJECT_BYTES)


class FunctionOut(Model):
    """A registered function; ``corrupt``: a worker found its object corrupt, and registering
    the function again replaces it."""

    digest: str
    size: int
    url: Optional[str] = None
    corrupt: bool = False


# --- submission --------------------------------------------------------------------------
class ChunkIn(Model):
    key: ObjectKey
    header_len: int = Field(ge=8, le=defaults.MAX_OBJECT_BYTES)
    function: Digest
    python: str = Field(pattern=r"^\d+\.\d+$")
    ncores: int = Field(ge=1, le=defaults.TASK_MAX_CORES)
    packages: list[PackageReq] = Field(default_factory=list, max_length=defaults.TASK_MAX_PACKAGES)
    datacenters: Optional[list[Name]] = Field(default=None, max_length=defaults.TASK_MAX_DATACENTERS)
    tasks: list[tuple[UUID, ByteCount, ByteCount]] = Field(min_length=1, max_length=defaults.CHUNK_MAX_TASKS)
    timeout: Optional[float] = Field(default=None, gt=0, le=defaults.TASK_MAX_TIMEOUT, description="seconds per call")
    memory: Optional[int] = Field(default=None, ge=1, le=defaults.TASK_MAX_MEMORY_BYTES, description="bytes per call")
    retries: int = Field(default=0, ge=0, le=defaults.TASK_MAX_RETRIES)


class SubmitIn(Model):
    """``POST /v1/tasks``: register uploaded chunks' tasks. Each chunk's function must be
    registered (400 ``unknown_function``) and its stored copy not found corrupt by a worker
    (409 ``function_corrupt``; nothing is stored: register the function again, which replaces
    the copy, and send the same request). Clients remember what they registered and send this
    with no look-up before it."""

    tag: Name
    chunks: list[ChunkIn] = Field(min_length=1, max_length=defaults.SUBMIT_MAX_CHUNKS)


class SubmitOut(Model):
    """``warnings``: what keeps the submitted tasks from running now, e.g. no worker seen
    recently has their Python version (human readable; the client shows them as a ``UserWarning``)."""

    created: int
    existing: int
    warnings: list[str] = Field(default_factory=list)


# --- tags and tasks ----------------------------------------------------------------------
TaskState = Literal["pending", "running", "completed", "failed", "cancelled"]


class TagStatus(Model):
    tag: str
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0
    warnings: list[str] = Field(
        default_factory=list,
        description="why pending tasks wait (no worker seen recently can run them) and the package "
        "environments workers are building for them; human readable, recomputed on each request",
    )


class TagSummary(Model):
    """One of the caller's tags (``GET /v1/tags``): when it was made, its tasks per state, and
    when its latest result was reported (``None``: none yet)."""

    tag: str
    created: float
    total: int
    open: int
    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    last_result: Optional[float] = None


class TaskPage(Model):
    tasks: list[UUID]
    next: Optional[str] = None


class DoneObject(Model):
    """Finished tasks whose results are in one result object."""

    key: str
    url: str
    tasks: list[UUID]


class ResultObjectOut(Model):
    """Whether a result object of the caller's tasks is in the object store (``size`` ``None``: it is not)."""

    key: str
    size: Optional[int] = None


class ClosedTask(Model):
    """A task that ended without a result object (cancelled, or failed on the API's side)."""

    id: UUID
    status: TaskState
    error: Optional[str] = None


class DonePage(Model):
    """A page of finished tasks. ``open`` counts the tag's (or the asked-for) tasks still pending
    or running; ``unknown`` lists asked-for ids the API does not know (deleted)."""

    objects: list[DoneObject]
    closed: list[ClosedTask]
    cursor: str
    more: bool
    open: int
    unknown: list[UUID] = Field(default_factory=list)
    wait: float = Field(default=0.0, description="the longest the API would have waited (0: it does not wait)")


class TaskSelection(Model):
    tasks: Optional[TaskList] = None
    tag: Optional[Name] = None


class TaskIdsOut(Model):
    """Ids acted upon. When a whole tag was named, ``more`` says the call must be repeated."""

    tasks: list[UUID]
    more: bool = False


class TaskStatusOut(Model):
    statuses: dict[str, Optional[TaskState]]


# --- workers -----------------------------------------------------------------------------
class WorkerIn(Model):
    datacenter: Name
    cores: int = Field(ge=1, le=100_000)
    python: str = Field(pattern=r"^\d+\.\d+$")
    hostname: str = Field(default="", max_length=255)
    version: str = Field(default="", max_length=64)
    memory: Optional[int] = Field(default=None, ge=1, description="bytes: only tasks whose memory fits are claimed")
    isolation: Literal["bwrap", "uid", "none", "unknown"] = Field(
        default="unknown", description="how the worker isolates calls (see worker/sandbox.py); none is unsafe"
    )


class WorkerOut(Model):
    worker_id: UUID
    lease_seconds: float
    heartbeat_seconds: float


class WorkerInfo(Model):
    id: UUID
    name: str
    datacenter: str
    cores: int
    python: str
    hostname: str
    version: str
    registered: float
    last_seen: float
    running: int
    memory: Optional[int] = None
    isolation: str = "unknown"


class MetricPoint(Model):
    """One minute of the fleet (``time``: its start, unix time): the workers sampled in it with
    their cores (registered, allocated by the worker, used by running calls), and the index's
    tasks pending and running."""

    time: float
    workers: int = 0
    cores: int = 0
    allocated: int = 0
    used: int = 0
    pending: int = 0
    running: int = 0


class UserUsage(Model):
    """CPU time of one user's tasks (cores x minutes they were seen running, sampled per minute)."""

    name: str
    cpu_seconds: float


class DatacenterInfo(Model):
    name: str
    last_seen: float
    live_workers: int
    live_cores: int


class MetricsOut(Model):
    """``GET /v1/metrics``: the per-minute points from ``since`` (rounded down to a minute) to
    ``now``, CPU time per user over them, and every datacenter a worker registered in."""

    since: float
    now: float
    points: list[MetricPoint]
    users: list[UserUsage]
    datacenters: list[DatacenterInfo]


class EnvBuild(Model):
    """A package environment a worker is building: its package set, and for how long."""

    packages: list[PackageReq] = Field(max_length=defaults.TASK_MAX_PACKAGES)
    seconds: float = Field(ge=0, le=1e7, description="since the build started")


Builds = Optional[list[EnvBuild]]
"""The environments a worker is building now; ``None`` (an older worker): not told."""


class ClaimIn(Model):
    max_tasks: int = Field(ge=1, le=defaults.CLAIM_MAX_TASKS)
    available: int = Field(
        ge=1, le=100_000, description="free cores: only tasks with ncores <= available are handed out"
    )
    per_user: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=defaults.CLAIM_MAX_TASKS)]] = (
        Field(
            default_factory=dict,
            max_length=defaults.CLAIM_MAX_USERS,
            description="most tasks of each user (by key id) to take: what the worker can start soon of their calls",
        )
    )
    others: Optional[int] = Field(
        default=None, ge=0, le=defaults.CLAIM_MAX_TASKS, description="most tasks of each user not in per_user"
    )
    per_function: dict[
        Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=defaults.CLAIM_MAX_TASKS)]
    ] = Field(
        default_factory=dict,
        max_length=defaults.CLAIM_MAX_FUNCTIONS,
        description="most tasks of each function (by digest) to take: what the worker can start soon of "
        "calls it has measured",
    )
    unmeasured: Optional[int] = Field(
        default=None,
        ge=0,
        le=defaults.CLAIM_MAX_TASKS,
        description="most tasks of each function not in per_function (null: no limit); a user's tasks are "
        "taken in submission order, so the claim stops at the first of a function it may take no more of",
    )
    allocated: Count = 0
    running: Count = 0
    used: Count = 0
    building: Builds = Field(default=None, max_length=defaults.WORKER_MAX_BUILDS)
    wait: float = Field(
        default=0.0,
        ge=0,
        le=600,
        description="seconds the API may hold the claim until tasks it can hand out are submitted "
        "(cut to the API's limit); 0 answers at once",
    )
    held: Optional[TaskList] = Field(
        default=None,
        description="every task the worker holds: their leases are extended as by a heartbeat, and "
        "the answer's drop names those to give up; null (not sent) leaves leases alone",
    )
    result_slots: int = Field(
        default=0,
        ge=0,
        le=defaults.UPLOAD_SLOTS_MAX,
        description="result upload URLs wanted with the tasks (the worker's spares ran low): issued only "
        "when the claim leases tasks, and only as many as the worker's upload quota leaves (none is "
        "no error: POST /v1/workers/{id}/uploads says why)",
    )


class ClaimTask(Model):
    id: UUID
    offset: int
    length: int
    attempt: int
    failures: int = 0


class ClaimGroup(Model):
    chunk_key: str
    chunk_url: str
    header_len: int
    function: str
    function_url: str
    certificate: dict[str, Any]
    tag: str
    tasks: list[ClaimTask]


class ClaimOut(Model):
    groups: list[ClaimGroup]
    lease_until: float
    wait: float = Field(default=0.0, description="the longest the API would have waited (0: it does not wait)")
    held_until: Optional[float] = Field(
        default=None, description="new end of the leases of the held tasks (null: held was not sent or not read)"
    )
    drop: list[UUID] = Field(default_factory=list, description="held tasks to give up (cancelled, deleted, re-leased)")
    uploads: Optional[UploadsOut] = Field(
        default=None, description="the result upload URLs asked for with result_slots (null: none issued)"
    )


class StoredResults(Model):
    key: ObjectKey
    tag: Name
    completed: list[UUID] = Field(default_factory=list)
    failed: list[UUID] = Field(default_factory=list)


class RejectedTask(Model):
    id: UUID
    error: str = Field(max_length=defaults.REJECTION_MAX_CHARS)


class CompleteIn(Model):
    results: list[StoredResults] = Field(default_factory=list, max_length=defaults.COMPLETE_MAX_OBJECTS)
    rejected: list[RejectedTask] = Field(default_factory=list, max_length=defaults.MAX_TASKS_PER_REQUEST)
    release: TaskList = Field(default_factory=list)


class CorruptIn(Model):
    """A worker's report: the function object of the tasks of ``chunk`` it holds is corrupt."""

    chunk: ObjectKey
    reason: str = Field(default="", max_length=defaults.REJECTION_MAX_CHARS)


class CorruptOut(Model):
    marked: bool


class CompleteOut(Model):
    accepted: int
    ignored: list[UUID]


class HeartbeatIn(Model):
    tasks: TaskList = Field(default_factory=list)
    building: Builds = Field(default=None, max_length=defaults.WORKER_MAX_BUILDS)


class HeartbeatOut(Model):
    lease_until: float
    drop: list[UUID]


class PackageSetsOut(Model):
    packagesets: list[list[str]]


# --- queue depth (for autoscalers) ---------------------------------------------------------
class QueueGroup(Model):
    """Open tasks that place alike: the same datacenters, Python, cores (and memory)."""

    datacenters: Optional[list[str]] = Field(description="where the tasks may run; null: anywhere")
    python: str
    ncores: int
    memory: Optional[int] = Field(default=None, description="bytes a call may use, when tasks declare it")
    pending: int
    running: int
    cores_needed: int = Field(description="ncores x (pending + running): cores to run every open task at once")
    running_in: dict[str, int] = Field(
        default_factory=dict, description="running tasks by the datacenter of the worker running them"
    )
    workers: int = Field(description="live workers that could run these tasks")


class QueueDepth(Model):
    """``GET /v1/queue``: open tasks grouped by what decides their placement, for autoscalers."""

    groups: list[QueueGroup]
    workers: int = Field(description="live workers (seen within live_seconds), whatever they run")
    live_seconds: float
