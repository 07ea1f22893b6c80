"""``hmq.Tag``: a set of tasks and their results, kept in a SQLite database.

Until :meth:`Tag.to_file` links it to a file, the database is SQLite's private temporary one
(an empty file name): it stays in SQLite's page cache while small and spills to a temporary file
that SQLite deletes on close when large, so a tag of a million task ids costs a few MB of the
client's memory, not the ~150 MB an in-memory database would hold. Its tables:

- ``meta(key, value)``: ``format`` (``hmq-tag``), ``schema_version``, ``name``, ``cursor``
  (how far :meth:`Tag.pull` has read the queue);
- ``tasks(seq, id, status, result, error, logs)``: one row per task in submission order;
  ``result`` is the zstandard-compressed JSON the worker produced, ``error`` the traceback text,
  ``logs`` the zstandard-compressed output (stdout and stderr) of the call, if it wrote any.

Schema versions: 1 had no ``logs`` column; :meth:`Tag.from_file` adds it to such a file.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, cast

from hmq import defaults, formats, wire
from hmq._batching import batched
from hmq._errors import HmqError, IntegrityError, NotFound, PullTimeout, StorageError, TagFileError, UsageError
from hmq._progress import PullProgress, open_bar, short_name

if TYPE_CHECKING:
    from hmq._client import API

log = logging.getLogger("hmq")

SCHEMA_VERSION = 2
FORMAT = "hmq-tag"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error TEXT,
    logs BLOB
);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks(status) WHERE status = 0;
"""
_COLUMNS = {"meta": ("key", "value"), "tasks": ("seq", "id", "status", "result", "error")}
"""The columns a tag file must have (checked, read-only, before :meth:`Tag.from_file` opens it)."""


class LocalState(enum.IntEnum):
    """A task's state as this tag file knows it."""

    OPEN = 0  # neither result nor error yet
    COMPLETED = 1
    FAILED = 2
    CANCELLED = 3
    DELETED = 4  # gone from the queue before it finished


_PRIVATE = ""
"""SQLite's name for a private temporary database: bounded memory, unlike ``":memory:"``."""

_FROM_SERVER = {"completed": LocalState.COMPLETED, "failed": LocalState.FAILED, "cancelled": LocalState.CANCELLED}
_Row = tuple[int, Optional[bytes], Optional[str], Optional[bytes], str]
"""A finished task's row update: status, result, error, logs, id."""
_Fetched = tuple[list[formats.ResultRecord], Optional[str], bool]
"""What became of one result object: its records, what went wrong, whether that is final."""


def default_client() -> API:
    """``hmq.api``, the default client (looked up when needed, so it is made on first use)."""
    import hmq

    return hmq.api


class Tag:
    """Represents a collection of tasks.

    Attributes:
        name: the tag's name in the queue (``<function or tag>_<uuid>``).
        results: generator yielding all results in submission order (``None`` where missing).
        errors: generator yielding all errors in submission order (``None`` where missing).
        logs: generator yielding each task's output in submission order (``None`` where nothing
            was printed, or the task has not finished).
        n_results: number of results.
        n_errors: number of errors.
    """

    _progress = PullProgress()
    """What the running pull shows (a bar, or nothing)."""

    def __init__(self, name: str, api: Optional[API] = None) -> None:
        self._api = api
        self._filename: Optional[str] = None
        self._downloads = 4
        self._fetch_failures: dict[str, int] = {}
        self._failed_this_round: set[str] = set()
        self._db = self._connect(_PRIVATE)
        self._set_meta(format=FORMAT, schema_version=str(SCHEMA_VERSION), name=name, cursor="")
        self._db.commit()

    # --- database plumbing ----------------------------------------------------------------
    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, check_same_thread=False)
        db.executescript(_SCHEMA)
        if target != _PRIVATE:
            db.execute("PRAGMA journal_mode=WAL")
        return db

    def _set_meta(self, **values: str) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())

    def _meta(self, key: str) -> Optional[str]:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def api(self) -> API:
        return self._api or default_client()

    @property
    def name(self) -> str:
        return self._meta("name") or ""

    @name.setter
    def name(self, value: str) -> None:
        try:
            wire.check_name(value)
        except ValueError as exc:
            raise UsageError(f"tag name {value!r} {exc}") from None
        self._set_meta(name=value, cursor="")
        self._db.commit()

    @property
    def filename(self) -> Optional[str]:
        """The file this tag is linked to, if any."""
        return self._filename

    def add_tasks(self, ids: Iterable[str]) -> int:
        """Record task ids (in order); ids already present are skipped. Returns how many were new."""
        before = self._db.total_changes
        self._db.executemany("INSERT OR IGNORE INTO tasks(id) VALUES (?)", ((i,) for i in ids))
        self._db.commit()
        return self._db.total_changes - before

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM tasks").fetchone()[0]

    def __repr__(self) -> str:
        return f"Tag({self.name!r}, tasks={len(self)}, results={self.n_results}, errors={self.n_errors})"

    # --- reading --------------------------------------------------------------------------
    def _column(self, column: str) -> Generator[Any, None, None]:
        try:
            cursor = self._db.execute(f"SELECT {column} FROM tasks ORDER BY seq")
            try:
                for batch in iter(lambda: cursor.fetchmany(1000), []):
                    yield from batch
            finally:
                cursor.close()
        except sqlite3.DatabaseError as exc:
            raise TagFileError(f"{self._filename or 'the tag'} is damaged: {exc}") from None

    def _decode(self, task_id: str, raw: bytes) -> Any:
        """A stored result: decompressed (at most ``MAX_RESULT_BYTES``) and parsed."""
        try:
            return json.loads(formats.decompress(raw))
        except (IntegrityError, ValueError) as exc:
            raise TagFileError(
                f"{self._filename or 'the tag'}: the result of task {task_id} is corrupt: {exc}"
            ) from None

    @property
    def results(self) -> Generator[Any, None, None]:
        """Generator yielding all results, in submission order.

        Yields:
            The result, or None if the task has not been completed or an error occurred.
        """
        for task_id, raw in self._column("id, result"):
            yield None if raw is None else self._decode(task_id, raw)

    @property
    def errors(self) -> Generator[Optional[str], None, None]:
        """Generator yielding all errors, in submission order.

        Yields:
            The error (the remote traceback), or None if the task has not been completed or
            an error has not occurred.
        """
        for (error,) in self._column("error"):
            yield error

    @property
    def logs(self) -> Generator[Optional[str], None, None]:
        """Generator yielding what each task wrote to stdout and stderr, in submission order.

        Yields:
            The output as text, interleaved in the order it was written (by the call and the
            processes it started), or None if the task printed nothing or has not finished. A
            worker keeps a limited amount per call (1 MiB by default): of a call that printed
            more, the first and last halves, with a note saying how much was left out.
        """
        for (raw,) in self._column("logs"):
            yield None if raw is None else formats.decompress(raw).decode("utf-8", "replace")

    @property
    def task_ids(self) -> Generator[str, None, None]:
        """Task ids in submission order."""
        for (task_id,) in self._column("id"):
            yield task_id

    def failures(self, limit: Optional[int] = None) -> list[tuple[str, str, Optional[str]]]:
        """The failed tasks pulled so far, in submission order: ``(task id, error, output)``
        (output ``None`` where the task printed nothing), at most ``limit`` of them."""
        query = "SELECT id, error, logs FROM tasks WHERE status = ? ORDER BY seq"
        params: tuple[int, ...] = (int(LocalState.FAILED),)
        if limit is not None:
            query, params = query + " LIMIT ?", (*params, limit)
        try:
            rows = self._db.execute(query, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise TagFileError(f"{self._filename or 'the tag'} is damaged: {exc}") from None
        return [
            (t, error or "", None if raw is None else formats.decompress(raw).decode("utf-8", "replace"))
            for t, error, raw in rows
        ]

    def _count(self, state: LocalState) -> int:
        return self._db.execute("SELECT count(*) FROM tasks WHERE status = ?", (int(state),)).fetchone()[0]

    @property
    def n_results(self) -> int:
        """Count the number of results."""
        return self._count(LocalState.COMPLETED)

    @property
    def n_errors(self) -> int:
        """Count the number of errors."""
        return self._count(LocalState.FAILED)

    @property
    def states(self) -> dict[str, int]:
        """Number of tasks per local state (open, completed, failed, cancelled, deleted)."""
        counts = dict(self._db.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        return {s.name.lower(): counts.get(int(s), 0) for s in LocalState}

    # --- talking to the queue --------------------------------------------------------------
    def cancel(self) -> list[str]:
        """Cancels all remaining tasks in the queue. Returns the ids cancelled."""
        ids = self.api.cancel_tasks(tag=self.name)
        self._mark(ids, LocalState.CANCELLED)
        return ids

    def delete(self, downloaded_only: bool = False) -> list[str]:
        """Delete data from the queue (tasks, their calls and stored results).

        Args:
            downloaded_only: only delete tasks whose result or error is in this tag already.

        Returns:
            The ids deleted. Local results stay; tasks deleted before finishing are marked so
            that :meth:`pull` does not wait for them.
        """
        if downloaded_only:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM tasks WHERE status IN (?, ?)", (int(LocalState.COMPLETED), int(LocalState.FAILED))
                )
            ]
            return self.api.delete_tasks(tasks=ids) if ids else []
        ids = self.api.delete_tasks(tag=self.name)
        self._mark(ids, LocalState.DELETED)
        return ids

    def fetch_tasks(self) -> int:
        """Adds all remaining tasks in the queue for this tag.

        Existing tasks in this tag remain available.

        Returns:
            Number of tasks added.
        """
        return sum(self.add_tasks(page) for page in self.api.iter_tasks(self.name))

    def _mark(self, ids: Iterable[str], state: LocalState) -> None:
        self._db.executemany("UPDATE tasks SET status = ? WHERE id = ? AND status = 0", ((int(state), i) for i in ids))
        self._db.commit()

    def _open_ids(self, subset: Optional[set[str]] = None) -> list[str]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM tasks WHERE status = 0 ORDER BY seq")]
        return ids if subset is None else [i for i in ids if i in subset]

    def _fetch(self, obj: wire.DoneObject) -> _Fetched:
        """``(records, problem, final)`` of one result object: its records, or what went wrong
        with it and whether that is final (the API confirms the object is gone). A failed
        verification or a missing object the API still sees is not final: the tasks stay open
        (see :meth:`_settle`). A transient failure (no answer from the store) raises."""
        try:
            return self.api.fetch_results(obj), None, False
        except IntegrityError as exc:
            return [], f"the result object {obj.key} failed verification and was not used: {exc}", False
        except StorageError as exc:
            if exc.store_status not in (403, 404, 410):
                raise
            if not self.api.result_object_exists(obj.key):
                return [], f"the result object {obj.key} is gone from the object store (deleted or expired)", True
            return [], f"the result object {obj.key} could not be downloaded: {exc}", False

    def _settle(self, obj: wire.DoneObject, problem: Optional[str], final: bool) -> tuple[bool, Optional[str]]:
        """``(stay_open, reason)``: whether the object's tasks stay open for the next pull to try
        again (reported as a warning, up to ``RESULT_FETCH_ATTEMPTS`` times), else why they fail
        (``None``: they have their results)."""
        if problem is None or final:
            self._fetch_failures.pop(obj.key, None)
            return False, problem
        failures = self._fetch_failures.get(obj.key, 0) + 1
        self._fetch_failures[obj.key] = failures
        self._failed_this_round.add(obj.key)  # tried once per round of a pull
        if failures >= defaults.RESULT_FETCH_ATTEMPTS:
            return False, f"{problem} (tried {failures} times)"
        log.warning(
            "%s; its %d task(s) stay open and the next pull tries again (%d of %d)",
            problem,
            len(obj.tasks),
            failures,
            defaults.RESULT_FETCH_ATTEMPTS,
        )
        return True, None

    def _apply(self, page: wire.DonePage, pool: ThreadPoolExecutor) -> None:
        """Store one page of finished tasks; the rows of each result object are written as it
        arrives (see :meth:`_fetched`)."""
        rows: list[_Row] = [
            (int(_FROM_SERVER.get(c.status, LocalState.FAILED)), None, c.error, None, str(c.id)) for c in page.closed
        ]
        update = "UPDATE tasks SET status = ?, result = ?, error = ?, logs = ? WHERE id = ? AND status = 0"
        before = self._db.total_changes
        self._db.executemany(update, rows)
        objects = [o for o in page.objects if o.key not in self._failed_this_round]
        for obj, (records, problem, final) in self._fetched(objects, pool):
            stay_open, failure = self._settle(obj, problem, final)
            if not stay_open:
                self._db.executemany(update, self._rows(obj, records, failure))
            received = sum(len(r.payload) + len(r.log or b"") for r in records)
            self._progress.advance(self._db.total_changes - before, received)
            before = self._db.total_changes
        self._db.executemany(
            "UPDATE tasks SET status = ? WHERE id = ? AND status = 0",
            ((int(LocalState.DELETED), str(t)) for t in page.unknown),
        )
        self._progress.advance(self._db.total_changes - before, 0)

    def _fetched(
        self, objects: list[wire.DoneObject], pool: ThreadPoolExecutor
    ) -> Iterator[tuple[wire.DoneObject, _Fetched]]:
        """Each object with what :meth:`_fetch` made of it, in order: downloaded in parallel
        through a window of ``2 * workers`` (memory stays at a few objects); a lone object (a
        call waited for) here, without a hop to a pool thread and back."""
        if len(objects) == 1:
            yield objects[0], self._fetch(objects[0])
            return
        window: deque[tuple[wire.DoneObject, Future[_Fetched]]] = deque()
        ahead = iter(objects)
        while True:
            while len(window) < 2 * self._downloads and (obj := next(ahead, None)) is not None:
                window.append((obj, pool.submit(self._fetch, obj)))
            if not window:
                return
            obj, future = window.popleft()
            yield obj, future.result()

    @staticmethod
    def _rows(obj: wire.DoneObject, records: list[formats.ResultRecord], problem: Optional[str]) -> list[_Row]:
        wanted = {str(t) for t in obj.tasks}
        if problem is not None:
            return [(int(LocalState.FAILED), None, problem, None, t) for t in sorted(wanted)]
        rows: list[_Row] = []
        for rec in records:
            if rec.task_id not in wanted:
                continue  # the API did not accept this result (e.g. the task was cancelled)
            if rec.is_error:
                error = formats.decompress(rec.payload).decode()
                rows.append((int(LocalState.FAILED), None, error, rec.log, rec.task_id))
            else:
                rows.append((int(LocalState.COMPLETED), rec.payload, None, rec.log, rec.task_id))
        return rows

    def _reconcile(self, ids: Sequence[str], pool: ThreadPoolExecutor, batchsize: int) -> None:
        """Ask for specific open tasks: results the listing missed, and tasks deleted meanwhile."""
        size = max(1, min(batchsize, defaults.MAX_TASKS_PER_REQUEST))
        for part in batched(ids, size):
            self._apply(self.api.lookup(part), pool)
            self._db.commit()

    def _pull_once(
        self, batchsize: int, subset: Optional[set[str]], pool: ThreadPoolExecutor, wait: float = 0.0
    ) -> tuple[int, bool]:
        """One round: ``(tasks still open, whether the API waited all of ``wait`` for news and
        had none)``. The round's first request asks the API to wait (a subset pull never does)."""
        self._failed_this_round = set()
        if subset is not None:
            self._reconcile(self._open_ids(subset), pool, max(batchsize, defaults.PULL_PAGE_TASKS))
            return len(self._open_ids(subset)), False
        if self._count(LocalState.OPEN) == 0:
            return 0, False
        cursor = self._meta("cursor") or ""
        limit = max(batchsize, defaults.PULL_PAGE_TASKS)
        waited = False
        while True:
            try:
                page = self.api.done_page(self.name, cursor, limit, wait)
            except NotFound:
                # The whole tag was deleted from the queue: its tasks will never finish.
                self._reconcile(self._open_ids(), pool, limit)
                return self._count(LocalState.OPEN), False
            if wait > 0:
                news = page.objects or page.closed or page.unknown or page.more or page.open == 0
                waited, wait = page.wait > 0 and not news, 0.0
            self._apply(page, pool)
            cursor = page.cursor
            self._set_meta(cursor=cursor)
            self._db.commit()
            if not page.more:
                break
        if page.open == 0 and self._count(LocalState.OPEN):
            # Nothing is running, yet some tasks are still open here: they were deleted, or
            # finished in a transaction the cursor had already passed. Ask for them by id.
            self._reconcile(self._open_ids(), pool, limit)
        return self._count(LocalState.OPEN), waited

    def pull(
        self,
        blocking: bool = False,
        batchsize: int = 100,
        tasks_subset: Optional[list[str]] = None,
        workers: int = 4,
        quiet: Optional[bool] = None,
        timeout: Optional[float] = None,
    ) -> int:
        """Downloads data from the queue for all tasks in the tag.

        A blocking pull waits on the API: each round asks it to hold the answer until some of
        the tag's tasks finish (up to ``PULL_WAIT_SECONDS`` per request), so a result is
        pulled as soon as it is reported. (A ``tasks_subset`` pull, or an API that does not
        wait, is asked again after a pause of 0.5 s doubling to 10 s.)

        Args:
            blocking: Whether to retry downloading until all data has been fetched. Defaults to False.
            batchsize: Tasks asked for per request; pages grow to ``PULL_PAGE_TASKS`` for large tags.
            tasks_subset: Subset of tasks to download. Defaults to None.
            workers: Number of parallel downloads. Defaults to 4.
            quiet: ``True``: no progress bar; ``False``: a bar even when stderr is not a
                terminal; ``None`` (default): a bar on a terminal or in a notebook only. The bar
                counts finished tasks of the tag, with results/s, MB/s, the ETA and, while it
                waits, the tag's running and pending tasks and the API's notes about them
                (e.g. a package environment being built). A blocking pull that drew a bar
                leaves a one-line summary.
            timeout: With ``blocking``, the most seconds to wait; then :class:`hmq.PullTimeout`
                (a ``TimeoutError``) says how many tasks are still open. Defaults to None
                (wait for all).

        Returns:
            Number of remaining tasks for which neither result nor error is available (tasks
            cancelled or deleted in the queue do not count: they will never have one).
        """
        subset = set(tasks_subset) if tasks_subset is not None else None
        self._downloads = max(1, workers)
        progress = self._progress = self._open_progress(subset, quiet)
        try:
            remaining = self._pull_rounds(blocking, batchsize, subset, timeout)
        except BaseException:
            progress.close()
            raise
        finally:
            self._progress = PullProgress()
        if blocking:
            progress.finish(self.name, self.n_results, self.n_errors, remaining)
        else:
            progress.close()
        return remaining

    def _open_progress(self, subset: Optional[set[str]], quiet: Optional[bool]) -> PullProgress:
        """A bar over the tag's (or the subset's) tasks, unless all of them are finished here."""
        still_open = len(self._open_ids(subset)) if subset is not None else self._count(LocalState.OPEN)
        if quiet is True or still_open == 0:
            return PullProgress()
        total = len(subset) if subset is not None else len(self)
        bar = open_bar(total, f"Pulling {short_name(self.name)}", " tasks", quiet, initial=total - still_open)
        return PullProgress(bar)

    def _pull_rounds(self, blocking: bool, batchsize: int, subset: Optional[set[str]], timeout: Optional[float]) -> int:
        """Pull rounds until nothing is open (or once, not ``blocking``); each round of a
        blocking pull waits on the API for results, at most until ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with ThreadPoolExecutor(self._downloads, thread_name_prefix="hmq-pull") as pool:
            if blocking:
                self._show_status()
            first = min(defaults.PULL_WAIT_SECONDS, timeout if timeout is not None else math.inf) if blocking else 0.0
            remaining, _ = self._pull_once(batchsize, subset, pool, max(first, 0.0))
            pause = defaults.PULL_POLL_MIN_SECONDS
            while blocking and remaining:
                left = math.inf if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise self._timed_out(remaining, cast(float, timeout))
                self._show_status()
                before = remaining
                remaining, waited = self._pull_once(batchsize, subset, pool, min(defaults.PULL_WAIT_SECONDS, left))
                if remaining < before or waited:  # news, or the API waited for it: ask again at once
                    pause = defaults.PULL_POLL_MIN_SECONDS
                    continue
                time.sleep(max(0.0, min(pause, left)))
                pause = min(pause * 2, defaults.PULL_POLL_MAX_SECONDS)
        return remaining

    def _timed_out(self, remaining: int, timeout: float) -> PullTimeout:
        """The error of a blocking pull out of time, naming the open tasks' states in the queue."""
        try:
            states = self.api.get_tag_status(self.name)
        except HmqError:
            return PullTimeout(self.name, remaining, timeout)
        detail = ", ".join(f"{states[s]} {s}" for s in ("pending", "running") if states.get(s))
        return PullTimeout(self.name, remaining, timeout, f" (in the queue: {detail})" if detail else "")

    def _show_status(self) -> None:
        """The tag's running and pending tasks and notes, in the bar (if one is drawn), while a
        pull waits."""
        if not self._progress.active:
            return
        try:
            self._progress.show_status(self.api.get_tag_status(self.name))
        except NotFound:
            pass  # the tag is gone: the next round finds its tasks deleted

    # --- files ------------------------------------------------------------------------------
    def to_file(self, filename: str | os.PathLike[str], stay_linked: bool = False, overwrite: bool = False) -> None:
        """Exports the current state to a file.

        Args:
            filename: Export destination.
            stay_linked: If True, switches this tag to a file-based database: later pulls
                write there, and memory use stays flat however many results arrive.
            overwrite: Replace an existing file.
        """
        path = Path(filename)
        if self._filename is not None and path.resolve() == Path(self._filename).resolve():
            self._db.commit()
            return
        if path.exists():
            if not overwrite:
                raise TagFileError(f"{path} exists; pass overwrite=True to replace it")
            path.unlink()
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        target = sqlite3.connect(str(path))
        try:
            self._db.commit()
            self._db.backup(target)
        finally:
            target.close()
        if stay_linked:
            old = self._db
            self._db = self._connect(str(path))
            self._filename = str(path)
            old.close()

    @staticmethod
    def from_file(filename: str | os.PathLike[str]) -> Tag:
        """Loads a tag and all results for all tasks from a file.

        The returned tag stays linked to the file. The file is checked first, read-only, so
        nothing is ever written to a file that is not an hmq tag file.

        Raises:
            TagFileError: (a ``ValueError``) if the file does not exist, is not an hmq tag file,
                has an unknown schema version, lacks a table or column, or is damaged; the
                message says which.
        """
        path = Path(filename)
        if not path.is_file():
            raise TagFileError(f"tag file {path} does not exist" if not path.exists() else f"{path} is not a file")
        version = _check_tag_file(path)
        tag = Tag.__new__(Tag)
        tag._api = None
        tag._downloads = 4
        tag._fetch_failures = {}
        tag._failed_this_round = set()
        try:
            tag._db = Tag._connect(str(path))  # a plain path: no URI parsing of '#' or '?'
        except sqlite3.Error as exc:
            raise TagFileError(f"cannot open tag file {path}: {exc}") from None
        tag._filename = str(path)
        tag._migrate(version)
        return tag

    def _migrate(self, version: int) -> None:
        """Bring a file of an older schema to this one (a step found done already is skipped)."""
        if version >= SCHEMA_VERSION:
            return
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tasks)")}
        if "logs" not in columns:  # 1 -> 2: each task's output
            self._db.execute("ALTER TABLE tasks ADD COLUMN logs BLOB")
        self._set_meta(schema_version=str(SCHEMA_VERSION))
        self._db.commit()

    @staticmethod
    def from_queue(tag: str, api: Optional[API] = None) -> Tag:
        """Loads a tag from the queue by downloading the corresponding tasks.

        Does not pull results.

        Args:
            tag: The tag name.

        Returns:
            The populated object.
        """
        out = Tag(tag, api)
        out.fetch_tasks()
        return out

    def close(self) -> None:
        self._db.close()


def _check_tag_file(path: Path) -> int:
    """The schema version of the intact hmq tag file at ``path``; :class:`TagFileError` with the
    reason unless it is one of a schema this hmq reads. Read-only: a ``file:`` URI (any file
    name, quoted) with ``mode=ro``."""
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise TagFileError(f"cannot open {path}: {exc}") from None
    try:
        problem = _tag_file_problem(db)
        version = 0 if problem else int(dict(db.execute("SELECT key, value FROM meta").fetchall())["schema_version"])
    except sqlite3.DatabaseError as exc:
        problem = f"is not an hmq tag file ({exc})"
    finally:
        db.close()
    if problem:
        raise TagFileError(f"{path} {problem}")
    return version


def _tag_file_problem(db: sqlite3.Connection) -> Optional[str]:
    """What is wrong with an open tag file, or ``None``."""
    columns = {table: {row[1] for row in db.execute(f"PRAGMA table_info({table})")} for table in _COLUMNS}
    if not {"key", "value"} <= columns["meta"]:
        return "is not an hmq tag file (it has no meta table)"
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("format") != FORMAT:
        return "is not an hmq tag file (its meta table names no hmq-tag format)"
    version = str(meta.get("schema_version", ""))
    if not version.isdigit():
        return f"has an invalid schema version {version!r}"
    if int(version) > SCHEMA_VERSION:
        return f"has schema version {version}; this hmq reads up to {SCHEMA_VERSION} (upgrade hmq)"
    missing = [f"{table}.{name}" for table, names in _COLUMNS.items() for name in names if name not in columns[table]]
    if missing:
        return f"is not a complete hmq tag file: it lacks {', '.join(missing)}"
    damage = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    if damage != ["ok"]:
        return f"is damaged: {'; '.join(damage)}"
    return None
