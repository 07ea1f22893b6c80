"""The package's public face and its dependency rules."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from collections.abc import Iterable

import hmq

BLOCK_SERVER_MODULES = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('fastapi', 'sqlalchemy', 'boto3', 'botocore', 'uvicorn', 'mangum', 'alembic', 'starlette'):
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
import hmq
assert 'lambdas' not in sys.modules and 'worker' not in sys.modules
@hmq.task
def f(x):
    return x
f(1)
print(len(f), hmq.Tag('x_1').name)
"""

ERRORS = {
    "APIError",
    "AccessError",
    "AuthenticationError",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "HmqError",
    "IntegrityError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "PullTimeout",
    "ServerError",
    "StorageError",
    "TagFileError",
    "TaskFailed",
    "Unavailable",
    "Unreachable",
    "UsageError",
}
CLASSES = {"API", "CachedWorker", "Tag"}
FUNCTIONS = {"task", "request_access", "grant_access"}
EXPECTED = ERRORS | CLASSES | FUNCTIONS | {"api", "__version__"}
"""What the user guide names, and nothing more."""


def test_import_hmq_needs_no_server_extras() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK_SERVER_MODULES], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "x_1"]


def test_all_is_exactly_the_documented_names() -> None:
    assert len(hmq.__all__) == len(set(hmq.__all__))
    assert set(hmq.__all__) == EXPECTED


def test_exported_members_are_of_the_documented_kind() -> None:
    for name in ERRORS:
        value = getattr(hmq, name)
        assert inspect.isclass(value) and issubclass(value, hmq.HmqError), name
        assert value.__module__ == "hmq._errors", name
    assert (hmq.API.__module__, hmq.API.__name__) == ("hmq._client", "API")
    assert (hmq.Tag.__module__, hmq.Tag.__name__) == ("hmq.tag", "Tag")
    assert (hmq.CachedWorker.__module__, hmq.CachedWorker.__name__) == ("worker.runner", "CachedWorker")
    assert callable(hmq.CachedWorker.execute_job)
    for name in FUNCTIONS:
        assert inspect.isfunction(getattr(hmq, name)), name
    assert isinstance(hmq.api, hmq.API)
    assert isinstance(hmq.__version__, str) and hmq.__version__[:1].isdigit()


def test_nothing_else_public_leaks() -> None:
    # Submodules appear as attributes once imported (hmq.crypto, hmq.wire, ...): they are
    # modules of the shared code, not names of the public face.
    def public(names: Iterable[str]) -> set[str]:
        return {n for n in names if not n.startswith("_") and not isinstance(vars(hmq).get(n), types.ModuleType)}

    assert public(dir(hmq)) == EXPECTED - {"__version__"}
    assert public(vars(hmq)) <= EXPECTED
    # A fresh `import hmq` binds only the eager names: errors and the two access functions.
    code = "import hmq; print(' '.join(sorted(n for n in vars(hmq) if not n.startswith('_'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) == ERRORS | {"request_access", "grant_access"}
