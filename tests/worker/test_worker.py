"""The worker against a real API: running, verifying, crashing, being killed, being cancelled."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

import hmq
from hmq import crypto
from lambdas.db.models import Chunk, User
from tests.helpers import Server, stop_process, submit, wait_for


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


def test_a_corrupt_function_object_is_named_and_replaced_by_the_next_submit(server: Server, tmp_path: Path) -> None:
    def cube(x):
        return x**3

    user = server.user()
    first = submit(user, cube, [(2,), (3,)])  # no worker yet: nothing has fetched the function
    (function_key,) = [k for k in server.object_keys() if "/f/" in k]
    data = bytearray(server.read_object(function_key))
    data[-1] ^= 0xFF  # e.g. a bit flipped at rest
    server.write_object(function_key, bytes(data))
    server.start_worker(tmp_path)
    _pull(first)
    errors = list(first.errors)
    assert all("the function object of cube is corrupt" in e and "submitting again replaces it" in e for e in errors)
    again = submit(user, cube, [(4,)])  # the same function: registering it replaces the corrupt copy
    _pull(again)
    assert list(again.results) == [64]
    assert function_key not in server.object_keys()  # the corrupt copy is gone


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


def test_users_never_share_an_executor(server: Server, tmp_path: Path) -> None:
    def leave_a_trace(secret):
        import builtins
        import sys
        import uuid

        builtins.hmq_left_behind = secret  # state that would survive in a shared process
        return sys.__dict__.setdefault("hmq_process", uuid.uuid4().hex)  # PIDs repeat across sandboxes

    def look_for_traces():
        import builtins
        import sys
        import uuid

        return [getattr(builtins, "hmq_left_behind", None), sys.__dict__.setdefault("hmq_process", uuid.uuid4().hex)]

    alice, bob = server.user("alice"), server.user("bob")
    server.start_worker(tmp_path)  # one core: every call goes through the same runner
    first = submit(alice, leave_a_trace, [("alice's secret",)])
    _pull(first)
    again = submit(alice, look_for_traces, [()])
    snoop = submit(bob, look_for_traces, [()])
    _pull(again)
    _pull(snoop)
    (alice_pid,) = first.results
    assert list(again.results) == [["alice's secret", alice_pid]]  # one user's executor is reused
    (bob_sees,) = snoop.results
    assert bob_sees[0] is None and bob_sees[1] != alice_pid


def test_calls_do_not_see_the_workers_private_environment(server: Server, tmp_path: Path) -> None:
    def environment():
        import os

        return sorted(k for k in os.environ if k.startswith(("HMQ_", "AWS_")))

    user = server.user()
    server.start_worker(tmp_path, env={"HMQ_API_URL": server.url, "AWS_SECRET_ACCESS_KEY": "do-not-leak"})
    tag = submit(user, environment, [()])
    _pull(tag)
    assert list(tag.results) == [[]]


def test_dropping_tasks_keeps_the_queue_runners_hold(tmp_path: Path, admin_key: crypto.AdminKey) -> None:
    from hmq.credentials import WorkerCredentials
    from worker.prepare import Job
    from worker.runner import CachedWorker
    from worker.settings import WorkerSettings

    settings = WorkerSettings(url="http://127.0.0.1:9", cache_dir=tmp_path)
    worker = CachedWorker(WorkerCredentials.create(admin_key, "w", settings.url), settings)
    user = crypto.Identity.generate().public
    jobs = [Job(f"00000000-0000-4000-8000-00000000000{i}", "t", user, [], 1, "d", b"", b"") for i in range(3)]
    worker._held.update(j.task_id for j in jobs)
    worker._queue.extend(jobs)
    queue = worker._queue  # what a runner captured before the heartbeat's drop
    worker._drop({jobs[0].task_id})
    assert worker._queue is queue and [j.task_id for j in queue] == [jobs[1].task_id, jobs[2].task_id]
    assert jobs[0].task_id not in worker._held
    worker.session.close()
    worker.pool.close()


def test_an_unknown_executor_user_is_refused_at_start(tmp_path: Path) -> None:
    from hmq import ConfigurationError
    from worker.pool import ExecutorPool

    with pytest.raises(ConfigurationError, match="does not exist"):
        ExecutorPool(tmp_path, 1, user="hmq-no-such-user")


@pytest.fixture(scope="session")
def world_readable_worker_python() -> Iterator[str]:
    """A worker interpreter other users can run: a venv of the system Python, outside /root."""
    import shutil
    import subprocess
    import tempfile

    from tests.helpers import REPO

    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if os.geteuid() != 0 or system is None:
        pytest.skip("needs root (to switch users) and a system Python 3")
    root = Path(tempfile.mkdtemp(prefix="hmq-sysvenv-"))
    root.chmod(0o755)
    try:
        subprocess.run([system, "-m", "venv", str(root / "venv")], check=True, capture_output=True)
        python = str(root / "venv" / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{REPO}[worker]"],
            check=True,
            capture_output=True,
            timeout=900,
        )
        yield python
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_executor_user_cannot_read_the_credentials(
    local_server: Server, tmp_path: Path, world_readable_worker_python: str
) -> None:
    import pwd
    import shutil
    import tempfile

    def probe(path):
        import os

        try:
            with open(path) as fh:
                return ["read", fh.read(20), os.getuid()]
        except PermissionError:
            return ["refused", None, os.getuid()]

    server = local_server
    proc = None
    cache = Path(tempfile.mkdtemp(prefix="hmq-exec-user-"))
    cache.chmod(0o755)  # the executor user must reach its scratch directory
    try:
        user = server.user()
        # the credentials sit in a directory anyone may enter: only their mode (0600) protects them
        proc = server.start_worker(
            cache, cache_dir=cache, extra=("--executor-user", "nobody"), python=world_readable_worker_python
        )
        tag = submit(user, probe, [(str(proc.credentials),)])
        _pull(tag)
        assert list(tag.results) == [["refused", None, pwd.getpwnam("nobody").pw_uid]], list(tag.errors)
        assert proc.credentials.parent == cache and oct(proc.credentials.stat().st_mode & 0o777) == "0o600"
        readable = submit(user, probe, [(str(cache / "world-readable.txt"),)])
        (cache / "world-readable.txt").write_text("anyone may read this")
        (cache / "world-readable.txt").chmod(0o644)
        _pull(readable)
        assert list(readable.results)[0][0] == "read"  # the probe can read what it may: the test can fail
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(cache, ignore_errors=True)


def test_a_worker_builds_nothing_for_a_direct_reference(tmp_path: Path) -> None:
    from worker.envs import EnvManager

    envs = EnvManager(tmp_path / "envs")  # a task queued before the API refused them still fails
    with pytest.raises(ValueError, match=r"'x @ file:///tmp/pkg' is a direct reference \(name @ URL\)"):
        envs.python(["x @ file:///tmp/pkg"])
    assert list((tmp_path / "envs").iterdir()) == []


def _uids_of(needle: str) -> set[int]:
    """Owners of the live processes with ``needle`` in their command line."""
    uids = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle.encode() in (entry / "cmdline").read_bytes():
                uids.add(entry.stat().st_uid)
        except OSError:
            continue
    return uids


def _not_root_only(tree: Path) -> list[str]:
    """Entries of ``tree`` not owned by root, or (symlinks aside) writable by others or set-id."""
    import stat

    bad = []
    for directory, dirs, files in os.walk(tree):
        for name in [".", *dirs, *files]:
            st = os.lstat(os.path.join(directory, name))
            loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID)
            if st.st_uid != 0 or (loose and not stat.S_ISLNK(st.st_mode)):
                bad.append(os.path.join(directory, name))
    return bad


@pytest.mark.slow
def test_uid_isolation_builds_environments_as_the_executor_account_into_a_read_only_cache(
    local_server: Server, tmp_path: Path, world_readable_worker_python: str
) -> None:
    import pwd
    import shutil
    import tempfile
    import threading

    from worker.envs import READY, env_key

    def probe():
        import os
        import pathlib
        import sys

        import six

        print("imported six", six.__version__ is not None)  # output reaches the user under uid too
        attempts = {}
        targets = [pathlib.Path(six.__file__), pathlib.Path(six.__file__).parent / "new.py", pathlib.Path(sys.prefix)]
        for target in targets:
            try:
                if target.is_dir():
                    (target / "new-file").write_text("x")
                else:
                    target.open("a").close()
                attempts[str(target)] = "written"
            except PermissionError:
                attempts[str(target)] = "refused"
        return [os.getuid(), sys.prefix, attempts]

    nobody = pwd.getpwnam("nobody")
    cache = Path(tempfile.mkdtemp(prefix="hmq-uid-build-"))
    cache.chmod(0o755)
    env = cache / "envs" / env_key(["six"])
    env.mkdir(parents=True)  # what a crashed build could leave: the account's directory, a marker planted in it
    (env / READY).write_text('{"packages": ["six"]}')
    for path in (env, env / READY):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    builders: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            builders.update(_uids_of(f"{env}/bin/python"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        local_server.start_worker(
            cache, cache_dir=cache, extra=("--executor-user", "nobody"), python=world_readable_worker_python
        )
        tag = submit(local_server.user(), probe, [()], packages=["six"])
        _pull(tag, timeout=600)
        done.set()
        watcher.join()
        (result,) = tag.results
        assert result is not None, list(tag.errors)
        uid, prefix, attempts = result
        assert uid == nobody.pw_uid and prefix == str(env)
        assert set(attempts.values()) == {"refused"}, attempts  # tasks cannot write the environment
        assert list(tag.logs) == ["imported six True\n"]
        assert builders == {nobody.pw_uid}  # pip ran as the executor account, never as root
        assert _not_root_only(env) == []  # every file the worker's, none writable by others
        assert json.loads((env / READY).read_text())["packages"] == ["six"]
        assert sorted(p.name for p in env.parent.iterdir()) == sorted([env.name, f"{env.name}.lock"])  # no leftovers
    finally:
        done.set()
        for proc in local_server.workers:
            stop_process(proc)
        shutil.rmtree(cache, ignore_errors=True)


def test_copying_a_build_follows_no_link_and_takes_only_the_builders_files(tmp_path: Path) -> None:
    from worker.envs import PackageEnvError, copy_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for tasks")
    src = tmp_path / "built"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "mod.py").write_text("x = 1\n")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    (src / "bin" / "tool").chmod(0o4777)  # set-uid and writable by all: neither survives the copy
    (src / "lib" / "escape").symlink_to(outside)  # a link out of the tree stays a link, not a copy
    os.utime(src / "lib" / "mod.py", ns=(1, 2_000_000_000))
    dst = tmp_path / "copy"
    dst.mkdir()
    copy_tree(src, dst, os.getuid())
    assert (dst / "lib" / "mod.py").read_text() == "x = 1\n" and (dst / "lib" / "mod.py").stat().st_mtime_ns == 2e9
    assert oct((dst / "bin" / "tool").stat().st_mode & 0o7777) == "0o755"
    assert (dst / "lib" / "escape").is_symlink() and os.readlink(dst / "lib" / "escape") == str(outside)
    assert oct((dst / "lib").stat().st_mode & 0o777) == "0o755"

    empty = [tmp_path / "empty-1", tmp_path / "empty-2"]
    for path in empty:
        path.mkdir()
    os.mkfifo(src / "lib" / "pipe")
    with pytest.raises(PackageEnvError, match="not a file, directory or link"):
        copy_tree(src, empty[0], os.getuid())
    (src / "lib" / "pipe").unlink()
    # a file the build account does not own (say, a hard link to one of root's) is refused
    with pytest.raises(PackageEnvError, match="not a file of the account that built it"):
        copy_tree(src, empty[1], os.getuid() + 1)
