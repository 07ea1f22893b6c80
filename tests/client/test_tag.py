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


def _saved(tmp_path: Path, name: str = "t.db") -> Path:
    target = tmp_path / name
    _filled().to_file(target)
    return target


def _unchanged(path: Path):
    """Asserts on exit that the file's bytes did not change and no file appeared beside it."""
    import contextlib

    @contextlib.contextmanager
    def check():
        before, siblings = path.read_bytes(), sorted(path.parent.iterdir())
        yield
        assert path.read_bytes() == before and sorted(path.parent.iterdir()) == siblings

    return check()


def test_any_file_name_opens(tmp_path: Path) -> None:
    for name in ("run#1.db", "what?.db", "100%.db", "a b.db", "file:x.db"):
        target = _saved(tmp_path, name)
        again = Tag.from_file(target)
        assert list(again.results)[:3] == [{"i": 0}, None, {"i": 2}] and again.filename == str(target)
        again.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == sorted(
        ["run#1.db", "what?.db", "100%.db", "a b.db", "file:x.db"]
    )  # no stray file


def _sql(path: Path, script: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(script)
    db.commit()
    db.close()


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    _sql(other, "CREATE TABLE things(x); INSERT INTO things VALUES (1);")
    with _unchanged(other), pytest.raises(hmq.TagFileError) as info:
        Tag.from_file(other)
    assert str(info.value) == f"{other} is not an hmq tag file (it has no meta table)"
    foreign = tmp_path / "foreign.db"
    _sql(foreign, "CREATE TABLE meta(key TEXT, value TEXT); INSERT INTO meta VALUES ('format', 'else');")
    with _unchanged(foreign), pytest.raises(hmq.TagFileError) as info:
        Tag.from_file(foreign)
    assert str(info.value) == f"{foreign} is not an hmq tag file (its meta table names no hmq-tag format)"


def test_a_bad_schema_version_is_a_tag_file_error(tmp_path: Path) -> None:
    target = _saved(tmp_path)
    _sql(target, "UPDATE meta SET value = 'one' WHERE key = 'schema_version';")
    with _unchanged(target), pytest.raises(hmq.TagFileError) as info:
        Tag.from_file(target)
    assert str(info.value) == f"{target} has an invalid schema version 'one'"


def test_missing_columns_are_named(tmp_path: Path) -> None:
    target = _saved(tmp_path)
    _sql(target, "ALTER TABLE tasks DROP COLUMN error;")
    with _unchanged(target), pytest.raises(hmq.TagFileError) as info:
        Tag.from_file(target)
    assert str(info.value) == f"{target} is not a complete hmq tag file: it lacks tasks.error"


def test_a_corrupt_page_is_a_tag_file_error(tmp_path: Path) -> None:
    target = tmp_path / "big.db"
    tag = _filled()
    tag.add_tasks(str(uuid.uuid4()) for _ in range(2000))
    tag.to_file(target)
    data = bytearray(target.read_bytes())
    page = 4096
    data[3 * page : 4 * page] = b"\xff" * page  # a page of the tasks table's tree
    target.write_bytes(bytes(data))
    with pytest.raises(hmq.TagFileError) as info:
        Tag.from_file(target)
    assert str(info.value).startswith(f"{target} ") and ("damaged" in str(info.value) or "malformed" in str(info.value))


def test_one_bad_row_names_its_task(tmp_path: Path) -> None:
    target = _saved(tmp_path)
    _sql(target, "UPDATE tasks SET result = x'00ff' WHERE seq = 3;")
    tag = Tag.from_file(target)
    bad = list(tag.task_ids)[2]
    with pytest.raises(hmq.TagFileError) as info:
        list(tag.results)
    assert str(info.value).startswith(f"{target}: the result of task {bad} is corrupt: compressed data is corrupt")


def test_a_zstd_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    import io

    import zstandard

    huge = formats.defaults.MAX_RESULT_BYTES + 1
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, size=huge, closefd=False) as writer:
        chunk = b" " * (1 << 20)
        for _ in range(huge // len(chunk)):
            writer.write(chunk)
        writer.write(b" " * (huge % len(chunk)))
    bomb = out.getvalue()
    assert len(bomb) < 100_000
    target = _saved(tmp_path)
    db = sqlite3.connect(target)
    db.execute("UPDATE tasks SET result = ? WHERE seq = 1", (bomb,))
    db.commit()
    db.close()
    tag = Tag.from_file(target)
    with pytest.raises(hmq.TagFileError, match=f"would decompress to {huge} bytes, over the limit of {huge - 1}"):
        next(tag.results)


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


def test_failures_lists_the_failed_tasks_in_submission_order_with_their_output() -> None:
    from hmq.tag import LocalState

    tag = Tag("t_1")
    tag.add_tasks(["a", "b", "c"])
    tag._db.executemany(
        "UPDATE tasks SET status = ?, error = ?, logs = ? WHERE id = ?",
        [
            (int(LocalState.FAILED), "E1", formats.compress(b"printed"), "c"),
            (int(LocalState.FAILED), "E0", None, "a"),
            (int(LocalState.COMPLETED), None, None, "b"),
        ],
    )
    assert tag.failures() == [("a", "E0", None), ("c", "E1", "printed")]
    assert tag.failures(limit=1) == [("a", "E0", None)]
