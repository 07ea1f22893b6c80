"""`hmq dashboard` against a real `hmq up` stack: started as a user starts it, its URL read from
its first line, driven in Debian's chromium (Playwright), and its door tested without a browser."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.e2e.conftest import Stack

SUBMIT = """
import sys, hmq

@hmq.task
def work(x, seconds):
    import time
    time.sleep(seconds)
    print("working on", x)
    if x in FAIL:
        raise ValueError(f"bad input {x}")
    return x * x

FAIL = set(json.loads(sys.argv[3]))
for i in range(int(sys.argv[1])):
    work(i, float(sys.argv[2]))
print(work.submit(tag=sys.argv[4]).name)
"""


ONE_BACKEND = pytest.mark.parametrize("embedded", ["sqlite-local"], indirect=True)
"""For what does not depend on the backend (the command itself, the door): the embedded stack of
SQLite only. The pages and the door run against both."""


class Dashboard:
    """`hmq dashboard` in a process of its own, with the stack's HMQ_HOME."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hmq", "dashboard", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready, "hmq dashboard printed no URL within 60 s"
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        parsed = urlparse(self.url)
        assert (parsed.scheme, parsed.hostname, parsed.path) == ("http", "127.0.0.1", "/"), self.url
        self.base = f"http://127.0.0.1:{parsed.port}"
        self.port = parsed.port
        self.token = parse_qs(parsed.query)["token"][0]
        self.stderr = ""

    def stop(self) -> int:
        """Ctrl-C; the exit status (what it wrote to stderr is kept in ``stderr``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, self.stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
        return self.proc.returncode


@pytest.fixture
def dashboard(embedded: Stack) -> Iterator[Dashboard]:
    board = Dashboard(embedded.env())
    try:
        yield board
    finally:
        board.stop()


def _submit(stack: Stack, n: int, seconds: float, tag: str, fail: tuple[int, ...] = ()) -> str:
    return stack.run("-c", "import json\n" + SUBMIT, str(n), str(seconds), json.dumps(list(fail)), tag).strip()


def _status(stack: Stack, tag: str) -> dict[str, int]:
    out = stack.run("-c", f"import hmq, json; print(json.dumps(hmq.api.get_tag_status({tag!r})))")
    return json.loads(out)


def _page(browser: Any, board: Dashboard, path: str = "/") -> Any:
    page = browser.new_context().new_page()
    page.set_default_timeout(60_000)
    page.goto(board.url)  # the URL printed: the token becomes a cookie
    assert page.url == board.base + "/"
    if path != "/":
        page.goto(board.base + path)
    return page


# --- the door, without a browser ----------------------------------------------------------------
def test_requests_without_the_token_or_from_elsewhere_are_refused(embedded: Stack, dashboard: Dashboard) -> None:
    tag = _submit(embedded, 1, 0.0, "door")
    with httpx.Client(base_url=dashboard.base, follow_redirects=False, timeout=30) as client:
        for path in ("/", "/fleet", f"/tags/{tag}", "/part/tags", "/static/dashboard.js", "/nothing"):
            assert client.get(path).status_code == 403, path
        assert client.get("/?token=" + dashboard.token[:-1] + "x").status_code == 403
        assert client.post(f"/tags/{tag}/delete?token={dashboard.token}").status_code == 403  # no Origin
        first = client.get(f"/?token={dashboard.token}")
        assert (first.status_code, first.headers["location"]) == (303, "/")
        cookie = first.headers["set-cookie"]
        assert f"hmq-dashboard-{dashboard.port}={dashboard.token}" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert client.get("/").status_code == 200  # with the cookie
        assert client.get("/static/uPlot.iife.min.js").status_code == 200
        assert client.get("/", headers={"host": f"localhost:{dashboard.port}"}).status_code == 200
        for host in ("evil.example", f"evil.example:{dashboard.port}", f"127.0.0.1:{dashboard.port + 1}"):
            refused = client.get("/", headers={"host": host})
            assert refused.status_code == 403 and "Host" in refused.text, host
        for origin in (None, "http://evil.example", f"http://127.0.0.1:{dashboard.port + 1}"):
            headers = {"origin": origin} if origin else {}
            refused = client.post(f"/tags/{tag}/delete", headers=headers)
            assert refused.status_code == 403 and "Origin" in refused.text, origin
        assert "frame-ancestors 'none'" in client.get("/").headers["content-security-policy"]
    assert _status(embedded, tag)["total"] == 1  # nothing was deleted


@ONE_BACKEND
def test_without_the_admin_key_the_fleet_page_says_how_to_get_it(embedded: Stack, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(embedded.home / "client.json", home / "client.json")
    board = Dashboard({**embedded.env(), "HMQ_HOME": str(home)})
    try:
        with httpx.Client(base_url=board.base, timeout=30) as client:
            client.get(f"/?token={board.token}")
            page = client.get("/fleet")
        assert page.status_code == 200 and "--admin-key-file" in page.text
    finally:
        assert board.stop() == 0


@ONE_BACKEND
def test_ctrl_c_stops_the_dashboard_cleanly(embedded: Stack) -> None:
    board = Dashboard(embedded.env())
    assert httpx.get(board.base + "/", timeout=30).status_code == 403  # it serves
    assert board.stop() == 0
    assert "Traceback" not in board.stderr


@ONE_BACKEND
def test_the_dashboard_without_its_extra_says_which_in_one_line(embedded: Stack) -> None:
    block = (
        "import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'starlette':\n            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\nfrom hmq.cli import main\nmain(['dashboard'], prog_name='hmq')\n"
    )
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=embedded.env(), timeout=60)
    assert (out.returncode, out.stdout) == (1, "")
    [line] = out.stderr.splitlines()
    assert line.startswith("Error: hmq dashboard needs the dashboard extra (starlette is not installed): pip install ")
    assert "[dashboard]" in line


def _hmq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hmq", *args], capture_output=True, text=True, env=env, timeout=60)


@ONE_BACKEND
def test_start_up_problems_are_said_in_one_line(embedded: Stack, tmp_path: Path) -> None:
    empty = {**embedded.env(), "HMQ_HOME": str(tmp_path / "nothing")}
    out = _hmq(empty, "dashboard")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.startswith("Error: hmq is not set up in ") and len(out.stderr.splitlines()) == 1
    bad_key = tmp_path / "admin.key"
    bad_key.write_text("hmqadmin1_not-a-key\n")
    out = _hmq(embedded.env(), "dashboard", "--admin-key-file", str(bad_key))
    assert (out.returncode, out.stdout) == (1, "") and out.stderr.startswith("Error: ")
    assert len(out.stderr.splitlines()) == 1 and "admin" in out.stderr.lower()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _hmq(embedded.env(), "dashboard", "--port", str(port))
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert (embedded.home / "admin.key").is_file() and (embedded.home / "client.json").is_file()


@ONE_BACKEND
def test_an_unknown_tag_and_an_api_that_is_down_are_said_on_the_page(embedded: Stack, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = json.loads((embedded.home / "client.json").read_text())
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        config["url"] = f"http://127.0.0.1:{closed.getsockname()[1]}"  # nothing listens there
    (home / "client.json").write_text(json.dumps(config))
    down = Dashboard({**embedded.env(), "HMQ_HOME": str(home)})
    up = Dashboard(embedded.env())
    try:
        with httpx.Client(base_url=down.base, timeout=60) as client:
            client.get(f"/?token={down.token}")
            part = client.get("/part/tags")
            page = client.get("/")
        assert part.status_code == 502 and config["url"] in part.text
        assert page.status_code == 502 and config["url"] in page.text and "Error 502" in page.text
        with httpx.Client(base_url=up.base, timeout=60) as client:
            client.get(f"/?token={up.token}")
            unknown = client.get("/tags/no_such_tag")
            refused = client.post("/tags/no_such_tag/cancel", headers={"origin": up.base})
        assert unknown.status_code == 404 and "unknown tag" in unknown.text
        assert refused.status_code == 404 and "unknown tag" in refused.json()["message"]
    finally:
        assert down.stop() == 0 and up.stop() == 0


# --- in the browser -----------------------------------------------------------------------------
def _done(page: Any, tag: str) -> tuple[int, int]:
    done, total = page.locator(f'tr[data-tag="{tag}"] td.done').inner_text().split(" / ")
    return int(done), int(total)


def test_a_running_tag_s_progress_advances_without_reloading(
    embedded: Stack, dashboard: Dashboard, browser: Any
) -> None:
    tag = _submit(embedded, 30, 0.5, "progress")
    page = _page(browser, dashboard)
    page.locator(f'tr[data-tag="{tag}"]').wait_for()
    first, total = _done(page, tag)
    assert total == 30
    page.evaluate("window.hmqLoaded = true")  # gone if the page reloaded
    deadline = time.monotonic() + 120
    seen = {first}
    while _done(page, tag)[0] < total and time.monotonic() < deadline:
        seen.add(_done(page, tag)[0])
        page.wait_for_timeout(300)
    seen.add(_done(page, tag)[0])
    assert max(seen) == total and len(seen) >= 2, seen  # it advanced, by the page's own refresh
    assert page.evaluate("window.hmqLoaded") is True
    bar = page.locator(f'tr[data-tag="{tag}"] .bar .seg.completed')
    assert bar.get_attribute("style") == "width: 100.000%"


def test_a_failed_task_s_traceback_and_output_open_on_the_tag_s_page(
    embedded: Stack, dashboard: Dashboard, browser: Any
) -> None:
    tag = _submit(embedded, 4, 0.0, "failing", fail=(2,))
    page = _page(browser, dashboard)
    page.locator(f'tr[data-tag="{tag}"] a').click()
    assert page.url == f"{dashboard.base}/tags/{tag}"
    failure = page.locator("ul.failures details").first
    failure.wait_for()
    assert "ValueError: bad input 2" in failure.locator("summary").inner_text()
    assert not failure.locator("pre.traceback").is_visible()
    failure.locator("summary").click()
    assert "Traceback" in failure.locator("pre.traceback").inner_text()
    assert "ValueError: bad input 2" in failure.locator("pre.traceback").inner_text()
    assert failure.locator("pre.logs").inner_text().strip() == "working on 2"
    assert page.locator("ul.failures details").count() == 1
    page.wait_for_timeout(6000)  # a refresh of the failures keeps the open one open
    assert failure.locator("pre.traceback").is_visible()
    assert page.locator('td[data-state="completed"]').inner_text() == "3"


def test_cancel_asks_first_then_cancels_the_tag(embedded: Stack, dashboard: Dashboard, browser: Any) -> None:
    tag = _submit(embedded, 40, 1.0, "cancelme")
    page = _page(browser, dashboard, f"/tags/{tag}")
    answers = iter([False, True])
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept() if next(answers) else dialog.dismiss()

    page.on("dialog", answer)
    page.locator("button.cancel").click()  # dismissed: nothing happens
    page.wait_for_timeout(1000)
    assert _status(embedded, tag)["cancelled"] == 0
    page.locator("button.cancel").click()
    page.locator('td[data-state="cancelled"]').filter(has_not_text=re.compile(r"^0$")).wait_for()
    assert len(asked) == 2 and tag in asked[1]
    status = _status(embedded, tag)
    assert status["cancelled"] > 0 and status["pending"] == 0
    assert int(page.locator('td[data-state="cancelled"]').inner_text()) > 0
    assert "cancelled the open tasks" in page.locator("#message").inner_text()


def test_delete_asks_first_then_deletes_the_tag(embedded: Stack, dashboard: Dashboard, browser: Any) -> None:
    tag = _submit(embedded, 2, 0.0, "deleteme")
    page = _page(browser, dashboard, f"/tags/{tag}")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("button.delete").click()
    page.wait_for_url(dashboard.base + "/")
    assert page.locator(f'tr[data-tag="{tag}"]').count() == 0
    out = embedded.run(
        "-c", f"import hmq\ntry:\n    hmq.api.get_tag_status({tag!r})\nexcept hmq.NotFound:\n    print('gone')"
    )
    assert out.strip() == "gone"


def test_the_fleet_page_shows_the_workers_with_the_admin_key(
    embedded: Stack, dashboard: Dashboard, browser: Any
) -> None:
    _submit(embedded, 2, 0.0, "fleet")  # the workers claim: they are sampled
    page = _page(browser, dashboard, "/fleet")
    rows = page.locator("table.workers tbody tr.live")
    page.wait_for_function("document.querySelectorAll('table.workers tbody tr.live').length >= 2")
    assert rows.count() == 2
    assert all(rows.nth(i).locator("td").nth(2).inner_text() == "local" for i in range(2))
    assert "local" in page.locator("table.datacenters").inner_text()
    assert page.locator(".chart canvas").count() == 4  # four uPlot charts drawn
    legend = page.locator(".chart").first.inner_text()
    assert "allocated" in legend and "used" in legend and "available" in legend


pytestmark = pytest.mark.skipif(os.name != "posix", reason="the dashboard is tested on POSIX only")
