"""The worker against a real API: running, verifying, crashing, being killed, being cancelled."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import update

import hmq
from hmq import crypto
from lambdas.db.models import Chunk, User
from tests.helpers import Server, submit, wait_for


def _pull(tag: hmq.Tag, timeout: float = 60) -> None:
    wait_for(lambda: tag.pull() == 0, timeout=timeout, interval=0.1, what=f"tag {tag.name} to finish")


def test_failing_task_yields_its_traceback(server: Server, tmp_path: Path) -> None:
    def divide(a, b):
        return a / b

    user = server.user()
    server.start_worker(tmp_path)
    tag = submit(user, divide, [(1, 2), (1, 0)])
    _pull(tag)
    assert list(tag.results) == [0.5, None]
    errors = list(tag.errors)
    assert errors[0] is None
    assert "Traceback" in errors[1] and "ZeroDivisionError: division by zero" in errors[1] and "in divide" in errors[1]
    assert (tag.n_results, tag.n_errors) == (1, 1)


def test_unserialisable_result_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    user = server.user()
    server.start_worker(tmp_path)
    tag = submit(user, lambda: object(), [()])
    _pull(tag)
    assert "not JSON serialisable" in list(tag.errors)[0]


def test_executor_hygiene_prints_workdir_rng_threads(server: Server, tmp_path: Path) -> None:
    def probe(step):
        import os
        import random

        print("user output must not disturb the worker protocol")
        if step == "seed":
            random.seed(42)
            with open("left-behind.txt", "w") as fh:
                fh.write("x")
            return os.getcwd()
        if step == "draw":
            return [random.random(), sorted(os.listdir(".")), os.getcwd()]
        return os.environ.get("OMP_NUM_THREADS")

    user = server.user()
    server.start_worker(tmp_path, cores=2)
    tag = submit(user, probe, [("seed",), ("draw",)], ncores=2)
    threads = submit(user, probe, [("threads",)], ncores=2)
    _pull(tag)
    _pull(threads)
    cwd, (value, listing, cwd2) = list(tag.results)
    import random

    assert value != random.Random(42).random()  # reseeded between calls
    assert listing == [] and cwd == cwd2  # the same, emptied working directory
    assert list(threads.results) == ["2"]


def test_crashing_call_fails_alone_and_the_worker_goes_on(server: Server, tmp_path: Path) -> None:
    def maybe_crash(x):
        if x == 1:
            os._exit(3)
        return x

    user = server.user()
    proc = server.start_worker(tmp_path)
    tag = submit(user, maybe_crash, [(0,), (1,), (2,)])
    _pull(tag)
    assert list(tag.results) == [0, None, 2]
    assert "died (exit code 3)" in list(tag.errors)[1]
    assert proc.poll() is None


def test_tampered_call_is_rejected_and_the_worker_survives(server: Server, tmp_path: Path) -> None:
    user = server.user()
    proc = server.start_worker(tmp_path)
    tag = submit(user, lambda x: x, [(1,), (2,)])
    # The server (or anyone with write access to the store) alters the stored chunk:
    (chunk,) = [k for k in server.object_keys() if "/c/" in k]
    data = bytearray(server.read_object(chunk))
    data[-3] ^= 0xFF  # inside the last call
    server.write_object(chunk, bytes(data))
    _pull(tag)
    assert list(tag.results)[0] == 1
    assert "does not match the signed manifest (tampered)" in list(tag.errors)[1]
    good = submit(user, lambda: "still working", [()])
    _pull(good)
    assert list(good.results) == ["still working"] and proc.poll() is None


def test_function_swapped_by_the_server_is_rejected(server: Server, tmp_path: Path) -> None:
    user = server.user()
    harmless = submit(user, lambda: "harmless", [()])
    evil = submit(user, lambda: "other function", [()])
    ctx = server.app.state.ctx
    with ctx.index.write() as session:  # point the first chunk at the second function
        chunks = session.query(Chunk).order_by(Chunk.id).all()
        session.execute(update(Chunk).where(Chunk.id == chunks[0].id).values(function_id=chunks[1].function_id))
    server.start_worker(tmp_path)
    _pull(harmless)
    _pull(evil)
    assert "another function than the one the user signed" in list(harmless.errors)[0]
    assert list(evil.results) == ["other function"]


def test_certificate_forged_by_the_server_is_rejected(server: Server, tmp_path: Path) -> None:
    user = server.user("victim")
    tag = submit(user, lambda: 1, [()])
    forger = crypto.AdminKey.generate()  # a compromised API cannot sign as the admin
    forged = crypto.issue_certificate(forger.identity, "victim", "user", user.identity.public)
    with server.app.state.ctx.index.write() as session:
        session.execute(update(User).where(User.name == "victim").values(certificate=json.dumps(forged)))
    server.start_worker(tmp_path)
    _pull(tag)
    assert "rejected by worker" in list(tag.errors)[0] and "invalid signature" in list(tag.errors)[0]


def test_worker_killed_mid_task_the_task_runs_elsewhere(make_server, tmp_path: Path) -> None:
    server = make_server(lease_seconds=2.0)

    def slow(x):
        import time

        time.sleep(x)
        return x

    user = server.user()
    first = server.start_worker(tmp_path)
    tag = submit(user, slow, [(3,)])
    wait_for(lambda: user.get_tag_status(tag.name)["running"] == 1, what="task to start")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its executor vanish
    first.wait()
    server.start_worker(tmp_path)
    _pull(tag, timeout=60)
    assert list(tag.results) == [3]


def test_cancel_stops_a_running_task(make_server, tmp_path: Path) -> None:
    server = make_server(lease_seconds=1.0)

    def sleeper(x):
        import time

        time.sleep(x)
        return x

    user = server.user()
    proc = server.start_worker(tmp_path)
    tag = submit(user, sleeper, [(60,)])
    wait_for(lambda: user.get_tag_status(tag.name)["running"] == 1, what="task to start")
    started = time.monotonic()
    assert tag.cancel() == list(tag.task_ids)
    after = submit(user, sleeper, [(0,)])
    _pull(after, timeout=30)  # the worker dropped the cancelled call and went on
    assert time.monotonic() - started < 30 and proc.poll() is None
    assert list(tag.results) == [None] and tag.pull() == 0


def test_sigterm_hands_unfinished_tasks_back(server: Server, tmp_path: Path) -> None:
    def sleeper(x):
        import time

        time.sleep(x)

    user = server.user()
    proc = server.start_worker(tmp_path)
    tag = submit(user, sleeper, [(60,), (60,)])
    wait_for(lambda: user.get_tag_status(tag.name)["running"] >= 1, what="task to start")
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    status = user.get_tag_status(tag.name)
    assert (status["pending"], status["running"]) == (2, 0)
    assert user.retrieve_results(list(tag.task_ids)) == dict.fromkeys(tag.task_ids)  # no attempt was lost


@pytest.mark.slow
def test_packages_are_installed_into_a_cached_environment(server: Server, tmp_path: Path, worker_cache: Path) -> None:
    def version():
        import numpy

        return [numpy.__version__, float(numpy.float64(1.5))]

    user = server.user()
    server.start_worker(tmp_path, cache_dir=worker_cache)
    tag = submit(user, version, [()], packages=["numpy"])
    _pull(tag, timeout=600)
    assert list(tag.results)[0][1] == 1.5
    bad = submit(user, version, [()], packages=["hmq-no-such-package-anywhere==0.0.1"])
    _pull(bad, timeout=600)
    assert "installing hmq-no-such-package-anywhere==0.0.1 failed on the worker" in list(bad.errors)[0]
