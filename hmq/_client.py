"""``hmq.API``: the user's client of one hmq deployment.

``hmq.api`` is the default instance (made by ``hmq/__init__.py``); it reads
``$HMQ_HOME/client.json`` on first use, so ``import hmq`` stays cheap and works before anything
is configured. The module has a private name so that importing it can never replace
``hmq.api``. The worker methods the user guide lists on ``hmq.API`` delegate to
``worker.session.WorkerSession``, imported when one of them is first called.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hmq import crypto, defaults, formats, provision, wire
from hmq._batching import batched
from hmq._errors import (
    BadRequest,
    ConfigurationError,
    HmqError,
    IntegrityError,
    NotFound,
    Unreachable,
    UsageError,
)
from hmq._transport import Transport
from hmq.config import ClientConfig, hmq_home

if TYPE_CHECKING:
    from worker.session import WorkerSession


class API:
    """Client of one hmq deployment.

    Args:
        url: the API's URL. Without it, the configuration under ``home`` is used.
        identity: the caller's secret key (a user's, a worker's).
        admin: the admin's public key, pinned to check compute keys and workers' certificates.
        home: where the configuration lives (default ``$HMQ_HOME`` or ``~/.hmq``).
        retry_deadline: how long a request is retried while the API, its database or the object
            store is down (seconds; default ``hmq.defaults.REQUEST_RETRY_DEADLINE_SECONDS``, 0
            sends each request once).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        identity: Optional[crypto.Identity] = None,
        admin: Optional[crypto.PublicIdentity] = None,
        *,
        home: Optional[Path] = None,
        retry_deadline: float = defaults.REQUEST_RETRY_DEADLINE_SECONDS,
    ) -> None:
        self._home = home
        self.retry_deadline = retry_deadline
        self._explicit = url is not None
        self._config = ClientConfig(url.rstrip("/"), identity, admin) if url is not None else None
        self._transport: Optional[Transport] = None
        self._compute: Optional[tuple[str, bytes]] = None
        self._session: Optional[WorkerSession] = None
        self._lock = threading.RLock()
        self._registered: OrderedDict[str, bytes] = OrderedDict()  # digest -> pickle, registered here
        self._spare_slots: deque[tuple[float, wire.UploadSlot]] = deque()  # (usable until, chunk slot)

    # --- configuration and transport ----------------------------------------------------
    @property
    def home(self) -> Path:
        """Where this client's configuration lives (``$HMQ_HOME`` unless given)."""
        return self._home or hmq_home()

    @property
    def config(self) -> ClientConfig:
        """The URL and keys in use (read from ``HMQ_HOME`` on first use)."""
        with self._lock:
            if self._config is None:
                self._config = ClientConfig.load(self.home)
            return self._config

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def identity(self) -> crypto.Identity:
        identity = self.config.identity
        if identity is None:
            raise ConfigurationError("this client has no key: run hmq.request_access(url) first")
        return identity

    @property
    def transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                self._transport = Transport(
                    self.config.url, self.config.identity, retry_deadline=self.retry_deadline, relocate=self._relocate
                )
            return self._transport

    def close(self) -> None:
        """Close network connections (the instance stays usable; a worker registered through
        it must register again)."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None
            self._session = None

    def reset(self) -> None:
        """Forget cached configuration and connections (e.g. after ``hmq up`` rewrote them)."""
        with self._lock:
            self.close()
            self._compute = None
            self._registered.clear()
            self._spare_slots.clear()
            if not self._explicit:
                self._config = None

    def _call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        try:
            return self.transport.call(method, path, body, **kwargs)
        except Unreachable:
            moved = self._relocate()  # a request sent once: the transport did not look
            if moved is None:
                raise
            self.transport.url = moved.rstrip("/")
            return self.transport.call(method, path, body, **kwargs)

    def _relocate(self) -> Optional[str]:
        """After a refused connection (the transport asks at once, before waiting): the URL the
        configuration under ``HMQ_HOME`` names now, if it moved (``hmq down; hmq up`` found the
        API's old port taken); the client then uses it. ``None`` when it did not move."""
        if self._explicit or not ClientConfig.exists(self.home):
            return None
        try:
            fresh = ClientConfig.load(self.home)
        except ConfigurationError:
            return None
        with self._lock:
            if self._config is None or fresh.url == self._config.url:
                return None
            self._config, self._compute = fresh, None
            self._spare_slots.clear()  # presigned for the old URL
            if self._transport is not None:
                self._transport.identity = fresh.identity
        return fresh.url

    # --- connecting ---------------------------------------------------------------------
    def setup(self, url: str) -> str:
        """Connect to queueing API.

        Creates this client's key (or reuses it for the same URL), pins the deployment's admin
        key and saves the configuration under ``HMQ_HOME``.

        Args:
            url: The server URL (``https://`` is assumed when no scheme is given).

        Raises:
            ValueError: Only one instance is supported: this ``HMQ_HOME`` is set up for another URL.

        Returns:
            The signing request (``ADD-USER_...``) to hand to the administrator.
        """
        url, info = _probe(url)
        existing = ClientConfig.load(self.home) if ClientConfig.exists(self.home) else None
        if existing is not None and existing.url.rstrip("/") != url:
            raise ConfigurationError(
                f"{self.home} is already set up for {existing.url}; only one instance is supported per "
                f"HMQ_HOME (set HMQ_HOME to another directory to use {url})"
            )
        identity = existing.identity if existing and existing.identity else crypto.Identity.generate()
        config = ClientConfig(url=url, identity=identity, admin=crypto.PublicIdentity.from_text(info.admin_public_key))
        config.save(self.home)
        with self._lock:
            self.close()
            self._config, self._explicit, self._compute = config, False, None
        return crypto.make_signing_request(identity, url)

    def ping(self) -> bool:
        """Test connection to server.

        Returns:
            Whether the server is reachable.
        """
        try:
            return self._call("GET", "/v1/health", signed=False, retry=False) == {"status": "ok"}
        except HmqError:
            return False

    def info(self) -> wire.Info:
        """The deployment's protocol version, limits, admin key and compute keys."""
        return self._call("GET", "/v1/info", signed=False, model=wire.Info)

    def whoami(self) -> dict[str, str]:
        """Name and role this key is granted as."""
        return self._call("GET", "/v1/whoami")

    # --- administration -----------------------------------------------------------------
    def grant_access(self, signing_request: str, adminkey: str, username: str, role: str = "user") -> wire.UserOut:
        """Signs a user request and grants access.

        The admin's certificate for the user's key is stored by the API and checked by every
        worker before it runs one of the user's tasks; the compute key's public half is
        published with it.

        Args:
            signing_request: The signing request generated with setup().
            adminkey: The admin key (``hmqadmin1_...``) or the path of a file holding it.
            username: Arbitrary username to identify the user.
            role: ``user`` (default) or ``worker``.

        Raises:
            ValueError: Admin key was not supported, or the signing request is invalid.
        """
        # An API built for a URL talks to it; hmq.api talks to the deployment the request names.
        url = self._config.url if self._explicit and self._config is not None else None
        return provision.grant_request(signing_request, adminkey, username, role, url)

    # --- keys of the deployment ----------------------------------------------------------
    def admin_key(self) -> crypto.PublicIdentity:
        """The pinned admin key (pinned on first use if the configuration has none)."""
        with self._lock:
            config = self.config
            if config.admin is None:
                config.admin = crypto.PublicIdentity.from_text(self.info().admin_public_key)
            return config.admin

    def compute_key(self) -> tuple[str, bytes]:
        """``(kid, public key)`` of the newest compute key the admin signed."""
        with self._lock:
            if self._compute is None:
                admin = self.admin_key()
                statements = self.info().compute_keys
                if not statements:
                    raise ConfigurationError(
                        "the admin has not published a compute key yet (granting access publishes it)"
                    )
                try:
                    self._compute = crypto.verify_compute_statement(statements[0], admin)
                except IntegrityError:
                    raise IntegrityError(
                        "the API serves a compute key not signed by the pinned admin key; refusing to submit"
                    ) from None
            return self._compute

    # --- functions ----------------------------------------------------------------------
    def fetch_function(self, function: str) -> wire.FunctionOut:
        """Look up one of the caller's registered functions by digest (with a presigned URL of its
        encrypted blob). Raises :class:`hmq.NotFound` if it is not registered."""
        return self._call("GET", f"/v1/functions/{function}", model=wire.FunctionOut)

    def register_function(self, remote_function: dict[str, Any], digest: str) -> bool:
        """Encrypt and upload a pickled function, once: an already registered digest is skipped.

        Args:
            remote_function: ``{"callable": <cloudpickle bytes>}``.
            digest: SHA-256 (hex) of the pickle.
        """
        pickled = remote_function["callable"]
        if hashlib.sha256(pickled).hexdigest() != digest:
            raise UsageError("digest does not match the pickled function")
        with self._lock:
            if digest in self._registered:  # by this client: the submit says if a worker found it corrupt since
                self._registered.move_to_end(digest)
                return True
        try:
            if not self.fetch_function(digest).corrupt:
                self._remember_function(digest, pickled)
                return True  # registered before; a corrupt copy is replaced below
        except NotFound:
            pass
        kid, public = self.compute_key()
        digest, blob = formats.encode_function(pickled, public, kid)
        slot = self._upload_slots("function", 1)[0]
        self.transport.put_object(slot.url, blob)
        self._call(
            "POST",
            "/v1/functions",
            wire.FunctionIn(digest=digest, key=slot.key, size=len(blob)),
            model=wire.FunctionOut,
        )
        self._remember_function(digest, pickled)
        return True

    def _remember_function(self, digest: str, pickled: bytes) -> None:
        if len(pickled) > defaults.FUNCTION_REGISTRY_BYTES:
            return
        with self._lock:
            self._registered[digest] = pickled
            while len(self._registered) > defaults.FUNCTION_REGISTRY:
                self._registered.popitem(last=False)

    def _replace_function(self, digest: str) -> bool:
        """After a submit was refused because the stored copy of function ``digest`` is corrupt
        (a worker said so): upload it again, if this client still has it; whether it did."""
        with self._lock:
            pickled = self._registered.pop(digest, None)
        if pickled is None:
            return False
        return self.register_function({"callable": pickled}, digest)

    def _upload_slots(self, kind: str, count: int) -> list[wire.UploadSlot]:
        out = self._call("POST", "/v1/uploads", {"kind": kind, "count": count}, model=wire.UploadsOut)
        return out.slots

    def _chunk_slots(self, count: int) -> list[wire.UploadSlot]:
        """``count`` chunk upload slots: kept ones first (while within half their lifetime),
        then new ones, asking for ``defaults.SPARE_UPLOAD_SLOTS`` more to keep."""
        with self._lock:
            now = time.monotonic()
            while self._spare_slots and self._spare_slots[0][0] <= now:
                self._spare_slots.popleft()
            kept = [self._spare_slots.popleft()[1] for _ in range(min(count, len(self._spare_slots)))]
        if len(kept) == count:
            return kept
        need = count - len(kept)
        try:
            out = self._call("POST", "/v1/uploads", {"kind": "chunk", "count": need + defaults.SPARE_UPLOAD_SLOTS})
        except BadRequest as exc:
            if exc.code != "upload_quota":
                raise
            return kept + self._upload_slots("chunk", need)  # no room for spares
        answer = wire.UploadsOut.model_validate(out)
        usable_until = time.monotonic() + answer.expires_in / 2
        with self._lock:
            self._spare_slots.extend((usable_until, slot) for slot in answer.slots[need:])
        return kept + answer.slots[:need]

    # --- submitting ---------------------------------------------------------------------
    def submit_tasks(
        self,
        tag: str,
        digest: str,
        calls: Iterable[Any],
        ncores: int = 1,
        datacenters: Optional[list[str]] = None,
        *,
        packages: Sequence[str] = (),
        progress: Any = None,
        sink: Optional[Callable[[list[str]], Any]] = None,
        timeout: Optional[float] = defaults.TASK_TIMEOUT_SECONDS,
        memory: Optional[int | str] = None,
        retries: int = 0,
        function_name: str = "",
        warnings: Optional[list[str]] = None,
    ) -> list[str]:
        """Encrypt, upload and register calls of a registered function under ``tag``.

        When the API says that no worker seen recently can run the calls (their Python version,
        cores, memory or datacenters), each reason is shown as a ``UserWarning`` once all are
        registered; the tasks stay queued.

        Args:
            tag: full tag name.
            digest: the function's digest (see :meth:`register_function`).
            calls: ``(args, kwargs)`` pairs, or calls pickled as ``cloudpickle.dumps((args, kwargs))``.
            ncores: cores each call needs.
            datacenters: names of the datacenters allowed to run the calls (default: any).
            packages: PEP 508 requirements of packages on the workers' index, installed in the
                calls' environment (no direct references, URLs, paths or pip options).
            progress: optional object with ``update(n)`` (e.g. a tqdm bar).
            sink: receives the task ids of each registered batch, in submission order (then
                nothing is returned: a million ids need not sit in a list).
            timeout: wall time per call in seconds (default 6 h); ``None``: no limit.
            memory: address space per call, bytes or a size like ``"4GiB"``; ``None``: no limit.
            retries: how many times a call that failed runs again.
            function_name: the function's name, which workers' messages about it use.
            warnings: a list that receives those reasons instead of them being shown.

        Returns:
            The task ids, in submission order (empty when a ``sink`` took them).
        """
        from hmq._submit import Submission, warn_placement
        from hmq.limits import Limits

        limits = Limits.of(timeout, memory, retries)
        submission = Submission(self, tag, digest, ncores, datacenters, packages, limits, function_name)
        ids = submission.run(calls, progress, sink)
        if warnings is None:
            warn_placement(tag, submission.warnings)
        else:
            warnings += submission.warnings
        return ids

    # --- tags and tasks ------------------------------------------------------------------
    def get_tag_status(self, tag: str) -> dict[str, Any]:
        """Fetch task statistics for a given tag.

        Args:
            tag: The tag to inspect.

        Returns:
            Task status counts (``pending``, ``running``, ``completed``, ``failed``,
            ``cancelled``, ``total``) and ``warnings``: why pending tasks wait (no worker seen
            recently can run them, and what is missing) and the package environments workers
            are building for them, as sentences.
        """
        return self._call("GET", f"/v1/tags/{tag}", model=wire.TagStatus).model_dump(exclude={"tag"})

    def list_tags(self) -> list[wire.TagSummary]:
        """The caller's tags, oldest first, with their tasks per state."""
        return [wire.TagSummary.model_validate(t) for t in self._call("GET", "/v1/tags")]

    def tag_summary(self, tag: str) -> wire.TagSummary:
        """One tag's entry of :meth:`list_tags`. Raises :class:`hmq.NotFound` for an unknown tag."""
        found = self._call("GET", "/v1/tags", params={"tag": tag})
        if not found:
            raise NotFound("unknown_tag", f"unknown tag {tag!r}")
        return wire.TagSummary.model_validate(found[0])

    def iter_tasks(self, tag: str, page: int = defaults.TASK_PAGE) -> Iterator[list[str]]:
        """Pages of the tag's task ids, in submission order."""
        after: Optional[str] = None
        while True:
            out = self._call(
                "GET", f"/v1/tags/{tag}/tasks", params={"after": after, "limit": page}, model=wire.TaskPage
            )
            if out.tasks:
                yield [str(t) for t in out.tasks]
            if out.next is None:
                return
            after = out.next

    def find_tasks(self, tag: str) -> list[str]:
        """All task ids of a tag, in submission order."""
        return [t for page in self.iter_tasks(tag) for t in page]

    def get_tasks_status(self, tasks: list[str]) -> dict[str, Optional[str]]:
        """State of each task (``None`` for unknown or deleted ones)."""
        out: dict[str, Optional[str]] = {}
        for part in batched(tasks, defaults.MAX_TASKS_PER_REQUEST):
            out.update(self._call("POST", "/v1/tasks/status", {"tasks": part}, model=wire.TaskStatusOut).statuses)
        return out

    def done_page(
        self, tag: str, cursor: str = "", limit: int = defaults.PULL_PAGE_TASKS, wait: float = 0.0
    ) -> wire.DonePage:
        """One page of a tag's finished tasks after ``cursor`` (see ``Tag.pull``). With
        ``wait``, the API holds an answer with nothing new up to that long (cut to its limit)
        until some of the tag's tasks finish; the page's ``wait`` says what it allowed."""
        params: dict[str, Any] = {"cursor": cursor, "limit": limit}
        if wait > 0:
            params["wait"] = round(wait, 3)
        return self._call("GET", f"/v1/tags/{tag}/done", params=params, model=wire.DonePage)

    def lookup(self, tasks: list[str]) -> wire.DonePage:
        """Finished-task listing for specific ids (at most ``MAX_TASKS_PER_REQUEST``)."""
        return self._call("POST", "/v1/tasks/results", {"tasks": tasks}, model=wire.DonePage)

    def fetch_results(self, obj: wire.DoneObject) -> list[formats.ResultRecord]:
        """Download, verify and decrypt one result object."""
        blob = self.transport.get_object(obj.url)
        return list(formats.decode_results(blob, self.identity, self.admin_key()))

    def result_object_exists(self, key: str) -> bool:
        """Whether the API finds the result object ``key`` (of the caller's tasks) in the object
        store; ``False`` also when no task of the caller is in it any more."""
        try:
            out = self._call("GET", f"/v1/results/{key}", model=wire.ResultObjectOut)
        except NotFound:
            return False
        return out.size is not None

    def retrieve_results(self, tasks: list[str]) -> dict[str, Optional[dict[str, Any]]]:
        """Results of specific tasks: ``{id: {"status", "result", "error"}}``, ``None`` while open
        or unknown."""
        out: dict[str, Optional[dict[str, Any]]] = {t: None for t in tasks}
        for part in batched(tasks, defaults.MAX_TASKS_PER_REQUEST):
            page = self.lookup(part)
            for closed in page.closed:
                out[str(closed.id)] = {"status": closed.status, "result": None, "error": closed.error}
            wanted = set(part)
            for obj in page.objects:
                for rec in self.fetch_results(obj):
                    if rec.task_id in wanted:
                        value = formats.decompress(rec.payload)
                        out[rec.task_id] = (
                            {"status": "failed", "result": None, "error": value.decode()}
                            if rec.is_error
                            else {"status": "completed", "result": _loads(value), "error": None}
                        )
        return out

    def _select(self, path: str, tasks: Optional[list[str]], tag: Optional[str]) -> list[str]:
        if (tasks is None) == (tag is None):
            raise UsageError("name either tasks or a tag")
        done: list[str] = []
        if tag is not None:
            while True:
                out = self._call("POST", path, {"tag": tag}, model=wire.TaskIdsOut)
                done += [str(t) for t in out.tasks]
                if not out.more:
                    return done
        for part in batched(list(tasks or []), defaults.MAX_TASKS_PER_REQUEST):
            done += [str(t) for t in self._call("POST", path, {"tasks": part}, model=wire.TaskIdsOut).tasks]
        return done

    def cancel_tasks(self, tasks: Optional[list[str]] = None, tag: Optional[str] = None) -> list[str]:
        """Cancels tasks in the queue.

        Identification of tasks may be done either by complete list of task ids or tag names.

        Args:
            tasks: List of task ids. Defaults to None.
            tag: Tag name. Defaults to None.

        Returns:
            List of task ids canceled (those still pending or running).
        """
        return self._select("/v1/tasks/cancel", tasks, tag)

    def delete_tasks(self, tasks: Optional[list[str]] = None, tag: Optional[str] = None) -> list[str]:
        """Deletes tasks from the queue, with their stored calls and results.

        Identification of tasks may be done either by complete list of task ids or tag names.

        Args:
            tasks: List of task ids. Defaults to None.
            tag: Tag name. Defaults to None.

        Returns:
            List of task ids deleted.
        """
        return self._select("/v1/tasks/delete", tasks, tag)

    # --- the worker's side (delegates to worker.session) ---------------------------------
    def _worker_session(self) -> WorkerSession:
        """The worker session behind the worker methods below (made on first use, with this
        client's transport and key; the key must be granted the ``worker`` role)."""
        from worker.session import WorkerSession

        with self._lock:
            if self._session is None:
                self._session = WorkerSession(self.transport)
            return self._session

    def register_worker(self, datacenter: str, cores: int, python: Optional[str] = None) -> wire.WorkerOut:
        """Register this client as a worker (see ``worker.session.WorkerSession.register``)."""
        return self._worker_session().register(datacenter, cores, python)

    def dequeue_tasks(
        self,
        datacenter: str,
        packagelists: Optional[dict[str, Any]] = None,
        maxtasks: int = 1,
        available: int = 1,
        allocated: int = 0,
        running: int = 0,
        used: int = 0,
    ) -> wire.ClaimOut:
        """Claim up to ``maxtasks`` tasks for this worker under a lease.

        Args:
            datacenter: the worker's datacenter (it registers with it on first use).
            packagelists: ignored: the API places tasks by datacenter, Python version and
                cores; package environments are built on demand by the worker.
            maxtasks: most tasks to claim.
            available: free cores; only tasks needing at most this many are handed out.
            allocated, running, used: the worker's load, recorded for operators.
        """
        session = self._worker_session()
        if session.worker_id is None:
            session.register(datacenter, max(available, allocated, 1))
        return session.claim(maxtasks, available, allocated=allocated, running=running, used=used)

    def result_slots(self, count: int) -> list[wire.UploadSlot]:
        """Presigned PUT URLs for result objects of this worker."""
        return self._worker_session().result_slots(count)

    def store_results(self, results: wire.CompleteIn | dict[str, Any]) -> wire.CompleteOut:
        """Report uploaded result objects, rejected tasks and released tasks."""
        body = results if isinstance(results, wire.CompleteIn) else wire.CompleteIn.model_validate(results)
        return self._worker_session().complete(body)

    def sync_tasks(self, datacenter: str, known: list[str]) -> list[str]:
        """Extend this worker's leases; return those of ``known`` it should drop (cancelled,
        deleted or re-leased).

        ``datacenter`` is ignored: the worker named its datacenter when it registered, and the
        API knows it by its worker id since.
        """
        return self._worker_session().heartbeat(known)

    def missing_dependencies(
        self, datacenter: str, installlist: Sequence[Sequence[str]] | str | os.PathLike[str], python_version: str
    ) -> list[list[str]]:
        """Package sets that pending tasks for ``datacenter`` need and that are not in
        ``installlist`` (a list of package sets, or a file with one set per line)."""
        return self._worker_session().missing_dependencies(datacenter, installlist, python_version)

    def warm_cache(self, function: str, payload: bytes, user: str = "") -> None:
        """Keep a verified pickled function in this client's worker session, for the tasks of
        ``user`` (a key id). Raises :class:`hmq.IntegrityError` if it does not match ``function``."""
        self._worker_session().functions.put(user, function, payload)


def _loads(raw: bytes) -> Any:
    import json

    return json.loads(raw)


def _probe(url: str) -> tuple[str, wire.Info]:
    """Find the API behind ``url`` (adding https:// or http:// when no scheme is given)."""
    url = url.strip().rstrip("/")
    candidates = [url] if "://" in url else [f"https://{url}", f"http://{url}"]
    problems = []
    for candidate in candidates:
        transport = Transport(candidate, None, retry_deadline=1.0)
        try:
            info = transport.call("GET", "/v1/info", signed=False, model=wire.Info)
        except HmqError as exc:
            problems.append(f"{candidate}: {exc}")
            continue
        finally:
            transport.close()
        if not info.min_protocol <= defaults.PROTOCOL_VERSION <= info.protocol:
            raise ConfigurationError(
                f"the API at {candidate} speaks protocol {info.min_protocol}-{info.protocol}; this hmq speaks "
                f"{defaults.PROTOCOL_VERSION} (upgrade {'hmq' if info.min_protocol > defaults.PROTOCOL_VERSION else 'the API'})"
            )
        return candidate, info
    raise ConfigurationError("instance is not reachable: " + "; ".join(problems))
