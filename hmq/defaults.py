"""The tunable constants of the client and the protocol, each with what it is for.

The client reads its numbers from here, and the wire schemas (``hmq.wire``) their limits, so
the client, the API and the worker agree on them. The API's server-side limits and times are
the defaults of its settings (``lambdas.settings``), which may override them; the worker's own
tunables (poll and flush intervals, batch and cache sizes) are the defaults of
``worker.settings.WorkerSettings``.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
"""Version of the HTTP protocol and blob formats. Clients and servers of any package version
interoperate as long as they share this number (the API reports the range it accepts)."""

# --- requests and signatures -------------------------------------------------------------
REQUEST_MAX_SKEW_SECONDS = 300.0
"""A signed request whose timestamp differs from the server clock by more than this is refused
as stale or from the future. Its nonce is remembered for twice as long, so a replay inside the
window is refused too."""

REQUEST_TIMEOUT_SECONDS = 60.0
"""HTTP timeout of one API request or one presigned transfer (connect/read/write each)."""

REQUEST_RETRY_DEADLINE_SECONDS = 300.0
"""How long a client (submit, pull, a worker) keeps retrying a request that got no answer
(refused, reset, timed out) or a 502/503/504, counted from its first attempt. Then the error is
raised. ``Transport(retry_deadline=...)`` changes it per client; 0 sends once."""

REQUEST_RETRY_BACKOFF_SECONDS = 0.25
"""First retry delay; doubled on each retry up to ``REQUEST_RETRY_MAX_BACKOFF_SECONDS``, each
delay drawn at random between half and all of that (jitter: clients that failed together do not
come back together). A ``Retry-After`` the server sends is waited out in full."""

REQUEST_RETRY_MAX_BACKOFF_SECONDS = 10.0
"""Longest delay between two attempts of one request (unless the server's ``Retry-After`` asks for more)."""

UNAVAILABLE_RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of the API's 503 answers (its database or object store is down)."""

MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""Largest JSON body the API accepts (below API Gateway's and Lambda's 6 MB payload limits).
Blobs never pass through the API, so only metadata has to fit."""

# --- objects -----------------------------------------------------------------------------
PRESIGN_EXPIRY_SECONDS = 900
"""Lifetime of a presigned GET or PUT URL."""

MAX_OBJECT_BYTES = 2 * 1024**3
"""Largest object (function, call chunk or result batch) the store accepts."""

MAX_CALL_BYTES = 256 * 1024**2
"""Largest single encrypted call (arguments of one task); larger calls are refused at submit."""

# --- submission --------------------------------------------------------------------------
CALL_LOG_MEMORY_BYTES = 4 * 1024**2
"""Recorded calls (pickled) kept in memory before they spill to a private temporary file: a
function's recorded calls cost at most this much of the client's memory, however many."""

CHUNK_MAX_CALLS = 2000
"""Calls per submit chunk: one object in the store and one index batch per chunk."""

CHUNK_MAX_BYTES = 32 * 1024**2
"""A chunk is closed early once its calls add up to this many bytes."""

SUBMIT_CHUNKS_PER_REQUEST = 8
"""Chunks registered with the index in one API request."""

MAX_TASKS_PER_REQUEST = 20_000
"""Task ids per request for cancel, delete, status and result look-ups (client batches above)."""

SUBMIT_UPLOADS_IN_FLIGHT = 4
"""Chunks a submit uploads at the same time (each one presigned PUT)."""

SUBMIT_SLOTS_PER_REQUEST = 64
"""Presigned upload URLs a submit asks for at once (fewer for a small submit)."""

SPARE_UPLOAD_SLOTS = 8
"""Chunk upload URLs a client asks for beyond what a submit needs and keeps for its next ones
(within half their lifetime): a small submit then costs one PUT and one request, not three.
Each counts against the caller's unregistered uploads until it is used or swept."""

FUNCTION_REGISTRY = 64
"""Functions a client remembers having registered (pickles up to ``FUNCTION_REGISTRY_BYTES``
each), so that submitting one again asks nothing before it submits."""

FUNCTION_REGISTRY_BYTES = 1024**2
"""Largest pickled function a client remembers (a bigger one is looked up at every submit)."""

UPLOAD_SLOTS_MAX = 1000
"""Most presigned upload URLs the API hands out in one request."""

SUBMIT_MAX_CHUNKS = 64
"""Most chunks one submit request may register (the client sends ``SUBMIT_CHUNKS_PER_REQUEST``)."""

CHUNK_MAX_TASKS = 10_000
"""Most tasks one registered chunk may carry (the client closes a chunk at ``CHUNK_MAX_CALLS``)."""

TASK_MAX_CORES = 4096
"""Largest ``ncores`` a task may ask for."""

TASK_MAX_PACKAGES = 200
"""Most ``packages=`` requirements of one submit."""

TASK_MAX_DATACENTERS = 100
"""Most ``datacenters=`` names of one submit."""

# --- tasks -------------------------------------------------------------------------------
TASK_TIMEOUT_SECONDS = 6 * 3600.0
"""Default wall time of one call (``submit(timeout=...)``); the worker kills a call that runs
longer, and the API ends its lease soon after (``TIMEOUT_MARGIN_SECONDS``)."""

TASK_MAX_TIMEOUT = 365 * 24 * 3600.0
"""Longest ``timeout=`` a submit may give (``None`` gives no limit at all)."""

TASK_MAX_MEMORY_BYTES = 1024**5
"""Largest ``memory=`` a submit may give (1 PiB: a sanity bound, not a machine)."""

TASK_MAX_RETRIES = 100
"""Most ``retries=`` a submit may give."""

TIMEOUT_MARGIN_SECONDS = 120.0
"""A lease is never extended past its start plus the task's timeout plus this margin (time for
the worker to start the call, kill it and report), so a stuck worker cannot hold a task."""

LEASE_SECONDS = 120.0
"""How long a claimed task belongs to its worker without a heartbeat. A worker heartbeats every
``LEASE_SECONDS / 4``; a lease that runs out returns the task to pending (attempt + 1)."""

MAX_ATTEMPTS = 3
"""Leases a task may lose (its worker vanished) before it fails with a clear error."""

PLACEMENT_TIMEOUT_SECONDS = 24 * 3600.0
"""A pending task that no worker seen in this long could run (none of its datacenters, its
Python version, enough cores) fails with an error saying so. 0 waits forever."""

PLACEMENT_WARNING_SECONDS = 600.0
"""*Recently*, for placement warnings: the submit answer and the tag status warn when no worker
seen in this long could run a tag's tasks (workers are seen at every claim and heartbeat, a
heartbeat every ``LEASE_SECONDS / 4``, so any live worker was seen within this)."""

WORKER_MAX_BUILDS = 64
"""Most package environments a worker reports building at once (it builds one per runner)."""

CLAIM_MAX_TASKS = 2000
"""Upper bound on tasks handed to a worker in one claim."""

MAX_SHARE = 1_000_000.0
"""Largest share an admin may give a user (shares weigh users against each other; 1 is the default)."""

CLAIM_MAX_USERS = 256
"""Most users a claim may name with a limit of their own (``ClaimIn.per_user``)."""

CLAIM_MAX_FUNCTIONS = 256
"""Most functions a claim may name with a limit of their own (``ClaimIn.per_function``)."""

# --- waiting on the API (long polls) -------------------------------------------------------
MAX_WAIT_SECONDS = 20.0
"""Longest a claim or a pull may wait on the API for work or results: the API's default cap
(``Settings.max_wait_seconds``) and the most a request may ask for. Well below the HTTP timeout
(``REQUEST_TIMEOUT_SECONDS``) and API Gateway's 30 s."""

CLAIM_WAIT_SECONDS = MAX_WAIT_SECONDS
"""How long an idle worker's claim waits on the API for tasks (``WorkerSettings.claim_wait_seconds``):
an idle worker costs the API one claim per this many seconds (1,000 idle workers: 50 claims a
second). The API answers as soon as tasks come; a worker asked to stop while its claim waits
ends the claim at once (it hangs up; the API hands back whatever it leased for it)."""

PULL_WAIT_SECONDS = 15.0
"""How long one request of a blocking ``Tag.pull`` waits on the API for results."""

COMPLETE_MAX_OBJECTS = 100
"""Most result objects a worker reports in one request."""

REJECTION_MAX_CHARS = 10_000
"""Longest reason a worker may give for rejecting a task."""

# --- listing and pulling -------------------------------------------------------------------
TASK_PAGE = 10_000
"""Task ids listed per page when reading a tag's tasks (``API.iter_tasks``, ``Tag.fetch_tasks``)."""

PULL_PAGE_TASKS = 5000
"""Finished tasks listed per page when pulling a tag."""

RESULT_FETCH_ATTEMPTS = 3
"""Pulls of one ``Tag`` that may find a result object failing verification (or missing while the
API says it exists) before its tasks fail with the reason; until then they stay open and each
pull tries the object again."""

PULL_POLL_MIN_SECONDS = 0.5
"""First pause of a blocking pull when tasks are still open and the API does not wait itself
(an API older than waiting pulls, or a ``tasks_subset`` pull); doubles up to the maximum."""

PULL_POLL_MAX_SECONDS = 10.0
"""Longest pause between two rounds of such a blocking pull."""

# --- running calls (worker and executor) -----------------------------------------------------
MAX_RESULT_BYTES = 256 * 1024**2
"""Largest JSON result (or traceback) of one call; a larger one becomes an error saying so."""

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
)
"""Environment variables set to a task's ``ncores`` in its executor process."""

PIP_INSTALL_TIMEOUT_SECONDS = 1800.0
"""Longest a worker waits for pip to build one package environment."""

# --- the local stack (`hmq up`) ------------------------------------------------------------
STACK_START_TIMEOUT_SECONDS = 60.0
"""How long ``hmq up`` waits for the API to be healthy, and then for its workers to register."""

STACK_STOP_TIMEOUT_SECONDS = 20.0
"""How long ``hmq down`` waits after SIGTERM (workers hand back their tasks) before SIGKILL."""

STACK_PROBE_TIMEOUT_SECONDS = 2.0
"""HTTP timeout of one health probe while ``hmq up`` waits for the API."""

RESULT_SLOT_SPARE = 8
"""Result upload URLs a worker asks for beyond what a report needs and keeps for the next
reports (``WorkerSettings.result_slot_spare``); each counts against the worker's unregistered
uploads until used or swept."""
