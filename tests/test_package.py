"""The package's public face and its dependency rules."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

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


def test_import_hmq_needs_no_server_extras() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK_SERVER_MODULES], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "x_1"]


def test_exported_members() -> None:
    names = {n for n in dir(hmq) if not n.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(hmq.__path__)}
    assert set(hmq.__all__) - {"__version__"} <= names | {"CachedWorker"}
    unexpected = {n for n in names - set(hmq.__all__) if n not in modules and n != "annotations"}
    assert unexpected == set(), unexpected
    assert hmq.CachedWorker.__name__ == "CachedWorker"
