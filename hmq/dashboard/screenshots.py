"""The documentation's screenshots of the dashboard, taken from a real local queue.

    python -m hmq.dashboard.screenshots [--out docs/img] [--minutes 4]

Starts ``hmq up`` in a temporary ``HMQ_HOME``, submits a few tags (one done, one running with
failures, one cancelled) in waves for ``--minutes`` so the fleet's per-minute charts have
points, starts ``hmq dashboard`` as a user would, and has Debian's chromium (through Playwright;
``--chromium`` names another binary) photograph the tags page, a tag's page with a failure open
and the fleet page. A development tool: it needs the ``server`` and ``dashboard`` extras and
Playwright (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBMIT = """
import json, sys, hmq

@hmq.task
def {name}(x, seconds):
    import time
    time.sleep(seconds)
    print("step", x, "of the {name} run")
    if x % 9 == 4 and {fails}:
        raise ValueError(f"parameter set {{x}} did not converge")
    return x * x

for i in range(int(sys.argv[1])):
    {name}(i, float(sys.argv[2]))
print({name}.submit().name)
"""


def _submit(env: dict[str, str], name: str, n: int, seconds: float, fails: bool = False) -> str:
    script = SUBMIT.format(name=name, fails=fails)
    out = subprocess.run(
        [sys.executable, "-c", script, str(n), str(seconds)], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def _run(env: dict[str, str], code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def _dashboard(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmq", "dashboard"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        raise SystemExit("hmq dashboard printed no URL")
    return proc, proc.stdout.readline().strip()


def _photograph(chromium: str, url: str, tags: dict[str, str], out: Path) -> None:
    from playwright.sync_api import sync_playwright

    base = url.split("/?")[0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_timeout(4000)
        page.screenshot(path=str(out / "dashboard-tags.png"), full_page=True)
        page.goto(f"{base}/tags/{tags['running']}")
        page.locator("ul.failures details").first.wait_for()
        page.wait_for_timeout(20_000)  # some throughput history
        page.locator("ul.failures summary").first.click()
        page.screenshot(path=str(out / "dashboard-tag.png"), full_page=True)
        page.goto(f"{base}/fleet")
        page.locator(".chart canvas").first.wait_for()
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out / "dashboard-fleet.png"), full_page=True)
        browser.close()


def _scene(env: dict[str, str], minutes: float) -> dict[str, str]:
    """Tags as a user has them after a while: done, cancelled, and one running with failures."""
    tags = {"done": _submit(env, "simulate", 40, 0.3)}
    cancelled = _submit(env, "sweep", 30, 2.0)
    time.sleep(3)
    _run(env, f"import hmq; hmq.api.cancel_tasks(tag={cancelled!r})")
    deadline = time.monotonic() + minutes * 60
    wave = 0
    while time.monotonic() < deadline:  # waves of work, so the fleet's charts go up and down
        _submit(env, "calibrate", 20 + 20 * (wave % 3), 0.5)
        wave += 1
        time.sleep(45)
    tags["running"] = _submit(env, "fit", 300, 0.4, fails=True)
    time.sleep(10)
    return tags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--minutes", type=float, default=4.0, help="How long to run waves of tasks first.")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from hmq import stack

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hmq-screenshots-") as tmp:
        home = Path(tmp)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}, "HMQ_HOME": str(home)}
        stack.up(home, workers=2, cores=1)
        proc = None
        try:
            tags = _scene(env, args.minutes)
            proc, url = _dashboard(env)
            _photograph(args.chromium, url, tags, args.out)
            print(json.dumps({"tags": tags, "out": str(args.out)}))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
            stack.down(home)


if __name__ == "__main__":
    main()
