from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

import hmq
from hmq import formats
from hmq.tag import SCHEMA_VERSION, Tag


def _filled(n: int = 5) -> Tag:
    tag = Tag("t_1")
    ids = [str(uuid.uuid4()) for _ in range(n)]
    tag.add_tasks(ids)
    tag._db.executemany(
        "UPDATE tasks SET status=1, result=? WHERE id=?",
        [(formats.compress(formats.to_json({"i": i})), t) for i, t in enumerate(ids) if i % 2 == 0],
    )
    tag._db.execute("UPDATE tasks SET status=2, error='boom' WHERE id=?", (ids[1],))
    tag._db.commit()
    return tag


def test_results_and_errors_keep_submission_order() -> None:
    tag = _filled()
    assert list(tag.results) == [{"i": 0}, None, {"i": 2}, None, {"i": 4}]
    assert list(tag.errors) == [None, "boom", None, None, None]
    assert (len(tag), tag.n_results, tag.n_errors) == (5, 3, 1)


def test_to_file_from_file_and_linking(tmp_path: Path) -> None:
    tag = _filled()
    target = tmp_path / "t.db"
    tag.to_file(target)
    with pytest.raises(ValueError, match="exists"):
        tag.to_file(target)
    tag.to_file(target, overwrite=True, stay_linked=True)
    assert tag.filename == str(target)
    tag.add_tasks([str(uuid.uuid4())])  # lands in the file now
    again = Tag.from_file(target)
    assert len(again) == 6 and list(again.results)[:3] == [{"i": 0}, None, {"i": 2}]
    meta = dict(sqlite3.connect(target).execute("SELECT key, value FROM meta"))
    assert meta["format"] == "hmq-tag" and meta["schema_version"] == str(SCHEMA_VERSION) and meta["name"] == "t_1"


def test_from_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Tag.from_file(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(hmq.TagFileError, match="not an hmq tag file"):
        Tag.from_file(tmp_path / "junk.db")
    db = sqlite3.connect(tmp_path / "future.db")
    db.executescript(
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT); INSERT INTO meta VALUES ('format','hmq-tag'), ('schema_version','99');"
    )
    db.commit()
    with pytest.raises(hmq.TagFileError, match="upgrade hmq"):
        Tag.from_file(tmp_path / "future.db")


def test_task_decorator_records_calls_and_defaults() -> None:
    @hmq.task
    def f(a, b=2):
        return a + b

    @hmq.task(b=10)
    def g(a, b=2):
        return a * b

    assert f(1) is None and f(1, b=3) is None and len(f) == 2
    assert [cloudpickle_loads(c) for c in f._calls] == [((1,), {}), ((1,), {"b": 3})]
    g(2)
    fn = cloudpickle_loads(g._payload())
    assert fn(2) == 20 and fn(2, b=3) == 6  # defaults apply unless the call passes the keyword
    assert f.__name__ == "f"


def cloudpickle_loads(data: bytes):
    import cloudpickle

    return cloudpickle.loads(data)


def test_submit_without_calls_is_a_clear_error() -> None:
    @hmq.task
    def nothing():
        return 1

    with pytest.raises(hmq.UsageError, match="call nothing"):
        nothing.submit()


def test_calls_are_recorded_when_made() -> None:
    @hmq.task
    def f(xs):
        return sum(xs)

    data = [1, 2]
    f(data)
    data.append(3)  # a later change does not alter the recorded call
    assert [cloudpickle_loads(c) for c in f._calls] == [(([1, 2],), {})]
    import threading

    with pytest.raises(hmq.UsageError, match="cannot be recorded"):
        f(threading.Lock())
    assert len(f) == 1


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error TEXT
);
CREATE INDEX tasks_open ON tasks(status) WHERE status = 0;
"""


def test_a_tag_file_of_schema_1_is_migrated_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ids = [str(uuid.uuid4()) for _ in range(3)]
    db = sqlite3.connect(path)  # a file as hmq wrote it before tags kept each task's output
    db.executescript(V1_SCHEMA)
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("format", "hmq-tag"), ("schema_version", "1"), ("name", "old_1"), ("cursor", "7:2")],
    )
    db.executemany("INSERT INTO tasks(id) VALUES (?)", [(i,) for i in ids])
    db.execute("UPDATE tasks SET status=1, result=? WHERE id=?", (formats.compress(b"[42]"), ids[0]))
    db.execute("UPDATE tasks SET status=2, error='boom' WHERE id=?", (ids[1],))
    db.commit()
    db.close()

    tag = Tag.from_file(path)
    assert (tag.name, list(tag.results), list(tag.errors)) == ("old_1", [[42], None, None], [None, "boom", None])
    assert list(tag.logs) == [None, None, None] and tag._meta("cursor") == "7:2"
    tag._db.execute("UPDATE tasks SET status=1, logs=? WHERE id=?", (formats.compress(b"late output\n"), ids[2]))
    tag._db.commit()
    tag.close()
    meta = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) == "2"
    again = Tag.from_file(path)  # opening a migrated file again changes nothing
    assert list(again.logs) == [None, None, "late output\n"] and list(again.results)[0] == [42]


def test_logs_yield_text_in_submission_order() -> None:
    tag = _filled(3)
    ids = list(tag.task_ids)
    tag._db.execute("UPDATE tasks SET logs=? WHERE id=?", (formats.compress("é\nline 2\n".encode()), ids[0]))
    tag._db.execute("UPDATE tasks SET logs=? WHERE id=?", (formats.compress(b"\xff bytes\n"), ids[2]))
    assert list(tag.logs) == ["é\nline 2\n", None, "\ufffd bytes\n"]  # undecodable bytes are replaced
