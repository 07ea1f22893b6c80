"""A client that outlives its local stack: `hmq down; hmq up` must not strand it."""

from __future__ import annotations

import socket
from pathlib import Path

import hmq
from hmq import stack


def _square(x: int) -> int:
    return x * x


def _run(api: hmq.API, n: int) -> list[int]:
    task = hmq.task(_square)
    for i in range(n):
        task(i)
    tag = task.submit(quiet=True, api=api)
    tag.pull(blocking=True)
    return list(tag.results)


def test_the_api_keeps_its_port_across_down_and_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = stack.up(home, workers=1, cores=1)
    try:
        api = hmq.API(home=home)  # configured from HMQ_HOME, as hmq.api is
        assert _run(api, 3) == [0, 1, 4]
        stack.down(home)
        again = stack.up(home, workers=1, cores=1)
        assert again.url == first.url
        assert _run(api, 3) == [0, 1, 4]  # the same client object, no reset
        api.close()
    finally:
        stack.down(home)


def test_a_client_follows_the_stack_to_a_new_port(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = stack.up(home, workers=1, cores=1)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        api = hmq.API(home=home)
        assert _run(api, 2) == [0, 1]
        stack.down(home)
        blocker.bind(("127.0.0.1", int(first.url.rsplit(":", 1)[1])))  # someone else took the port
        blocker.listen()
        moved = stack.up(home, workers=1, cores=1)
        assert moved.url != first.url
        blocker.close()  # the old port now refuses connections
        assert _run(api, 2) == [0, 1]
        assert api.url == moved.url
        api.close()
    finally:
        blocker.close()
        stack.down(home)
