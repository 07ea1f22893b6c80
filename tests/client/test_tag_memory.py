"""A big tag costs bounded client memory: recorded calls spill to a temporary file past
``CALL_LOG_MEMORY_BYTES``; an unlinked tag's database is SQLite's private temporary one, not an
in-memory database (which held ~150 MB for a 1,000,000-task tag); and the ids submit makes sort
in creation order, so inserting them stays fast with a small page cache."""

from __future__ import annotations

import _sqlite3
import ctypes
import ctypes.util
import os
import time
import tracemalloc
import uuid
from pathlib import Path

import cloudpickle
import pytest

import hmq
from hmq._submit import new_task_id
from hmq.defaults import CALL_LOG_MEMORY_BYTES
from hmq.tag import Tag

IDS = 200_000


def _sqlite_memory_used() -> ctypes._CFuncPtr:
    """SQLite's own count of the bytes it holds (``sqlite3_memory_used``), of the library the
    ``sqlite3`` module uses."""
    for name in (_sqlite3.__file__, ctypes.util.find_library("sqlite3")):
        try:
            func = ctypes.CDLL(name).sqlite3_memory_used
        except (OSError, AttributeError, TypeError):
            continue
        func.restype = ctypes.c_int64
        return func
    reason = "SQLite's sqlite3_memory_used cannot be reached from here"
    if os.environ.get("HMQ_REQUIRE_SQLITE_MEMORY") == "1":
        pytest.fail(f"{reason} (HMQ_REQUIRE_SQLITE_MEMORY=1)")
    pytest.skip(reason)


def test_an_unlinked_tag_holds_its_ids_outside_memory(tmp_path: Path) -> None:
    used = _sqlite_memory_used()
    before = used()
    tag = Tag("big_1")
    ids = []
    for _ in range(IDS // 10_000):
        page = [new_task_id() for _ in range(10_000)]
        ids += page
        assert tag.add_tasks(page) == len(page)
    held = used() - before
    # An in-memory database holds ~23 MB for these ids; the temporary one its page cache (~2 MB).
    assert held < 8_000_000, f"the tag holds {held / 1e6:.1f} MB of SQLite memory for {IDS:,} ids"
    assert len(tag) == IDS and next(tag.task_ids) == ids[0]
    tag.to_file(tmp_path / "big.db", stay_linked=True)
    assert list(tag.task_ids) == ids  # submission order, all of them, in the file
    tag.close()


def test_task_ids_are_uuid7_in_creation_order() -> None:
    first = [new_task_id() for _ in range(1_000)]
    time.sleep(0.002)  # a later millisecond
    later = new_task_id()
    parsed = [uuid.UUID(i) for i in [*first, later]]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert len(set(first)) == len(first)
    assert all(later > i for i in first)  # the 48-bit millisecond clock leads
    stamp = parsed[-1].int >> 80
    assert abs(stamp / 1000 - time.time()) < 60


def test_recorded_calls_spill_to_disk_and_come_back_in_order() -> None:
    @hmq.task
    def f(x):
        return x

    calls = 200_000  # ~9 MB pickled: past the 4 MB kept in memory
    tracemalloc.start()
    try:
        for i in range(calls):
            f(i, key="v" if i % 2 else None)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Packed in memory, these calls held ~10 MB; spilled, at most CALL_LOG_MEMORY_BYTES stays.
    assert held < CALL_LOG_MEMORY_BYTES + 2_000_000, f"{held / 1e6:.1f} MB held for {calls:,} recorded calls"
    first = iter(f._calls)
    assert cloudpickle.loads(next(first)) == ((0,), {"key": None})
    f(-1)  # recorded after a read that stopped part way: appended, nothing overwritten
    back = [cloudpickle.loads(c) for c in f._calls]
    assert len(back) == len(f) == calls + 1
    assert back[1] == ((1,), {"key": "v"}) and back[-2][0] == (calls - 1,) and back[-1] == ((-1,), {})
    f.clear()
    assert len(f) == 0 and list(f._calls) == []
