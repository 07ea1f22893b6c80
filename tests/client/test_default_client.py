"""``hmq.api`` is the default client, whatever was imported before it is used.

Each import runs in a fresh interpreter: in this one, other tests have imported everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hmq import crypto
from hmq.config import ClientConfig
from tests.helpers import Server

IMPORTS = [
    "hmq.API()",
    "from hmq import API",
    "from hmq.api import API",
    "import hmq.api",
    "hmq.CachedWorker",
    "from hmq.api import API; import hmq.api; hmq.API(); hmq.CachedWorker",
]

CHECK = """
import hmq
{statement}
from hmq import UsageError, ConfigurationError

api = hmq.api
assert isinstance(api, hmq.API), type(api)
assert callable(api.register_function) and callable(api.submit_tasks) and callable(api.compute_key)

@hmq.task
def double(x):
    return 2 * x

double(1)
try:  # the submit path reaches the client: it fails only because HMQ_HOME is empty
    double.submit(quiet=True)
except ConfigurationError as exc:
    assert "not set up" in str(exc), exc
assert hmq.api is api
print("ok")
"""


def _run(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "HMQ_HOME": str(home)}, timeout=180
    )


@pytest.mark.parametrize("statement", IMPORTS)
def test_the_default_client_survives(statement: str, tmp_path: Path) -> None:
    out = _run(CHECK.format(statement=statement), tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_old_module_path_still_names_the_client_class(tmp_path: Path) -> None:
    code = "import hmq\nfrom hmq.api import API\nassert API is hmq.API\nimport hmq.api\nassert hmq.api is not API\n"
    out = _run(code + "print('ok')", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_import_hmq_api_loads_no_client_until_used(tmp_path: Path) -> None:
    code = "import sys, hmq, hmq.api\nprint('httpx' in sys.modules, 'hmq._client' in sys.modules)\n"
    out = _run(code, tmp_path)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_submit_and_pull_work_after_the_old_import(server: Server, tmp_path: Path) -> None:
    """Code written for the old module path runs unchanged against a real API and worker."""
    user = crypto.Identity.generate()
    with server.admin() as admin:
        admin.register(crypto.issue_certificate(server.admin_key.identity, "old-code", "user", user.public))
    home = tmp_path / "home"
    ClientConfig(url=server.url, identity=user, admin=server.admin_key.identity.public).save(home)
    server.start_worker(tmp_path)
    code = (
        "from hmq.api import API\nimport hmq\n\n@hmq.task\ndef double(x):\n    return 2 * x\n\n"
        "for i in range(3):\n    double(i)\ntag = double.submit(quiet=True)\ntag.pull(blocking=True)\n"
        "assert isinstance(hmq.api, API)\nprint(list(tag.results))\n"
    )
    out = _run(code, home)
    assert out.returncode == 0 and out.stdout.strip() == "[0, 2, 4]", out.stderr
