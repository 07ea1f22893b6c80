"""A user cannot read, cancel or delete another user's tasks or results."""

from __future__ import annotations

from pathlib import Path

import cloudpickle
import pytest

import hmq
from hmq import formats, wire
from tests.helpers import Server, submit, wait_for


def test_second_user_cannot_touch_the_first_users_tag(server: Server) -> None:
    alice, mallory = server.user("alice"), server.user("mallory")
    tag = submit(alice, lambda x: x * 2, [(1,), (2,), (3,)])
    ids = list(tag.task_ids)

    for action in (
        lambda: mallory.get_tag_status(tag.name),
        lambda: mallory.find_tasks(tag.name),
        lambda: mallory.done_page(tag.name),
        lambda: mallory.cancel_tasks(tag=tag.name),
        lambda: mallory.delete_tasks(tag=tag.name),
    ):
        with pytest.raises(hmq.NotFound, match="unknown tag"):
            action()
    # by id: the ids are unknown to her
    assert mallory.cancel_tasks(tasks=ids) == []
    assert mallory.delete_tasks(tasks=ids) == []
    assert set(mallory.get_tasks_status(ids).values()) == {None}
    page = mallory.lookup(ids)
    assert page.objects == [] and page.closed == [] and sorted(map(str, page.unknown)) == sorted(ids)
    # a tag of the same name is her own: she learns nothing of alice's, and cannot touch it
    (own,) = mallory.submit_tasks(tag.name, _register(mallory), [((1,), {})])
    assert mallory.find_tasks(tag.name) == [own] and mallory.get_tag_status(tag.name)["pending"] == 1
    # alice's tag is intact
    assert alice.get_tag_status(tag.name)["pending"] == 3
    assert alice.find_tasks(tag.name) == ids


def _register(api: hmq.API) -> str:
    import hashlib

    import cloudpickle

    payload = cloudpickle.dumps(abs)
    digest = hashlib.sha256(payload).hexdigest()
    api.register_function({"callable": payload}, digest)
    return digest


def test_task_ids_are_per_user_and_a_worker_never_holds_two_of_one_id(server: Server, tmp_path: Path) -> None:
    alice, mallory = server.user(), server.user()
    tag = submit(alice, lambda x: x * 2, [(1,), (2,)])
    ids = list(tag.task_ids)
    # mallory submits calls under alice's task ids (as if she had learnt them)
    digest = _register(mallory)
    kid, public = mallory.compute_key()
    writer = formats.ChunkWriter(
        mallory.identity, public, kid, tag="copycat", function=digest, python=wire.PYTHON, ncores=1, packages=[]
    )
    for task_id in ids:
        writer.add(task_id, cloudpickle.dumps(((-7,), {})))
    blob, header_len, entries = writer.finish()
    slot = mallory._upload_slots("chunk", 1)[0]
    mallory.transport.put_object(slot.url, blob)
    chunk = {"key": slot.key, "header_len": header_len, "function": digest, "python": wire.PYTHON, "ncores": 1}
    chunk["tasks"] = [[e.task_id, e.offset, e.length] for e in entries]
    out = mallory._call("POST", "/v1/tasks", {"tag": "copycat", "chunks": [chunk]})
    assert (out["created"], out["existing"]) == (2, 0)  # nothing says that the ids are taken
    copy = hmq.Tag.from_queue("copycat", mallory)
    assert list(copy.task_ids) == ids
    server.start_worker(tmp_path)  # one worker runs both users' tasks
    wait_for(lambda: tag.pull() == 0 and copy.pull() == 0, timeout=60, what="both tags")
    assert list(tag.results) == [2, 4] and list(copy.results) == [7, 7]


def test_objects_of_another_user_cannot_be_registered(server: Server) -> None:
    alice, mallory = server.user(), server.user()
    slot = alice._upload_slots("function", 1)[0]
    with pytest.raises(hmq.PermissionDenied, match="upload slots"):
        mallory._call("POST", "/v1/functions", {"digest": "0" * 64, "key": slot.key, "size": 1})


def test_users_cannot_act_as_workers(server: Server) -> None:
    user = server.user()
    with pytest.raises(hmq.PermissionDenied, match="worker role"):
        user.register_worker("dc", 1)
