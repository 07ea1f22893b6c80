"""Every example of the user guide, unchanged, against a real embedded stack (uvicorn API and
worker processes started by `hmq up`). The examples live in examples/ and are shown in
docs/user-guide.md; test_docs checks the two agree."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

import hmq
from hmq import API
from tests.e2e.conftest import EXAMPLES, Stack

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_getting_started(embedded: Stack) -> None:
    out = embedded.run(str(EXAMPLES / "getting_started.py"))
    assert "Results: [6, 20, 42]" in out and "Errors: [None, None, None]" in out


def test_function_dependencies_are_packed(embedded: Stack) -> None:
    assert embedded.run(str(EXAMPLES / "dependencies.py")).strip() == "[90]"


@pytest.mark.slow
def test_packages_are_installed_on_the_worker(embedded: Stack) -> None:
    assert embedded.run(str(EXAMPLES / "packages.py"), timeout=900).strip() == "[90]"


def test_local_module_sent_by_value(embedded: Stack) -> None:
    assert embedded.run(str(EXAMPLES / "local_module.py")).strip() == "[42]"


def test_logs(embedded: Stack) -> None:
    out = embedded.run(str(EXAMPLES / "logs.py"))
    assert out == "working on 1\na warning about 1\nworking on 2\na warning about 2\n"


def test_limits_and_retries(embedded: Stack) -> None:
    assert embedded.run(str(EXAMPLES / "limits.py")).strip() == "[45, 4950, 499500]"


def _tags(embedded: Stack) -> list[str]:
    api = API(home=embedded.home)
    try:
        return [t.tag for t in api.list_tags()]
    finally:
        api.close()


def test_tag_names(embedded: Stack, tmp_path: Path) -> None:
    default = tmp_path / "default.py"
    default.write_text("import hmq\n\n@hmq.task\ndef test():\n    return 42\n\ntest()\nprint(test.submit().name)\n")
    assert re.fullmatch(f"test_{UUID}", embedded.run(str(default)).strip())
    before = set(_tags(embedded))
    embedded.run(str(EXAMPLES / "tag_name.py"))
    (new,) = set(_tags(embedded)) - before
    assert re.fullmatch(f"myname_{UUID}", new)


def test_large_tag_from_queue_to_file_then_pull(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "make.py"
    script.write_text(
        "import hmq\n\n@hmq.task\ndef sq(x):\n    return x * x\n\n"
        "for i in range(2000):\n    sq(i)\ntag = sq.submit()\ntag.pull(blocking=True)\nprint(tag.name)\n"
    )
    name = embedded.run(str(script)).strip()
    embedded.run(str(EXAMPLES / "large_tag.py"), name, cwd=tmp_path)
    tag = hmq.Tag.from_file(tmp_path / "filename.db")
    assert tag.name == name and len(tag) == 2000 and tag.n_results == 2000
    assert list(tag.results)[:4] == [0, 1, 4, 9] and list(tag.results)[-1] == 1999**2


MARKERS = {
    "argument": f"ARG-{uuid.uuid4().hex}",
    "function": f"FUNCTION-CONSTANT-{uuid.uuid4().hex}",
    "result": f"RESULT-{uuid.uuid4().hex}",
}


def _scan(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n.decode()}" for n in needles if n in data]
    return found


def _server_side(embedded: Stack) -> list[tuple[str, bytes]]:
    """Everything the server side holds: index rows and stored objects."""
    if embedded.backend == "sqlite-local":
        return [(str(p), p.read_bytes()) for p in (embedded.home / "server").rglob("*") if p.is_file()]
    from sqlalchemy import create_engine, inspect, text

    from lambdas.storage.s3 import S3Store

    out = []
    engine = create_engine(embedded.state.database)
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows = conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars().all()
            out.append((f"table {table}", "\n".join(rows).encode()))
    engine.dispose()
    store = S3Store.from_url(embedded.state.storage)
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        for obj in page.get("Contents", []):
            out.append((obj["Key"], store.client.get_object(Bucket=store.bucket, Key=obj["Key"])["Body"].read()))
    return out


def test_server_side_holds_no_plaintext(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "secret.py"
    script.write_text(
        "import hmq\n\n"
        "@hmq.task\n"
        "def handle(arg):\n"
        f"    secret = {MARKERS['function']!r}\n"
        f"    return [arg[::-1], {MARKERS['result']!r}, len(secret)]\n\n"
        f"handle({MARKERS['argument'][::-1]!r})\n"
        "tag = handle.submit()\ntag.pull(blocking=True)\nprint(list(tag.results)[0][1])\n"
    )
    assert embedded.run(str(script)).strip() == MARKERS["result"]
    needles = [m.encode() for m in MARKERS.values()] + [MARKERS["argument"][::-1].encode()]
    planted = tmp_path / "control" / "plain.txt"  # the scan itself works
    planted.parent.mkdir()
    planted.write_bytes(b"xx" + needles[0] + b"yy")
    assert _scan(planted.parent, needles)
    stored = _server_side(embedded)
    assert any(w.endswith("index.db") or w == "table tasks" for w, _ in stored)  # the index was scanned
    assert any("/c/" in w for w, _ in stored) and any(
        w.startswith("w/") or "/w/" in w for w, _ in stored
    )  # calls, results
    assert [f"{where}: {n.decode()}" for where, data in stored for n in needles if n in data] == []
