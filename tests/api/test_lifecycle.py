"""Task lifecycle: leases, attempts, cancellation, deletion, and what pull sees of them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

import hmq
from hmq import crypto
from tests.helpers import ManualClock, ManualWorker, Server, submit


def test_claims_never_hand_a_task_to_two_workers(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, lambda x: x, [(i,) for i in range(50)])
    a, b = ManualWorker(server, tmp_path), ManualWorker(server, tmp_path)
    got_a = {str(t.id) for g in a.claim(30) for t in g.tasks}
    got_b = {str(t.id) for g in b.claim(30) for t in g.tasks}
    assert len(got_a) == 30 and len(got_b) == 20 and not got_a & got_b


def test_expired_lease_requeues_then_fails_after_max_attempts(make_server, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=30, max_attempts=2)
    user = server.user()
    tag = submit(user, lambda: 1, [()])
    w = ManualWorker(server, tmp_path)
    first = w.claim()[0].tasks[0]
    assert first.attempt == 0
    clock.advance(29)
    assert w.claim() == []  # still leased
    clock.advance(6)  # the worker "died": no heartbeat, no result (and the lease sweep is due again)
    second = w.claim()[0].tasks[0]
    assert (second.id, second.attempt) == (first.id, 1)
    clock.advance(31)
    status = user.get_tag_status(tag.name)
    assert (status["failed"], status["pending"], status["running"]) == (1, 0, 0)
    assert tag.pull() == 0
    (error,) = list(tag.errors)
    assert "stopped reporting 2 times" in error
    assert w.claim() == []  # never handed out again


def test_heartbeat_keeps_the_lease(make_server, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=30)
    user = server.user()
    tag = submit(user, lambda: 1, [()])
    w = ManualWorker(server, tmp_path)
    task_id = str(w.claim()[0].tasks[0].id)
    for _ in range(4):  # 80 s in all, more than twice the lease
        clock.advance(20)
        assert w.api.sync_tasks("default", [task_id]) == []
    assert user.get_tag_status(tag.name)["running"] == 1


def test_a_lease_extended_moments_ago_is_still_held_and_another_workers_task_is_dropped(
    make_server, tmp_path: Path
) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=32)
    user = server.user()
    submit(user, lambda: 1, [(), ()])
    a, b = ManualWorker(server, tmp_path), ManualWorker(server, tmp_path)
    mine, theirs = str(a.claim(1)[0].tasks[0].id), str(b.claim(1)[0].tasks[0].id)
    clock.advance(1)  # within a sixteenth of the lease: not rewritten, still the worker's
    assert a.api.sync_tasks("default", [mine, theirs]) == [theirs]
    clock.advance(30)  # a heartbeat now extends it: it outlives its first lease
    assert a.api.sync_tasks("default", [mine]) == []
    clock.advance(30)
    assert a.api.sync_tasks("default", [mine]) == []
    assert user.get_tasks_status([mine, theirs]) == {mine: "running", theirs: "pending"}  # b never beat


def test_result_for_a_cancelled_task_is_ignored(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim()
    ids = [str(t.id) for t in group.tasks]
    assert tag.cancel() == ids
    assert w.api.sync_tasks("default", ids) == ids  # the worker learns to drop them
    out = w.complete(group, {i: "late" for i in ids})
    assert out.accepted == 0 and sorted(map(str, out.ignored)) == sorted(ids)
    assert user.get_tag_status(tag.name)["cancelled"] == 2
    assert tag.pull() == 0  # cancelled tasks are not waited for
    assert list(tag.results) == [None, None] and tag.states["cancelled"] == 2


def test_cancel_and_delete_by_ids(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(4)])
    ids = list(tag.task_ids)
    assert user.cancel_tasks(tasks=ids[:2]) == ids[:2]
    assert user.cancel_tasks(tasks=ids[:2]) == []  # already cancelled
    assert user.delete_tasks(tasks=ids[1:3]) == ids[1:3]
    statuses = user.get_tasks_status(ids)
    assert [statuses[i] for i in ids] == ["cancelled", None, None, "pending"]
    with pytest.raises(hmq.UsageError):
        user.cancel_tasks()


def test_delete_removes_rows_and_objects_and_pull_stops_waiting(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(3)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim(1)
    w.complete(group, {str(group.tasks[0].id): 0})
    objects = lambda: [k for k in server.object_keys() if "/f/" not in k]  # noqa: E731 - functions are kept
    assert len(objects()) == 2  # the chunk and one result object
    assert tag.pull() == 2
    other = hmq.Tag.from_queue(tag.name, api=user)  # a second copy, as on another machine
    deleted = tag.delete()
    assert sorted(deleted) == sorted(tag.task_ids)
    assert objects() == []
    with pytest.raises(hmq.NotFound):
        user.get_tag_status(tag.name)
    assert other.pull() == 0  # deleted tasks never look open forever
    assert other.states["deleted"] == 3


def test_delete_downloaded_only_keeps_the_rest(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(3)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim(1)
    w.complete(group, {str(group.tasks[0].id): "r"})
    assert tag.pull() == 2
    assert tag.delete(downloaded_only=True) == [str(group.tasks[0].id)]
    assert user.get_tag_status(tag.name)["total"] == 2
    assert list(tag.results)[0] == "r"  # local results stay


def test_pull_with_subset_and_from_queue(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(5)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim()
    w.complete(group, {str(t.id): i * 10 for i, t in enumerate(group.tasks)})
    ids = list(tag.task_ids)
    assert tag.pull(tasks_subset=ids[:2]) == 0
    assert list(tag.results) == [0, 10, None, None, None]
    copy = hmq.Tag.from_queue(tag.name, api=user)
    assert list(copy.task_ids) == ids and copy.pull() == 0
    assert list(copy.results) == [0, 10, 20, 30, 40]
    assert user.retrieve_results(ids[:1]) == {ids[0]: {"status": "completed", "result": 0, "error": None}}


def test_worker_rejection_reaches_the_user(server: Server, tmp_path: Path) -> None:
    from hmq import wire

    user = server.user()
    tag = submit(user, lambda: 1, [()])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim()
    w.api.store_results(
        wire.CompleteIn(rejected=[wire.RejectedTask(id=group.tasks[0].id, error="rejected: bad signature")])
    )
    assert tag.pull() == 0 and list(tag.errors) == ["rejected: bad signature"]


def test_datacenter_and_core_placement(server: Server, tmp_path: Path) -> None:
    user = server.user()
    submit(user, lambda: 1, [()], datacenters=["hpc_a"])
    submit(user, lambda: 2, [()], ncores=4)
    elsewhere = ManualWorker(server, tmp_path, datacenter="cloud", cores=8)
    assert [g.tasks[0].id for g in elsewhere.claim(10, available=2)] == []
    big = elsewhere.claim(10, available=8)
    assert len(big) == 1  # the 4-core task, not the one pinned to hpc_a
    hpc = ManualWorker(server, tmp_path, datacenter="hpc_a", cores=1)
    assert len(hpc.claim(10)) == 1


def test_tasks_no_worker_can_run_fail_after_the_placement_timeout(make_server, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, placement_timeout_seconds=60)
    user = server.user()
    gone = submit(user, lambda: 1, [()], datacenters=["decommissioned"])
    big = submit(user, lambda: 1, [()], ncores=64)
    fine = submit(user, lambda: 1, [()])
    ManualWorker(server, tmp_path, datacenter="cloud", cores=8)  # seen: runs "fine" only
    clock.advance(40)
    ManualWorker(server, tmp_path, datacenter="cloud", cores=8)  # still seen after the cutoff
    assert user.get_tag_status(gone.name)["pending"] == 1  # not yet: 40 s < 60 s
    clock.advance(30)
    assert gone.pull() == 0 and big.pull() == 0
    assert "datacenter(s) decommissioned" in list(gone.errors)[0] and "has been seen for" in list(gone.errors)[0]
    assert "with 64 core(s)" in list(big.errors)[0]
    assert user.get_tag_status(fine.name)["pending"] == 1  # a worker can run it: it keeps waiting


@pytest.mark.parametrize("n", [6, 7])
def test_cancel_and_delete_a_tag_across_pages(make_server, n: int) -> None:
    server = make_server(tag_page_tasks=3, select_page=2)  # pages of 3: 6 ends exactly on a page
    user = server.user()
    tag = submit(user, lambda x: x, [(i,) for i in range(n)])
    ids = list(tag.task_ids)
    assert sorted(user.cancel_tasks(tag=tag.name)) == sorted(ids)
    assert sorted(tag.delete()) == sorted(ids)
    assert server.object_keys() == [k for k in server.object_keys() if "/f/" in k]  # only the function is kept


def test_a_retried_report_keeps_the_results(server: Server, tmp_path: Path) -> None:
    from hmq import formats, wire

    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim()
    ids = [str(t.id) for t in group.tasks]
    user_key = crypto.verify_certificate(group.certificate, w.creds.admin)
    records = [formats.ResultRecord(t, formats.KIND_RESULT, formats.compress(formats.to_json(t))) for t in ids]
    blob = formats.encode_results(w.creds.identity, w.creds.certificate, user_key, group.tag, records)
    slot = w.api.result_slots(1)[0]
    w.api.transport.put_object(slot.url, blob)
    body = wire.CompleteIn(results=[wire.StoredResults(key=slot.key, tag=group.tag, completed=ids)])
    first = w.api.store_results(body)
    again = w.api.store_results(body)  # as if the first answer had been lost
    assert first.accepted == again.accepted == 2 and again.ignored == []
    assert slot.key in server.object_keys()
    assert tag.pull() == 0 and list(tag.results) == ids


def test_a_report_of_a_result_object_not_uploaded_is_refused_and_changes_nothing(
    server: Server, tmp_path: Path
) -> None:
    """The report's objects are looked up while its transaction records the results: a
    missing one is still the answer, and nothing of the report is kept."""
    from hmq import formats, wire

    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim()
    ids = [str(t.id) for t in group.tasks]
    slot = w.api.result_slots(1)[0]
    body = wire.CompleteIn(results=[wire.StoredResults(key=slot.key, tag=group.tag, completed=ids)])
    with pytest.raises(hmq.BadRequest, match=f"result object '{slot.key}' has not been uploaded"):
        w.api.store_results(body)
    assert user.get_tasks_status(ids) == {i: "running" for i in ids}
    assert w.api.sync_tasks("default", ids) == []  # still leased to this worker
    user_key = crypto.verify_certificate(group.certificate, w.creds.admin)
    records = [formats.ResultRecord(t, formats.KIND_RESULT, formats.compress(formats.to_json(t))) for t in ids]
    w.api.transport.put_object(
        slot.url, formats.encode_results(w.creds.identity, w.creds.certificate, user_key, group.tag, records)
    )
    assert w.api.store_results(body).accepted == 2  # the same report, once the object is there
    assert tag.pull() == 0 and list(tag.results) == ids


def test_heartbeat_extends_only_the_tasks_the_worker_names(make_server, tmp_path: Path) -> None:
    clock = ManualClock()
    server = make_server(clock=clock, lease_seconds=30)
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,)])
    w = ManualWorker(server, tmp_path)
    kept, forgotten = (str(t.id) for t in w.claim()[0].tasks)
    for _ in range(4):  # the worker lost track of "forgotten" (e.g. a claim answer it never got)
        clock.advance(10)
        assert w.api.sync_tasks("default", [kept]) == []
    assert user.get_tasks_status([kept, forgotten]) == {kept: "running", forgotten: "pending"}
    assert user.get_tag_status(tag.name)["running"] == 1


def test_a_missing_result_object_fails_its_tasks_and_pull_goes_on(server: Server, tmp_path: Path) -> None:
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,), (3,)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim(2)
    w.complete(group, {str(t.id): "lost" for t in group.tasks})
    (result_key,) = [k for k in server.object_keys() if k.startswith("w/")]
    server.store.delete([result_key])  # e.g. a lifecycle rule expired it
    (rest,) = w.claim()
    w.complete(rest, {str(rest.tasks[0].id): "kept"})
    assert tag.pull() == 0
    assert list(tag.results) == [None, None, "kept"]
    assert all("gone from the object store" in e for e in list(tag.errors)[:2])
    assert tag.pull() == 0  # and later pulls do not fail either


def _tampered(server: Server, tmp_path: Path) -> tuple[hmq.Tag, str, bytes]:
    """A tag of three tasks, all completed by a worker into one result object, which is then
    altered in the store; returns the tag, the object's key and its true bytes."""
    user = server.user()
    tag = submit(user, lambda x: x, [(1,), (2,), (3,)])
    w = ManualWorker(server, tmp_path)
    (group,) = w.claim(3)
    w.complete(group, {str(t.id): i for i, t in enumerate(group.tasks)})
    (key,) = [k for k in server.object_keys() if k.startswith("w/")]
    good = server.read_object(key)
    server.write_object(key, good[:-1] + bytes([good[-1] ^ 1]))
    return tag, key, good


def test_a_tampered_result_object_leaves_its_tasks_open_until_it_is_restored(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tag, key, good = _tampered(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="hmq"):
        assert tag.pull() == 3  # nothing failed for good
    assert tag.n_errors == 0
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"the result object {key} failed verification and was not used")
    assert warning.endswith("its 3 task(s) stay open and the next pull tries again (1 of 3)")
    server.write_object(key, good)
    assert tag.pull() == 0
    assert list(tag.results) == [0, 1, 2] and tag.n_errors == 0


def test_a_result_object_that_stays_tampered_fails_its_tasks_with_the_reason(server: Server, tmp_path: Path) -> None:
    tag, key, _ = _tampered(server, tmp_path)
    assert tag.pull(blocking=True) == 0  # bounded: the third failed verification is final
    errors = list(tag.errors)
    assert all(e.startswith(f"the result object {key} failed verification") for e in errors)
    assert all(e.endswith("(tried 3 times)") for e in errors)


def test_claims_skip_tasks_of_a_revoked_user(server: Server, tmp_path: Path) -> None:
    from sqlalchemy import update

    from lambdas.db.models import User

    user = server.user("soon-revoked")
    submit(user, lambda: 1, [()])
    with server.app.state.ctx.index.write() as session:  # revoked between submit and claim
        session.execute(update(User).where(User.name == "soon-revoked").values(revoked=time.time()))
    assert ManualWorker(server, tmp_path).claim() == []
