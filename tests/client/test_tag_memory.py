"""A tag's task ids cost bounded client memory: an unlinked tag's database is SQLite's private
temporary one, not an in-memory database (which held ~150 MB for a 1,000,000-task tag), and the
ids submit makes sort in creation order, so inserting them stays fast with a small page cache."""

from __future__ import annotations

import _sqlite3
import ctypes
import ctypes.util
import time
import uuid
from pathlib import Path

import pytest

from hmq._submit import new_task_id
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
    pytest.skip("SQLite's sqlite3_memory_used cannot be reached from here")


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
