"""A user cannot read, cancel or delete another user's tasks or results."""

from __future__ import annotations

import pytest

import hmq
from tests.helpers import Server, submit


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
    # a tag of the same name cannot be hijacked
    with pytest.raises(hmq.Conflict, match="in use"):
        mallory.submit_tasks(tag.name, _register(mallory), [((1,), {})])
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


def test_objects_of_another_user_cannot_be_registered(server: Server) -> None:
    alice, mallory = server.user(), server.user()
    slot = alice._upload_slots("function", 1)[0]
    with pytest.raises(hmq.PermissionDenied, match="upload slots"):
        mallory._call("POST", "/v1/functions", {"digest": "0" * 64, "key": slot.key, "size": 1})


def test_users_cannot_act_as_workers(server: Server) -> None:
    user = server.user()
    with pytest.raises(hmq.PermissionDenied, match="worker role"):
        user.register_worker("dc", 1)
