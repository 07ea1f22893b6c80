"""``@hmq.task``: record calls of a function, then submit them as one tag."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import re
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import cloudpickle

from hmq import _progress, wire
from hmq import defaults as _defaults
from hmq._errors import HmqError, NotFound, UsageError
from hmq._submit import warn_placement
from hmq.limits import Limits
from hmq.tag import Tag, default_client

log = logging.getLogger("hmq")

_UNSAFE = re.compile(r"[^\w.\-]")


def _abandon(api: Any, tag: Tag, function: str, exc: BaseException) -> None:
    """After a submit failed part way: delete the tasks it registered (unless the failure says
    that the API is down) and tell the caller what became of them, on the raised error."""
    count = len(tag)
    if count == 0:
        return
    problem: Optional[BaseException] = exc if isinstance(exc, HmqError) and exc.transient else None
    deleted = 0
    if problem is None:
        try:
            deleted = len(api.delete_tasks(tag=tag.name))
        except NotFound:
            pass  # nothing was registered yet
        except HmqError as failure:
            problem = failure
    if problem is None:
        note = (
            f"the submit of tag {tag.name} stopped part way: the {deleted} tasks it had registered were deleted; "
            f"the calls are still recorded, call {function}.submit() again to send them all"
        )
    else:
        note = (
            f"the submit of tag {tag.name} stopped after registering up to {count} tasks, which stay queued "
            f"(not deleted: {problem}). Pull them with hmq.Tag.from_queue({tag.name!r}).pull(), "
            f"or delete them with hmq.Tag.from_queue({tag.name!r}).delete()"
        )
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # Python 3.10
        log.warning("%s", note)


class CallLog:
    """Recorded calls, each pickled when it is made, appended with its length to a private
    temporary file that stays in memory up to ``CALL_LOG_MEMORY_BYTES`` and spills to disk
    beyond: a million calls cost the client no more memory than a few thousand."""

    def __init__(self) -> None:
        # Closed by close() (submit and clear call it), else by __del__.
        self._file = tempfile.SpooledTemporaryFile(max_size=_defaults.CALL_LOG_MEMORY_BYTES)  # noqa: SIM115
        self._count = 0
        self._at_end = True  # the file position is where the next call goes

    def append(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            pickled = cloudpickle.dumps((args, kwargs))
        except Exception as exc:  # pickling runs arbitrary __reduce__ code of user objects
            raise UsageError(
                f"this call cannot be recorded: its arguments cannot be pickled ({type(exc).__name__}: {exc})"
            ) from exc
        if not self._at_end:  # read back since (by a submit that stopped part way, say)
            self._file.seek(0, os.SEEK_END)
            self._at_end = True
        self._file.write(_LENGTH.pack(len(pickled)) + pickled)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[bytes]:
        """The pickled calls in the order they were made, read back one at a time."""
        self._at_end = False
        self._file.seek(0)
        for _ in range(self._count):
            (length,) = _LENGTH.unpack(self._file.read(_LENGTH.size))
            yield self._file.read(length)

    def close(self) -> None:
        """Forget the calls (the temporary file is deleted)."""
        self._file.close()

    def __del__(self) -> None:  # a function collected with calls recorded: no warning of an open file
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()


_LENGTH = struct.Struct("<Q")
"""Each recorded call's length, before it in the call log."""


class TaskFunction:
    """A function whose calls are recorded instead of run; :meth:`submit` queues them.

    Calling it returns ``None`` and records the call; its arguments are pickled at once, so
    changing them afterwards does not change the recorded call. Keyword defaults given to the
    decorator (``@hmq.task(x=1)``) apply to every call that does not pass that keyword; they are
    sent once with the function, not with every call.
    """

    def __init__(self, func: Callable[..., Any], defaults: Optional[dict[str, Any]] = None) -> None:
        if not callable(func):
            raise UsageError("hmq.task decorates a function")
        functools.update_wrapper(self, func)
        self.__name__: str = getattr(func, "__name__", "task")
        self._func = func
        self._defaults = dict(defaults or {})
        self._calls = CallLog()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self._calls.append(args, kwargs)

    def __len__(self) -> int:
        """Number of recorded, not yet submitted calls."""
        return len(self._calls)

    def clear(self) -> None:
        """Forget the recorded calls."""
        self._calls.close()
        self._calls = CallLog()

    def _payload(self) -> bytes:
        target = functools.partial(self._func, **self._defaults) if self._defaults else self._func
        try:
            return cloudpickle.dumps(target)
        except Exception as exc:  # cloudpickle raises whatever the function's globals raise
            raise UsageError(f"function {self.__name__!r} cannot be pickled: {type(exc).__name__}: {exc}") from exc

    def submit(
        self,
        tag: Optional[str] = None,
        ncores: int = 1,
        datacenters: Optional[Sequence[str] | str] = None,
        packages: Sequence[str] = (),
        quiet: Optional[bool] = None,
        api: Any = None,
        timeout: Optional[float] = _defaults.TASK_TIMEOUT_SECONDS,
        memory: Optional[int | str] = None,
        retries: int = 0,
    ) -> Tag:
        """Send all recorded calls to the queue as one tag.

        Args:
            tag: tag name prefix (default: the function's name); a UUID is appended.
            ncores: cores each call may use (thread-count variables are set to it).
            datacenters: datacenter name(s) allowed to run the calls (default: any).
            packages: PEP 508 requirements of packages on the workers' index to install in the
                calls' environment (no direct references, URLs, paths or pip options).
            quiet: ``True``: no progress bar; ``False``: a bar even off a terminal; ``None``: a bar
                on a terminal or in a notebook only. Where a bar is drawn, a summary line stays.
            api: the :class:`hmq.API` to use (default ``hmq.api``).
            timeout: wall time per call in seconds (default 6 h), then it is killed; ``None``: no limit.
            memory: address space per call, bytes or a size like ``"4GiB"`` (B, KiB, MiB, GiB,
                KB, MB, GB); only workers with that much run it. ``None``: no limit.
            retries: how many times a call that failed runs again, on any worker.

        Returns:
            The :class:`hmq.Tag` of the submitted calls (their ids, no results yet).

        When no worker seen recently can run the calls, a ``UserWarning`` (and the tag status's
        ``warnings``) says what is missing; the tasks wait for such a worker.

        A submit that fails or is interrupted (Ctrl+C) part way deletes the tasks it registered
        and raises the error; the calls stay recorded for another ``submit``. If they cannot be
        deleted (the API is down), the error names the partial tag and how to resume or delete it.
        """
        default = default_client()
        api = api or default
        if not len(self._calls):
            raise UsageError(f"nothing to submit: call {self.__name__}(...) first to record calls")
        limits = Limits.of(timeout, memory, retries)  # before anything is stored
        name = _tag_name(tag if tag is not None else self.__name__)
        datacenters = [datacenters] if isinstance(datacenters, str) else datacenters
        packages = _checked_packages(packages)  # before anything is stored, as the limits
        payload = self._payload()
        digest = hashlib.sha256(payload).hexdigest()
        api.register_function({"callable": payload}, digest)
        out = Tag(name, api if api is not default else None)
        options = {"packages": packages, "function_name": self.__name__, **dataclasses.asdict(limits)}
        try:
            placement = _send(api, out, digest, self._calls, ncores, datacenters, options, quiet)
        except BaseException as exc:
            _abandon(api, out, self.__name__, exc)
            raise
        self._calls.close()
        self._calls = CallLog()
        warn_placement(name, placement)  # once the tag is complete: a warning made an error loses nothing
        return out


def _send(
    api: Any, out: Tag, digest: str, calls: Any, ncores: int, datacenters: Any, options: dict[str, Any], quiet: Any
) -> list[str]:
    """Submit ``calls`` under ``out``'s name behind a progress bar; return the placement
    warnings of the answers (what keeps the tasks from running now)."""
    placement: list[str] = []
    with _progress.submit_bar(len(calls), out.name, quiet) as bar:
        where = list(datacenters) if datacenters else None
        api.submit_tasks(
            out.name, digest, calls, ncores, where, progress=bar, sink=out.add_tasks, warnings=placement, **options
        )
    return placement


def task(func: Optional[Callable[..., Any]] = None, **defaults: Any) -> Any:
    """Decorate a function so that calling it records a task (``@hmq.task`` or
    ``@hmq.task(key=default, ...)``)."""
    if func is None:
        return lambda f: TaskFunction(f, defaults)
    return TaskFunction(func, defaults)


def _tag_name(prefix: str) -> str:
    """A new tag's full name: the prefix made safe, then a UUID."""
    return f"{_UNSAFE.sub('_', prefix)[:160] or 'task'}_{uuid.uuid4()}"


def _checked_packages(packages: Sequence[str] | str) -> list[str]:
    """The ``packages=`` entries checked here: the API would refuse them only after the
    function's upload."""
    try:
        return wire.normalise_packages(packages)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
