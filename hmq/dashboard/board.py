"""What the dashboard shows, fetched with the user's own client: HTTP-free, so the web app
(:mod:`hmq.dashboard.app`) stays a thin adapter.

- Tags: ``API.list_tags`` (one request) for all of them; ``API.get_tag_status`` for those
  still open (a finished tag's counts do not change, so they are fetched once). Each refresh
  of an open tag adds a point (time, finished tasks) to a bounded history kept in this process:
  the throughput chart covers the time the dashboard has been watching.
- Failures: the tag is pulled into a tag file under the dashboard's temporary directory, with
  :class:`hmq.Tag` (incrementally, as ``Tag.pull`` does), and its failed tasks' tracebacks and
  output are read from there: results are decrypted here, with the user's key, never by the API.
- Fleet (with the admin key): ``GET /v1/metrics`` and ``GET /v1/workers`` through
  :class:`hmq.admin.Admin`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hmq import defaults, wire
from hmq._client import API
from hmq.admin import Admin
from hmq.tag import Tag

HISTORY_POINTS = 2000
"""Points of each tag's progress history kept (one per refresh, at most one a second)."""
STATUS_PER_REFRESH = 50
"""Most tags whose counts one refresh of the tags page asks for (the newest open or changed
ones), so that a user with hundreds of open tags does not cost hundreds of requests every few
seconds; older ones keep the counts last fetched (a tag's own page always fetches its own)."""
FAILURES_SHOWN = 200
"""Failed tasks listed on a tag's page (the first ones, in submission order)."""
STATES = ("completed", "failed", "running", "pending", "cancelled")


@dataclass
class TagView:
    """One tag as the dashboard last saw it."""

    name: str
    created: float
    total: int
    open: int
    counts: dict[str, int] = field(default_factory=dict)
    history: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    @property
    def finished(self) -> int:
        return self.counts.get("completed", 0) + self.counts.get("failed", 0)

    def shares(self) -> list[tuple[str, int, float]]:
        """``(state, count, percent of the total)`` for each state, for a progress bar."""
        total = max(self.total, 1)
        return [(s, self.counts.get(s, 0), 100.0 * self.counts.get(s, 0) / total) for s in STATES]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created": self.created,
            "total": self.total,
            "open": self.open,
            "counts": self.counts,
            "history": list(self.history),
        }


@dataclass
class Failure:
    task: str
    error: str
    logs: Optional[str]

    @property
    def summary(self) -> str:
        """The traceback's last line (the exception), which says most in one line."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "(no message)"


class Board:
    """The dashboard's data, for one user (and, with the admin key, the fleet)."""

    def __init__(
        self,
        api: API,
        cache_dir: Path,
        admin: Optional[Admin] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.admin = admin
        self.cache_dir = cache_dir
        self.clock = clock
        self._tags: dict[str, TagView] = {}
        self._files: dict[str, Tag] = {}
        self._pulled: dict[str, tuple[int, ...]] = {}
        self._made = 0
        self._lock = threading.Lock()
        self._tag_locks: dict[str, threading.Lock] = {}

    # --- tags -------------------------------------------------------------------------------
    def tags(self) -> list[TagView]:
        """All the user's tags, newest first, with their counts brought up to date (those of
        at most ``STATUS_PER_REFRESH`` tags, the newest that changed or are open)."""
        listed = sorted(self.api.list_tags(), key=lambda t: t.created, reverse=True)
        names = {t.tag for t in listed}
        with self._lock:
            for gone in set(self._tags) - names:
                del self._tags[gone]
        budget = STATUS_PER_REFRESH
        for summary in listed:
            budget -= self._refresh(summary, budget > 0)
        return [self._tags[t.tag] for t in listed]

    def tag(self, name: str) -> TagView:
        """One tag, its counts fetched now (:class:`hmq.NotFound` for an unknown one)."""
        counts = self.api.get_tag_status(name)
        with self._lock:
            view = self._tags.get(name)
            if view is None:
                view = self._tags[name] = TagView(name, self.clock(), counts["total"], 0)
        self._record(view, counts)
        return view

    def _refresh(self, summary: wire.TagSummary, fetch: bool) -> int:
        """Take in the tag's listing; fetch its counts (when ``fetch``) if it changed or is
        open. Returns how many requests were made (0 or 1)."""
        with self._lock:
            view = self._tags.get(summary.tag)
            if view is None:
                view = self._tags[summary.tag] = TagView(summary.tag, summary.created, summary.total, summary.open)
            changed = (view.total, view.open) != (summary.total, summary.open) or not view.counts
            view.total, view.open = summary.total, summary.open
        if not (fetch and (changed or summary.open)):
            return 0
        self._record(view, self.api.get_tag_status(summary.tag))
        return 1

    def _record(self, view: TagView, counts: dict[str, int]) -> None:
        now = self.clock()
        with self._lock:
            view.counts = {s: counts.get(s, 0) for s in STATES}
            view.total = counts.get("total", view.total)
            view.open = view.counts["pending"] + view.counts["running"]
            if not view.history or now - view.history[-1][0] >= 1.0:
                view.history.append((now, view.finished))

    def cancel(self, name: str) -> int:
        """Cancel the tag's open tasks; how many were cancelled."""
        return len(self.api.cancel_tasks(tag=name))

    def delete(self, name: str) -> int:
        """Delete the tag from the queue (tasks, calls and results); how many tasks went. The
        dashboard's cached copy goes too."""
        deleted = len(self.api.delete_tasks(tag=name))
        with self._lock:
            self._tags.pop(name, None)
            cached = self._files.pop(name, None)
            self._pulled.pop(name, None)
        if cached is not None:
            cached.close()
        return deleted

    # --- failures, decrypted here -------------------------------------------------------------
    def failures(self, name: str, limit: int = FAILURES_SHOWN) -> list[Failure]:
        """The tag's failed tasks with their tracebacks and output, pulled into the cache."""
        with self._lock:
            lock = self._tag_locks.setdefault(name, threading.Lock())
        with lock:
            tag = self._cached(name)
            view = self.tag(name)
            seen = (view.total, view.counts["completed"], view.counts["failed"], view.counts["cancelled"])
            if self._pulled.get(name) != seen:
                if len(tag) < view.total:
                    tag.fetch_tasks()
                tag.pull()
                self._pulled[name] = seen
            return [Failure(t, e, log) for t, e, log in tag.failures(limit)]

    def _cached(self, name: str) -> Tag:
        """The tag's cache file (made on first use; the caller holds the tag's lock)."""
        with self._lock:
            tag = self._files.get(name)
            self._made += tag is None
            path = self.cache_dir / f"{self._made:06d}.tag"
        if tag is None:
            tag = Tag(name, self.api)
            tag.to_file(path, stay_linked=True, overwrite=True)
            with self._lock:
                self._files[name] = tag
        return tag

    # --- the fleet ----------------------------------------------------------------------------
    def fleet(self) -> Optional[dict[str, Any]]:
        """The fleet's last day (``None`` without the admin key): points, CPU time per user over
        the last hour and day, datacenters, and the workers seen in the last hour."""
        if self.admin is None:
            return None
        now = self.clock()
        day = self.admin.metrics(since=now - 86400)
        hour = self.admin.metrics(since=now - 3600)
        workers = self.admin.workers(since=now - 3600)
        cpu = {u.name: {"hour": 0.0, "day": u.cpu_seconds / 3600} for u in day.users}
        for u in hour.users:
            cpu.setdefault(u.name, {"hour": 0.0, "day": 0.0})["hour"] = u.cpu_seconds / 3600
        return {
            "now": now,
            "points": [p.model_dump() for p in day.points],
            "cpu_hours": [{"name": n, **v} for n, v in cpu.items()],
            "datacenters": [d.model_dump() for d in day.datacenters],
            "workers": [
                {**w.model_dump(mode="json"), "stale": now - w.last_seen > defaults.LEASE_SECONDS} for w in workers
            ],
        }

    def close(self) -> None:
        with self._lock:
            for tag in self._files.values():
                tag.close()
            self._files.clear()
        self.api.close()
        if self.admin is not None:
            self.admin.close()
