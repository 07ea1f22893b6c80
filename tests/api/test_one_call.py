"""The requests of one small call: what a client and a worker skip once warm, and what the API
refuses on those shortcuts (a function whose stored copy a worker found corrupt)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import pytest

import hmq
from hmq import wire
from hmq._submit import new_task_id
from lambdas.db.models import Function, Task
from tests.helpers import ManualWorker, Server, submit
from worker.prepare import Preparer


def _requests(api: Any) -> list[str]:
    """Every request ``api``'s transport sends from now on, as ``METHOD path``."""
    seen: list[str] = []

    def note(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    api.transport.client.event_hooks["request"].append(note)
    return seen


def _square(x: int) -> int:
    return x * x


def test_a_warm_submit_is_one_upload_and_one_request(server: Server) -> None:
    user = server.user()
    submit(user, _square, [(1,)])  # registers the function, keeps spare upload slots
    seen = _requests(user)
    submit(user, _square, [(2,)])
    api = [r for r in seen if "/v1/blobs/" not in r and not r.startswith("PUT")]
    assert api == ["POST /v1/tasks"], seen  # no function look-up, no upload-slot request
    assert len([r for r in seen if r.startswith("PUT")]) == 1


def test_spare_upload_slots_are_not_used_past_half_their_lifetime(server: Server, monkeypatch: Any) -> None:
    user = server.user()
    submit(user, _square, [(1,)])
    assert user._spare_slots
    monkeypatch.setattr(user, "_spare_slots", type(user._spare_slots)((0.0, s) for _, s in user._spare_slots))
    seen = _requests(user)
    submit(user, _square, [(2,)])
    assert "POST /v1/uploads" in seen  # the kept ones were stale: new ones were asked for


def test_a_submit_naming_a_corrupt_function_is_refused_and_stores_nothing(server: Server) -> None:
    user = server.user()
    tag = submit(user, _square, [(1,)])
    digest = hashlib.sha256(cloudpickle.dumps(_square)).hexdigest()
    with server.app.state.ctx.index.write() as session:
        session.query(Function).update({"corrupt": True})
    # Another client (nothing remembered) looks the function up and replaces the copy itself;
    # a raw submit naming it is refused with the reason, and no task is stored.
    slot = user._upload_slots("chunk", 1)[0]
    user.transport.put_object(slot.url, b"x" * 64)
    chunk = wire.ChunkIn(
        key=slot.key,
        header_len=8,
        function=digest,
        python=wire.PYTHON,
        ncores=1,
        packages=[],
        tasks=[(uuid.UUID(new_task_id()), 8, 8)],
    )
    with pytest.raises(hmq.Conflict) as info:
        user._call("POST", "/v1/tasks", wire.SubmitIn(tag="raw", chunks=[chunk]))
    assert info.value.code == "function_corrupt"
    assert "register the function again" in info.value.reason
    with server.app.state.ctx.index.read() as session:
        assert session.query(Task).count() == 1  # only the first submit's task
    assert user.get_tag_status(tag.name)["pending"] == 1


def test_the_client_replaces_a_corrupt_function_it_remembers_and_submits(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, _square, [(1,)])
    (old,) = [k for k in server.object_keys() if "/f/" in k]
    with server.app.state.ctx.index.write() as session:
        session.query(Function).update({"corrupt": True})
    seen = _requests(user)
    again = submit(user, _square, [(3,)])
    assert seen.count("POST /v1/tasks") == 2 and "POST /v1/functions" in seen  # refused, replaced, submitted
    assert old not in server.object_keys()
    worker = ManualWorker(server, tmp_path)
    groups = worker.claim(10)
    assert {g.tag for g in groups} >= {again.name}


def test_a_small_chunk_is_fetched_with_one_get(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, _square, [(4,), (5,)])
    worker = ManualWorker(server, tmp_path)
    (group,) = worker.claim(10)
    seen = _requests(worker.session)
    jobs, rejected, released = Preparer(worker.session, worker.creds, header_cache=4).prepare(group)
    assert len(jobs) == 2 and rejected == released == []
    chunk_gets = [r for r in seen if r.startswith("GET") and "/c/" in r]
    assert len(chunk_gets) == 1, seen  # the header and both calls at once
    assert [cloudpickle.loads(j.call)[0] for j in jobs] == [(4,), (5,)]


def test_a_truncated_small_chunk_is_rejected_not_run(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, _square, [(6,)])
    (chunk,) = [k for k in server.object_keys() if "/c/" in k]
    server.write_object(chunk, server.read_object(chunk)[:-5])
    worker = ManualWorker(server, tmp_path)
    (group,) = worker.claim(10)
    jobs, rejected, released = Preparer(worker.session, worker.creds, header_cache=4).prepare(group)
    assert jobs == [] and released == [] and len(rejected) == 1
    assert "rejected by worker" in rejected[0].error
