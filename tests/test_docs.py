"""The docs show the examples the suite runs: every tagged code block equals its example file."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO

BLOCK = re.compile(r"<!-- example: (?P<path>\S+) -->\n```python\n(?P<code>.*?)```", re.S)


def _blocks(doc: str) -> list[tuple[str, str]]:
    return [(m["path"], m["code"]) for m in BLOCK.finditer((REPO / doc).read_text())]


@pytest.mark.parametrize(("path", "code"), _blocks("docs/user-guide.md"))
def test_user_guide_blocks_are_the_examples(path: str, code: str) -> None:
    assert code == (REPO / path).read_text()


def test_every_example_is_shown_and_run() -> None:
    shown = {p for p, _ in _blocks("docs/user-guide.md")}
    files = {str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.py")}
    assert files == shown
    tests = (REPO / "tests" / "e2e" / "test_user_guide.py").read_text()
    assert all(f'"{p.removeprefix("examples/")}"' in tests for p in shown)


def test_readme_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile


def test_readme_lists_every_command() -> None:
    from hmq.cli import main

    table = (REPO / "README.md").read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert [name for name in main.commands if f"`hmq {name}" not in table] == []


def test_docs_cli_has_a_section_per_command() -> None:
    from hmq.cli import main

    page = (REPO / "docs" / "cli.md").read_text()
    headings = [line for line in page.splitlines() if line.startswith("### ")]
    assert [name for name in main.commands if not any(f"`hmq {name}" in h for h in headings)] == []
