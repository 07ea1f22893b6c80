"""GET /v1/tags: the caller's tags with their tasks per state and latest result, one tag by name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hmq._errors import BadRequest, NotFound
from tests.helpers import ManualWorker, Server, submit


def _square(x: int) -> int:
    return x * x


def test_tags_are_listed_with_their_tasks_per_state(server: Server, tmp_path: Path) -> None:
    user, other = server.user("lister"), server.user("someone-else")
    started = time.time()
    first = submit(user, _square, [(i,) for i in range(4)], tag="first")
    second = submit(user, _square, [(i,) for i in range(3)], tag="second")
    submit(other, _square, [(1,)], tag="theirs")
    worker = ManualWorker(server, tmp_path)
    done = 0
    for group in worker.claim(100):
        if group.tag == first.name:
            ids = [str(t.id) for t in group.tasks]
            worker.complete(group, {ids[0]: 0, ids[1]: 1}, {ids[2]: "Traceback: boom"})
            done += 3
    assert done == 3
    assert len(user.cancel_tasks(tag=second.name)) == 3

    by_name = {t.tag: t for t in user.list_tags()}
    assert list(by_name) == [first.name, second.name]  # only the caller's, oldest first
    a, b = by_name[first.name], by_name[second.name]
    assert (a.total, a.pending + a.running, a.completed, a.failed, a.cancelled, a.open) == (4, 1, 2, 1, 0, 1)
    assert (b.total, b.cancelled, b.open) == (3, 3, 0)
    assert a.last_result is not None and started - 5 <= a.last_result <= time.time() + 5
    assert a.created <= b.created

    assert user.tag_summary(first.name) == a
    with pytest.raises(NotFound, match="unknown tag"):
        user.tag_summary("theirs_" + first.name.split("_", 1)[1])  # a name it does not have
    with pytest.raises(NotFound):
        other.tag_summary(first.name)  # another user's tag is unknown to them
    with pytest.raises(BadRequest):
        user._call("GET", "/v1/tags", params={"tag": "no such/tag"})
