"""Placement warnings against `hmq up` (two workers, one core each), as a user's script sees them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Stack

NORMAL = """
import hmq

@hmq.task
def add_one(x):
    return x + 1

add_one(1)
tag = add_one.submit()
tag.pull(blocking=True)
print(list(tag.results))
print(hmq.api.get_tag_status(tag.name)["warnings"])
"""

TOO_BIG = """
import warnings

import hmq

@hmq.task
def add_one(x):
    return x + 1

add_one(1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tag = add_one.submit(ncores=2)
print([str(w.message) for w in caught if issubclass(w.category, UserWarning)])
print(hmq.api.get_tag_status(tag.name)["warnings"])
print(repr(tag.name))
"""


def test_a_normal_submit_on_hmq_up_warns_of_nothing(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "normal.py"
    script.write_text(NORMAL)
    out = embedded.run("-W", "error::UserWarning", str(script))
    assert out.splitlines() == ["[2]", "[]"]


def test_a_submit_the_local_workers_cannot_run_warns_at_once(embedded: Stack, tmp_path: Path) -> None:
    script = tmp_path / "too_big.py"
    script.write_text(TOO_BIG)
    caught, status, name = (ast.literal_eval(line) for line in embedded.run(str(script)).splitlines())
    assert len(caught) == 1 and caught[0].startswith(f"tag {name}: ")
    assert "no worker seen in the last 10 min has 2 cores (largest: 1)" in caught[0]
    assert status == [caught[0].split(": ", 1)[1]]

    def hmq(*argv: str) -> str:  # the command line, as the user would run it from another terminal
        out = subprocess.run([sys.executable, "-m", "hmq", *argv], capture_output=True, text=True, env=embedded.env())
        assert out.returncode == 0, out.stderr
        return out.stdout

    shown = hmq("status", name)
    assert f"warning     {status[0]}" in shown and "1 pending" in shown
    hmq("delete", name, "--yes")
