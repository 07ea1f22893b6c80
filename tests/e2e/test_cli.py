"""The command line: the embedded stack's life cycle, granting access, and tasks' output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hmq import stack
from tests.e2e.conftest import Stack
from tests.helpers import REPO, Server

HMQ = [sys.executable, "-m", "hmq"]


def _run(args: list[str], home: Path, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    home.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [*HMQ, *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=180,
        env={**env, "HMQ_HOME": str(home)},
        cwd=str(home),
    )
    if check:
        assert out.returncode == 0, f"hmq {args} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _group_members(pgids: set[int]) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) in pgids:
                    members.add(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return members


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert "hmq is up at http://127.0.0.1:" in _run(["up", "--workers", "2"], home).stdout
    status = json.loads(_run(["status", "--json"], home).stdout)
    assert status["running"] and status["url"].startswith("http://127.0.0.1:")
    assert len(status["workers"]) == 2 and all(w["alive"] and w["pid"] > 0 for w in status["workers"])
    assert "already" not in _run(["up"], home).stdout  # idempotent: the running stack is reported
    script = home / "run.py"
    script.write_text(
        "import hmq\n\n@hmq.task\ndef f(x):\n    return x + 1\n\nfor i in range(20):\n    f(i)\n"
        "t = f.submit()\nt.pull(blocking=True)\nprint(sum(t.results))\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}, "HMQ_HOME": str(home)}
    assert (
        subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        == "210"
    )
    pgids = {status["api"]["pid"], *(w["pid"] for w in status["workers"])}
    before = _group_members(pgids)
    assert len(before) > 3  # API, two workers and their executor processes
    assert _run(["down"], home).stdout.strip() == "hmq is down"
    assert all(not stack.pid_alive(pid) for pid in before), "processes left behind"
    assert not (home / "stack.json").exists()
    stopped = _run(["status"], home, check=False)
    assert stopped.returncode == 1 and "not running" in stopped.stdout
    assert _run(["down"], home).stdout.strip() == "hmq was not running"


def test_up_refuses_to_overwrite_a_deployment_config(tmp_path: Path, server: Server) -> None:
    home = tmp_path / "home"
    _run(["request-access", server.url], home)
    out = _run(["up"], home, check=False)
    assert out.returncode != 0 and "Use another HMQ_HOME" in out.stderr


def test_request_and_grant_access_on_the_command_line(tmp_path: Path, server: Server) -> None:
    admin_file = tmp_path / "admin.key"
    admin_file.write_text(server.admin_key.to_text())
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    request = _run(["request-access", server.url], alice).stdout.strip()
    assert request.startswith("ADD-USER_")
    assert (
        "granted user 'alice'"
        in _run(["grant-access", request, "alice", "--admin-key-file", str(admin_file)], alice).stdout
    )
    # the admin key may also be typed at the prompt
    request_b = _run(["request-access", server.url], bob).stdout.strip()
    assert (
        "granted user 'bob'"
        in _run(["grant-access", request_b, "bob"], bob, input=server.admin_key.to_text() + "\n").stdout
    )
    who = subprocess.run(
        [sys.executable, "-c", "import hmq; print(hmq.api.whoami()['name'])"],
        capture_output=True,
        text=True,
        env={**os.environ, "HMQ_HOME": str(alice)},
        check=True,
    )
    assert who.stdout.strip() == "alice"
    wrong = _run(["grant-access", request, "eve", "--admin-key-file", str(REPO / "README.md")], alice, check=False)
    assert wrong.returncode != 0 and "admin key not supported" in wrong.stderr
    again = _run(["request-access", "http://127.0.0.1:1"], alice, check=False)
    assert again.returncode != 0 and "not reachable" in again.stderr


def test_python_request_access_prints_the_signing_request(tmp_path: Path, server: Server) -> None:
    code = f"import hmq\nhmq.request_access({server.url!r})\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HMQ_HOME": str(tmp_path / "u")},
    )
    assert out.stdout.startswith("ADD-USER_")
    assert (tmp_path / "u" / "client.json").stat().st_mode & 0o077 == 0  # the key is private


CHATTY = """import json
import sys

import hmq

@hmq.task
def chatty(name):
    if name is None:
        return 0
    print(name, "out 1")
    print(name, "err 1", file=sys.stderr)
    print(name, "out 2")
    print(name, "err 2", file=sys.stderr)
    print(name, "out 3")
    return 1

for name in ("a", None, "c"):
    chatty(name)
tag = chatty.submit()
tag.pull(blocking=True)
print(json.dumps({"tag": tag.name, "ids": list(tag.task_ids), "logs": list(tag.logs)}))
"""


def _hmq(embedded: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HMQ, *args], capture_output=True, text=True, timeout=180, env=embedded.env())


def test_logs_show_what_tasks_printed_in_order(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY)
    out = json.loads(embedded.run(str(script)).strip().splitlines()[-1])
    a, silent, c = out["ids"]
    five = {n: "".join(f"{n} {line}\n" for line in ("out 1", "err 1", "out 2", "err 2", "out 3")) for n in "ac"}
    assert out["logs"] == [five["a"], None, five["c"]]  # tag.logs: all five lines, in order

    shown = _hmq(embedded, "logs", out["tag"])
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout == f"==> {a} <==\n{five['a']}==> {c} <==\n{five['c']}"
    tail = _hmq(embedded, "logs", out["tag"], "--task", c, "--tail", "2")
    assert (tail.returncode, tail.stdout) == (0, "c err 2\nc out 3\n")
    quiet = _hmq(embedded, "logs", out["tag"], "--task", silent)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", f"task {silent} printed nothing\n")


def test_logs_errors_are_one_clear_line(embedded: Stack, tmp_path: Path) -> None:
    unknown = _hmq(embedded, "logs", "nope_1")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "Error: unknown tag 'nope_1' (HTTP 404, unknown_tag)\n"
    script = tmp_path / "chatty.py"
    script.write_text(CHATTY)
    name = json.loads(embedded.run(str(script)).strip().splitlines()[-1])["tag"]
    stranger = "00000000-0000-4000-8000-000000000000"
    other = _hmq(embedded, "logs", name, "--task", stranger)
    assert (other.returncode, other.stderr) == (
        1,
        f"Error: tag {name!r} has no task {stranger} (HTTP 404, unknown_task)\n",
    )
    for args, problem in [
        (["--tail", "0"], "Invalid value for '--tail': 0 is not in the range x>=1."),
        (["--task", "not-a-uuid"], "Invalid value for '--task': 'not-a-uuid' is not a valid UUID."),
    ]:
        usage = _hmq(embedded, "logs", name, *args)
        assert (usage.returncode, usage.stderr) == (2, f"Error: {problem} (see 'hmq logs --help')\n")
    bad_name = _hmq(embedded, "logs", "no/such tag")
    assert (bad_name.returncode, bad_name.stderr) == (
        2,
        "Error: Invalid value for 'TAG': 'no/such tag' must be 1-200 letters, digits, '_', '.' or '-' "
        "(see 'hmq logs --help')\n",
    )


def test_workers_lists_the_fleet_and_marks_unisolated_workers(tmp_path: Path, server: Server) -> None:
    from tests.helpers import wait_for

    key_file = tmp_path / "admin.key"
    key_file.write_text(server.admin_key.to_text() + "\n")
    server.start_worker(tmp_path, name="sandboxed", datacenter="dc-a")
    server.start_worker(tmp_path, name="open", extra=("--isolation", "none"))
    home = tmp_path / "home"
    argv = ["workers", "--api", server.url, "--admin-key-file", str(key_file)]

    def listed() -> list[dict]:
        found = json.loads(_run([*argv, "--json"], home).stdout)
        return found if len(found) == 2 else []

    by_name = {w["name"]: w for w in wait_for(listed, timeout=60, interval=0.5, what="both workers to register")}
    assert by_name["open"]["isolation"] == "none"
    assert by_name["sandboxed"]["isolation"] == "bwrap" and by_name["sandboxed"]["datacenter"] == "dc-a"
    assert all(w["memory"] and w["cores"] == 1 and w["python"] for w in by_name.values())
    lines = {line.split()[0]: line for line in _run(argv, home).stdout.splitlines()}
    assert "WARNING: runs calls without isolation" in lines["open"] and "live" in lines["open"]
    assert "WARNING" not in lines["sandboxed"] and "isolation bwrap" in lines["sandboxed"]
    wrong = _run(["workers", "--api", server.url, "--admin-key-file", str(tmp_path / "nope")], home, check=False)
    assert wrong.returncode == 2 and "does not exist" in wrong.stderr


def test_up_passes_the_isolation_to_its_workers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        assert "hmq is up" in _run(["up", "--workers", "1", "--isolation", "none"], home).stdout
        status = json.loads(_run(["status", "--json"], home).stdout)
        log = Path(status["workers"][0]["log"]).read_text()
        assert "ISOLATION IS OFF" in log
        listed = json.loads(_run(["workers", "--json"], home).stdout)  # the local admin key and URL
        assert [w["isolation"] for w in listed] == ["none"]
    finally:
        _run(["down"], home)
    wrong = _run(["up", "--isolation", "sometimes"], home, check=False)
    assert wrong.returncode == 2 and "sometimes" in wrong.stderr


def test_share_sets_a_users_weight_and_refuses_what_it_cannot(embedded: Stack) -> None:
    from hmq.admin import Admin

    with Admin(embedded.state.url, (embedded.home / "admin.key").read_text()) as admin:
        name = next(u.name for u in admin.users() if u.role == "user")
        before = {u.name: u.share for u in admin.users()}
        unknown = _hmq(embedded, "share", "nobody", "2")
        assert (unknown.returncode, unknown.stdout) == (1, "")
        assert unknown.stderr == "Error: unknown user 'nobody' (HTTP 404, unknown_user)\n"
        zero = _hmq(embedded, "share", name, "0")
        assert zero.returncode == 2 and "Invalid value for 'WEIGHT'" in zero.stderr
        assert {u.name: u.share for u in admin.users()} == before  # nothing changed
        done = _hmq(embedded, "share", name, "2.5")
        assert (done.returncode, done.stdout, done.stderr) == (0, f"share of {name!r} is now 2.5\n", "")
        assert {u.name: u.share for u in admin.users()}[name] == 2.5
        assert _hmq(embedded, "share", name, "1").returncode == 0  # as it was, for the other tests
