"""A submit interrupted part way (Ctrl+C, an error) leaves no partial tag behind, or says where it is."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import hmq
from tests.helpers import Server


def _interrupt_once_registered(user: hmq.API, done: threading.Event) -> None:
    """Ctrl+C for the main thread as soon as the submit has registered some tasks."""
    while not done.is_set():
        tags = user.list_tags()
        if tags and tags[0].total > 0:
            os.kill(os.getpid(), signal.SIGINT)
            return
        done.wait(0.05)


def test_ctrl_c_during_submit_deletes_what_it_registered(server: Server) -> None:
    user = server.user()
    watcher = server.client(user.identity)

    @hmq.task
    def inc(x):
        return x + 1

    for i in range(60_000):  # several registrations of 16,000 tasks each
        inc(i)
    done = threading.Event()
    thread = threading.Thread(target=_interrupt_once_registered, args=(watcher, done), daemon=True)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            inc.submit(quiet=True, api=user)
    finally:
        done.set()
        thread.join()
    (note,) = info.value.__notes__
    assert note.startswith("the submit of tag inc_") and "tasks it had registered were deleted" in note
    assert "call inc.submit() again to send them all" in note
    assert user.list_tags() == []  # nothing of it is queued
    assert len(inc) == 60_000  # the calls are still recorded


def test_a_submit_cut_off_by_an_outage_names_the_partial_tag(server: Server) -> None:
    from hmq import API

    user = server.user()
    quick = API(server.url, user.identity, server.admin_key.identity.public, retry_deadline=0)
    server.clients.append(quick)

    @hmq.task
    def inc(x):
        return x + 1

    for i in range(60_000):
        inc(i)
    done = threading.Event()

    def stop_the_api_once_registered() -> None:
        while not done.is_set():
            tags = user.list_tags()
            if tags and tags[0].total > 0:
                server.uvicorn.should_exit = True  # the API goes away mid-submit
                return
            done.wait(0.05)

    thread = threading.Thread(target=stop_the_api_once_registered, daemon=True)
    thread.start()
    try:
        with pytest.raises((hmq.Unreachable, hmq.StorageError)) as info:  # the local store is the API too
            inc.submit(quiet=True, api=quick)
    finally:
        done.set()
        thread.join()
    (note,) = info.value.__notes__
    assert note.startswith("the submit of tag inc_") and " tasks, which stay queued" in note and "up to " in note
    name = note.split()[4]
    assert f"hmq.Tag.from_queue({name!r}).delete()" in note and f"hmq.Tag.from_queue({name!r}).pull()" in note
