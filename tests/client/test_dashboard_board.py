"""The dashboard's data (hmq.dashboard.board) over a stand-in client: how many requests a refresh makes."""

from __future__ import annotations

from pathlib import Path

from hmq import wire
from hmq.dashboard.board import STATUS_PER_REFRESH, Board


class Client:
    """Answers list_tags and get_tag_status like the API, counting the status requests."""

    def __init__(self, tags: dict[str, dict[str, int]]) -> None:
        self.tags = tags
        self.asked: list[str] = []

    def list_tags(self) -> list[wire.TagSummary]:
        return [
            wire.TagSummary(tag=name, created=float(i), total=c["total"], open=c["pending"] + c["running"])
            for i, (name, c) in enumerate(self.tags.items())
        ]

    def get_tag_status(self, name: str) -> dict[str, int]:
        self.asked.append(name)
        return self.tags[name]

    def close(self) -> None: ...


def _counts(pending: int, completed: int) -> dict[str, int]:
    return {
        "pending": pending,
        "running": 0,
        "completed": completed,
        "failed": 0,
        "cancelled": 0,
        "total": pending + completed,
    }


def test_a_refresh_asks_for_the_counts_of_the_newest_open_tags_only(tmp_path: Path) -> None:
    tags = {f"t_{i:03d}": _counts(5, 5) for i in range(STATUS_PER_REFRESH + 10)}
    tags["done_1"] = _counts(0, 7)
    client = Client(tags)
    board = Board(client, tmp_path)  # a stand-in for hmq.API
    views = board.tags()
    assert [v.name for v in views][:2] == ["done_1", f"t_{STATUS_PER_REFRESH + 9:03d}"]  # newest first
    assert len(client.asked) == STATUS_PER_REFRESH and client.asked[0] == "done_1"
    client.asked.clear()
    board.tags()  # the finished tag is not asked again; the open ones are
    assert "done_1" not in client.asked and len(client.asked) == STATUS_PER_REFRESH
    assert views[0].finished == 7 and views[1].finished == 5 and views[-1].counts == {}
    assert len(views[1].history) == 1  # one point per second at most
