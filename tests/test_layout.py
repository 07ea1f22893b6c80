"""The layout's rules, read from the source: who may import whom, and how long a function may be.

Dependencies point inward: ``lambdas`` (the API) and ``worker`` use ``hmq`` (the client and the
shared code), never each other; ``hmq`` uses neither at import time. Only the command line
(which composes the local stack's processes), the worker methods of ``hmq.API`` and the lazy
``hmq.CachedWorker`` reach outward, when they are used.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("hmq", "lambdas", "worker")
MIGRATIONS = REPO / "lambdas" / "db" / "migrations" / "versions"
MAX_FUNCTION_LINES = 60

LAZY_OUTWARD = {
    "hmq/cli/local.py": {"lambdas"},  # `hmq serve`, `hmq migrate`
    "hmq/cli/autoscale.py": {"worker"},  # `hmq autoscale` runs worker.autoscale
    "hmq/_client.py": {"worker"},  # hmq.API's worker methods delegate to worker.session
}
"""hmq modules that may import another package, inside functions only."""


@dataclass(frozen=True)
class Import:
    module: str  # e.g. "hmq/stack.py"
    target: str  # e.g. "worker.session"
    kind: str  # "import-time", "type-only" (under `if TYPE_CHECKING:`) or "lazy" (inside a function)
    line: int

    @property
    def package(self) -> str:
        return self.target.split(".")[0]

    @property
    def source_package(self) -> str:
        return self.module.split("/")[0]


def _sources(*, skip_migrations: bool = False) -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if skip_migrations and MIGRATIONS in path.parents:
                continue
            yield path


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: inside the module's own package
        return [package]
    return [node.module or ""]


def _walk(node: ast.AST, module: str, kind: str) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            for target in _targets(child, module.split("/")[0]):
                yield Import(module, target, kind, child.lineno)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, module, "lazy")
        elif isinstance(child, ast.If) and _is_type_checking(child) and kind == "import-time":
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), module, "type-only")
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), module, kind)
        else:
            yield from _walk(child, module, kind)


def imports() -> list[Import]:
    found = []
    for path in _sources():
        module = path.relative_to(REPO).as_posix()
        found += list(_walk(ast.parse(path.read_text(), str(path)), module, "import-time"))
    return found


def _outward(imp: Import) -> bool:
    return imp.package in PACKAGES and imp.package != imp.source_package


def test_the_walker_sees_every_kind_of_import() -> None:
    source = "import a\nif TYPE_CHECKING:\n    import b\ndef f():\n    from c import d\nclass K:\n    import e\n"
    found = {(i.target, i.kind) for i in _walk(ast.parse(source), "hmq/x.py", "import-time")}
    assert found == {("a", "import-time"), ("b", "type-only"), ("c", "lazy"), ("e", "import-time")}


def test_hmq_imports_neither_lambdas_nor_worker_at_import_time() -> None:
    bad = [i for i in imports() if i.source_package == "hmq" and _outward(i) and i.kind == "import-time"]
    assert bad == []


def test_hmq_reaches_outward_lazily_only_where_the_stack_and_the_cli_are_composed() -> None:
    lazy = [i for i in imports() if i.source_package == "hmq" and _outward(i) and i.kind == "lazy"]
    bad = [i for i in lazy if i.package not in LAZY_OUTWARD.get(i.module, set())]
    assert bad == []
    assert {i.module for i in lazy} == set(LAZY_OUTWARD)  # the allowance is still needed


def test_the_public_face_loads_only_cachedworker_from_worker() -> None:
    import hmq

    outward = {name for name, (module, _) in hmq._LAZY.items() if module.split(".")[0] != "hmq"}
    assert outward == {"CachedWorker"}
    assert hmq._LAZY["CachedWorker"][0].startswith("worker.")


@pytest.mark.parametrize(("source", "forbidden"), [("lambdas", "worker"), ("worker", "lambdas")])
def test_the_api_and_the_worker_never_import_each_other(source: str, forbidden: str) -> None:
    bad = [i for i in imports() if i.source_package == source and i.package == forbidden]
    assert bad == []


def test_no_import_cycle_between_the_packages() -> None:
    edges = {(i.source_package, i.package) for i in imports() if _outward(i) and i.kind == "import-time"}
    assert edges <= {("lambdas", "hmq"), ("worker", "hmq")}, edges
    graph = {p: {b for a, b in edges if a == p} for p in PACKAGES}

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert [p for p in PACKAGES if reaches(p, p)] == []


def _functions() -> Iterator[tuple[str, str, int]]:
    for path in _sources(skip_migrations=True):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                yield path.relative_to(REPO).as_posix(), node.name, node.end_lineno - node.lineno + 1


def test_no_function_is_longer_than_a_screen() -> None:
    long = [f"{module}:{name} ({lines} lines)" for module, name, lines in _functions() if lines > MAX_FUNCTION_LINES]
    assert long == []
