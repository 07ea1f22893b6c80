"""localstack.yml and its images, checked without a Docker engine: every file, module, command,
variable and dependency the compose file and the Dockerfiles name exists and fits; the one-shot
steps (infra/compose_setup.py) run for real against moto's S3 and an API under uvicorn, and the
host's Getting Started example runs with what they wrote and a worker configured as in the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any, Optional
from urllib.parse import urlparse

import pytest
import yaml

from hmq import API, crypto
from hmq.cli import main as hmq_cli
from hmq.config import ClientConfig, write_private
from hmq.credentials import WorkerCredentials
from hmq.stack import free_port
from lambdas.settings import Settings
from lambdas.storage.s3 import S3Store
from tests.helpers import REPO, Server, stop_process
from worker.__main__ import main as worker_cli

COMPOSE = REPO / "localstack.yml"
SERVER_DOCKERFILE = "lambdas/Dockerfile"
WORKER_DOCKERFILE = "worker/Dockerfile"
SHELL_SEPARATORS = {"&&", "||", ";", "|", "exec", "then", "do", "else"}


def _load_setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_setup", REPO / "infra" / "compose_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compose_setup = _load_setup_module()


# --- reading the compose file and the Dockerfiles ----------------------------------------------
def interpolate(value: Any) -> Any:
    """Compose's interpolation with no variable set: ``$$`` is ``$``, ``${X:-d}`` is ``d``."""
    if not isinstance(value, str):
        return value
    value = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)
    assert not re.search(r"(?<!\$)\$\{?\w+(?!\()", value.replace("$$", "")), f"unset variable in {value!r}"
    return value.replace("$$", "$")


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(interpolate(v)) for k, v in env.items()}


def dockerfile_of(service: dict[str, Any]) -> Optional[str]:
    """The Dockerfile a service is built from, relative to the repository (None: an image)."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE.parent / build.get("context", ".")).resolve()
    return str((context / build.get("dockerfile", "Dockerfile")).relative_to(REPO))


def built_services(dockerfile: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if dockerfile_of(s) == dockerfile}


def argvs(value: Any) -> list[list[str]]:
    """The command lines in a command, entrypoint or healthcheck test, with `sh -c` scripts split."""
    if value is None:
        return []
    if isinstance(value, str):
        argv = shlex.split(interpolate(value))
    else:
        argv = [str(interpolate(v)) for v in value]
        if argv and argv[0] == "CMD-SHELL":
            argv = shlex.split(" ".join(argv[1:]))
        elif argv and argv[0] in ("CMD", "NONE"):
            argv = argv[1:]
    out = [argv]
    for i, token in enumerate(argv[:-1]):
        if Path(token).name in ("sh", "bash") and argv[i + 1] == "-c":
            out.extend(argvs(argv[i + 2]))
    return out


def service_argvs(service: dict[str, Any]) -> list[list[str]]:
    return [
        *argvs(service.get("entrypoint")),
        *argvs(service.get("command")),
        *argvs((service.get("healthcheck") or {}).get("test")),
    ]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_argvs(path: Path) -> list[list[str]]:
    return [json.loads(rest) for word, rest in dockerfile_instructions(path) if word in ("CMD", "ENTRYPOINT")]


def dockerfile_copies(path: Path) -> list[tuple[list[str], str]]:
    """(sources, absolute destination) of each COPY."""
    workdir, out = "/", []
    for word, rest in dockerfile_instructions(path):
        if word == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            dest = args[-1] if args[-1].startswith("/") else f"{workdir.rstrip('/')}/{args[-1]}"
            out.append((args[:-1], dest))
    return out


def dockerfile_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions(path):
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    return env


def dockerfile_base(path: Path) -> str:
    """The FROM image, with build arguments at their defaults."""
    args: dict[str, str] = {}
    for word, rest in dockerfile_instructions(path):
        if word == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        elif word == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
    raise AssertionError(f"{path} has no FROM")


def dockerfile_user(path: Path) -> str:
    users = [rest for word, rest in dockerfile_instructions(path) if word == "USER"]
    return users[-1] if users else "root"


# --- what the commands name ---------------------------------------------------------------------
def repo_module_exists(module: str) -> bool:
    """``python -m module`` runs code of this repository."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None or spec.origin is None or not Path(spec.origin).resolve().is_relative_to(REPO):
        return False
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        return importlib.util.find_spec(f"{module}.__main__") is not None
    return True


def command_problems(argv_list: list[list[str]], dockerfile: Optional[str]) -> list[str]:
    """What is wrong with the modules, hmq subcommands and /app files these command lines name."""
    problems = []
    copies = dockerfile_copies(REPO / dockerfile) if dockerfile else []
    for argv in argv_list:
        for i, token in enumerate(argv):
            before = argv[i - 1] if i else ""
            after = argv[i + 1] if i + 1 < len(argv) else ""
            if token == "-m" and Path(before).name.startswith("python"):
                if not repo_module_exists(after):
                    problems.append(f"python -m {after}: no such module in the repository")
                elif dockerfile and not any(dest.rstrip("/") == f"/app/{after.split('.')[0]}" for _, dest in copies):
                    problems.append(f"python -m {after}: {dockerfile} does not copy {after.split('.')[0]}/")
            in_command_position = i == 0 or before in SHELL_SEPARATORS
            if (
                Path(token).name == "hmq"
                and in_command_position
                and after[:1] not in ("", "-")
                and after not in hmq_cli.commands
            ):
                problems.append(f"hmq {after}: no such subcommand")
            for path in re.findall(r"/app/[\w./-]+", token):
                if not (REPO / path.removeprefix("/app/")).exists():
                    problems.append(f"{path}: {path.removeprefix('/app/')} is not in the repository")
                elif dockerfile and not any(
                    path == dest.rstrip("/") or path.startswith(dest.rstrip("/") + "/") for _, dest in copies
                ):
                    problems.append(f"{path}: {dockerfile} does not copy it")
    return problems


def settings_variables() -> set[str]:
    """Every HMQ_* variable lambdas.settings.Settings.from_env reads."""

    class Recording(dict):
        read: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.read.add(key)
            return super().get(key, default)

    env = Recording(
        HMQ_ADMIN_PUBLIC_KEY=crypto.AdminKey.generate().identity.public.to_text(),
        HMQ_DATABASE_URL="sqlite:///index.db",
        HMQ_STORAGE_URL="s3://bucket",
    )
    Settings.from_env(env)
    return {k for k in env.read if k.startswith("HMQ_")}


def worker_variables() -> set[str]:
    """Every HMQ_* variable `python -m worker` reads (click's envvars, and the credentials')."""
    source = (REPO / "worker" / "__main__.py").read_text()
    named = set(re.findall(r"environ\.get\(\"(HMQ_\w+)\"", source))
    return named | {p.envvar for p in worker_cli.params if isinstance(p.envvar, str)}


# --- the compose file -----------------------------------------------------------------------------
def test_the_checks_catch_what_they_are_for() -> None:
    bad = [
        ["python", "-m", "lambdas.nothing"],
        ["sh", "-c", "echo hi && hmq no-such-command --x"],
        ["python", "/app/infra/missing.py"],
        ["python", "-m", "tests"],  # exists, but not copied into the image
        ["python", "/app/tests/helpers.py"],  # exists, but not copied into the image
    ]
    problems = command_problems([a for argv in bad for a in argvs(argv)], SERVER_DOCKERFILE)
    assert len(problems) == 5, problems
    good = [["sh", "-c", "hmq migrate && exec python -m lambdas.serve"], ["python", "-m", "worker"]]
    assert command_problems([a for argv in good for a in argvs(argv)], SERVER_DOCKERFILE) == []
    assert interpolate("$${X} ${A:-3.12}") == "${X} 3.12"


def test_every_build_names_an_existing_dockerfile() -> None:
    built = {name: dockerfile_of(s) for name, s in services().items() if s.get("build")}
    assert set(built) == {"setup", "api", "grant", "worker-1", "worker-2"}
    for name, dockerfile in built.items():
        assert dockerfile is not None and (REPO / dockerfile).is_file(), f"{name}: {dockerfile}"
    assert {built["setup"], built["api"], built["grant"]} == {SERVER_DOCKERFILE}
    assert {built["worker-1"], built["worker-2"]} == {WORKER_DOCKERFILE}
    for name, service in services().items():
        assert service.get("build") or ":" in service.get("image", ""), f"{name}: neither built nor a pinned image"


def test_commands_name_existing_modules_subcommands_and_files() -> None:
    for name, service in services().items():
        dockerfile = dockerfile_of(service)
        assert command_problems(service_argvs(service), dockerfile) == [], name
    named = " ".join(" ".join(a) for s in services().values() for a in service_argvs(s))
    assert "/app/infra/compose_setup.py setup" in named and "/app/infra/compose_setup.py grant" in named


def test_dockerfiles_run_existing_modules_as_a_non_root_user() -> None:
    for dockerfile, module in ((SERVER_DOCKERFILE, "lambdas.serve"), (WORKER_DOCKERFILE, "worker")):
        path = REPO / dockerfile
        commands = dockerfile_argvs(path)
        assert commands and any(argv[:3] == ["python", "-m", module] for argv in commands), dockerfile
        assert command_problems(commands, dockerfile) == []
        user = dockerfile_user(path).split(":")[0]
        assert user not in ("root", "0"), dockerfile
        assert int(user) == compose_setup.WORKER_UID  # worker.json is given to this user
        assert re.fullmatch(r"python:3\.\d+-slim", dockerfile_base(path)), dockerfile
        for sources, _ in dockerfile_copies(path):
            for source in sources:
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source}"
    assert "EXPOSE 8000" in (REPO / SERVER_DOCKERFILE).read_text()
    assert dockerfile_env(REPO / WORKER_DOCKERFILE)["HMQ_WORKER_CACHE"] == "/var/cache/hmq"
    runs = [rest for word, rest in dockerfile_instructions(REPO / WORKER_DOCKERFILE) if word == "RUN"]
    assert any("chown" in rest and "/var/cache/hmq" in rest for rest in runs)  # writable by the worker
    assert dockerfile_base(REPO / WORKER_DOCKERFILE) == dockerfile_base(REPO / SERVER_DOCKERFILE) == "python:3.12-slim"


def test_worker_python_version_is_a_build_argument() -> None:
    text = (REPO / WORKER_DOCKERFILE).read_text()
    assert "ARG PYTHON_VERSION=3.12" in text and "FROM python:${PYTHON_VERSION}-slim" in text
    for service in built_services(WORKER_DOCKERFILE).values():
        assert interpolate(service["build"]["args"]["PYTHON_VERSION"]) == "3.12"


def test_dockerignore_keeps_secrets_and_bulk_out_but_not_what_the_images_copy() -> None:
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    for needed in (".venv", ".git", "tests", "bench", ".demo", "*.db", ".localstack-home"):
        assert needed in patterns
    for dockerfile in (SERVER_DOCKERFILE, WORKER_DOCKERFILE):
        for sources, _ in dockerfile_copies(REPO / dockerfile):
            for source in sources:
                parts = Path(source).parts
                prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
                assert not any(fnmatch(p, pattern) for p in prefixes for pattern in patterns), source


def test_depends_on_names_defined_services_in_order() -> None:
    defined = services()
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    graph: dict[str, list[str]] = {}
    for name, service in defined.items():
        deps = service.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = list(deps)
        for dep, spec in deps.items():
            assert dep in defined, f"{name} depends on undefined {dep}"
            condition = spec.get("condition", "service_started")
            assert condition in conditions
            if condition == "service_healthy":
                assert "healthcheck" in defined[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert "restart" not in defined[dep], f"{dep} is a one-shot service"

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(d == target or (d not in seen and reaches(d, target, seen | {d})) for d in graph[start])

    assert not any(reaches(name, name, set()) for name in graph), "dependency cycle"
    # `up --wait` accepts a one-shot service's exit only when a long-running one waits for it.
    one_shots = {name for name, s in defined.items() if "restart" not in s and "image" not in s}
    assert one_shots == {"setup", "grant"}
    for one_shot in one_shots:
        assert any(
            "restart" in s
            and (s.get("depends_on") or {}).get(one_shot, {}).get("condition") == "service_completed_successfully"
            for s in defined.values()
        ), f"no long-running service waits for {one_shot} to complete"
    assert reaches("worker-1", "grant", set()) and reaches("grant", "api", set()) and reaches("api", "setup", set())
    assert reaches("setup", "localstack", set()) and reaches("setup", "postgres", set())


def test_volumes_ports_and_one_shot_users() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond this machine"
    assert "./.localstack-home:/home-out" in compose["services"]["grant"]["volumes"]
    for name in ("setup", "grant"):  # they write into the root-owned volume and hand files over
        assert compose["services"][name]["user"] in ("0", "0:0", "root")
    for name in ("api", "worker-1", "worker-2"):
        assert "keys:/keys:ro" in compose["services"][name]["volumes"]
        assert "user" not in compose["services"][name]
    for name in ("worker-1", "worker-2"):
        assert compose["services"][name]["stop_grace_period"] == "30s"


def test_localstack_postgres_and_api_health() -> None:
    defined = services()
    localstack = defined["localstack"]
    assert re.fullmatch(r"localstack/localstack:\d+(\.\d+)*", localstack["image"])
    env = environment(localstack)
    assert env["SERVICES"] == "s3" and env["S3_SKIP_SIGNATURE_VALIDATION"] == "0"
    assert "localhost.localstack.cloud" in localstack["networks"]["default"]["aliases"]
    assert "127.0.0.1:4566:4566" in localstack["ports"]
    assert "/_localstack/health" in " ".join(" ".join(a) for a in argvs(localstack["healthcheck"]["test"]))
    postgres = defined["postgres"]
    assert postgres["image"] == "postgres:16"
    assert {environment(postgres)[f"POSTGRES_{k}"] for k in ("USER", "PASSWORD", "DB")} == {"hmq"}
    assert argvs(postgres["healthcheck"]["test"])[0][0] == "pg_isready"
    health = " ".join(" ".join(a) for a in argvs(defined["api"]["healthcheck"]["test"]))
    assert "http://localhost:8000/v1/health" in health
    api_env = environment(defined["api"])
    assert api_env["HMQ_DATABASE_URL"] == "postgresql+psycopg://hmq:hmq@postgres:5432/hmq"
    assert urlparse(api_env["HMQ_DATABASE_URL"]).hostname in defined
    assert "127.0.0.1:8000:8000" in defined["api"]["ports"]


def test_storage_url_presigns_for_localstack_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    defined = services()
    api_env = environment(defined["api"])
    url = api_env["HMQ_STORAGE_URL"]
    assert environment(defined["setup"])["HMQ_STORAGE_URL"] == url  # the bucket made is the one used
    store = S3Store.from_url(url)
    assert (store.bucket, store.region, store.addressing_style) == ("hmq", "us-east-1", "path")
    endpoint, presign = urlparse(store.endpoint_url or ""), urlparse(store.presign_endpoint_url or "")
    assert endpoint.hostname == "localstack" and endpoint.hostname in defined
    assert presign.hostname == "localhost.localstack.cloud"
    assert endpoint.port == presign.port == 4566
    for name in ("setup", "api"):
        env = environment(defined[name])
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_DEFAULT_REGION"]) == (
            "test",
            "test",
            "us-east-1",
        )
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            monkeypatch.setenv(key, env[key])
    try:  # presigning is local: no request leaves this process
        signed = urlparse(store.presign_get("results/abc", 60, ""))
    finally:
        store.presigner.close()
        store.client.close()
    assert (signed.scheme, signed.netloc, signed.path) == (
        "http",
        "localhost.localstack.cloud:4566",
        "/hmq/results/abc",
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in signed.query and "X-Amz-Credential=test%2F" in signed.query


def test_hmq_variables_are_ones_the_images_read() -> None:
    server_vars, worker_vars = settings_variables(), worker_variables()
    assert {"HMQ_ADMIN_PUBLIC_KEY", "HMQ_DATABASE_URL", "HMQ_STORAGE_URL"} <= server_vars
    assert {"HMQ_API_URL", "HMQ_WORKER_CREDENTIALS", "HMQ_DATACENTER", "HMQ_CORES", "HMQ_WORKER_CACHE"} <= worker_vars
    for dockerfile, known in ((SERVER_DOCKERFILE, server_vars), (WORKER_DOCKERFILE, worker_vars)):
        assert {k for k in dockerfile_env(REPO / dockerfile) if k.startswith("HMQ_")} <= known
        for name, service in built_services(dockerfile).items():
            exported = {m for a in service_argvs(service) for t in a for m in re.findall(r"\b(HMQ_\w+)=", t)}
            set_here = {k for k in environment(service) if k.startswith("HMQ_")} | exported
            assert set_here <= known, f"{name}: {set_here - known} are read by nothing"
    api = services()["api"]
    assert "HMQ_ADMIN_PUBLIC_KEY" in {m for a in service_argvs(api) for t in a for m in re.findall(r"(HMQ_\w+)=", t)}
    worker_env = environment(services()["worker-1"])
    assert worker_env == environment(services()["worker-2"])
    assert worker_env["HMQ_API_URL"] == "http://api:8000"
    assert worker_env["HMQ_WORKER_CREDENTIALS"] == "/keys/worker.json"
    assert (worker_env["HMQ_DATACENTER"], worker_env["HMQ_CORES"]) == ("compose", "1")


# --- the one-shot steps, for real ---------------------------------------------------------------
@pytest.fixture
def moto_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for key, value in environment(services()["setup"]).items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_setup_makes_the_bucket_and_keeps_the_admin_key(moto_endpoint: str, tmp_path: Path) -> None:
    import boto3

    keys = tmp_path / "keys"
    keys.mkdir()
    compose_url = environment(services()["setup"])["HMQ_STORAGE_URL"]
    url = compose_url.replace("http://localstack:4566", moto_endpoint)
    assert url != compose_url
    assert compose_setup.main(["setup", "--keys", str(keys), "--storage-url", url]) == 0
    admin = crypto.AdminKey.from_text((keys / "admin.key").read_text().strip())
    assert stat.S_IMODE((keys / "admin.key").stat().st_mode) == 0o600
    assert (keys / "admin.pub").read_text().strip() == admin.identity.public.to_text()
    assert stat.S_IMODE((keys / "admin.pub").stat().st_mode) == 0o644
    (keys / "admin.pub").unlink()
    assert compose_setup.main(["setup", "--keys", str(keys), "--storage-url", url]) == 0  # again: kept
    assert crypto.AdminKey.from_text((keys / "admin.key").read_text().strip()).to_text() == admin.to_text()
    assert (keys / "admin.pub").read_text().strip() == admin.identity.public.to_text()
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    try:
        assert "hmq" in [
            b["Name"] for b in client.list_buckets()["Buckets"]
        ]  # moto shares state between its servers in one process
    finally:
        client.close()


def test_setup_refuses_a_store_that_is_not_s3(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        compose_setup.main(["setup", "--keys", str(tmp_path), "--storage-url", "file:///tmp/x"])


def _whoami(home: Optional[Path] = None, url: Optional[str] = None, key: Optional[crypto.Identity] = None) -> dict:
    api = API(url, key, home=home)
    try:
        return api.whoami()
    finally:
        api.close()


def test_grant_writes_worker_credentials_and_the_host_config(
    server: Server, admin_key: crypto.AdminKey, tmp_path: Path
) -> None:
    keys, out = tmp_path / "keys", tmp_path / "home-out"
    write_private(keys / "admin.key", admin_key.to_text() + "\n")
    argv = ["grant", "--api", server.url, "--keys", str(keys), "--out", str(out), "--public-url", server.url]
    assert compose_setup.main(argv) == 0

    creds = WorkerCredentials.load(keys / "worker.json")
    assert (creds.name, creds.url, creds.admin) == ("compose-worker", server.url, admin_key.identity.public)
    assert _whoami(url=server.url, key=creds.identity)["role"] == "worker"
    assert stat.S_IMODE((keys / "worker.json").stat().st_mode) == 0o600
    if os.geteuid() == 0:  # handed to the workers' user
        assert (keys / "worker.json").stat().st_uid == compose_setup.WORKER_UID
    config = ClientConfig.load(out)
    assert (config.url, config.admin) == (server.url, admin_key.identity.public)
    who = _whoami(home=out)
    assert (who["role"], who["name"]) == ("user", "user")
    assert (out / ".gitignore").read_text() == "*\n"
    assert (out / "client.json").stat().st_uid == out.stat().st_uid

    # Every `up` runs it again: the same keys, granted again.
    assert compose_setup.main(argv) == 0
    assert WorkerCredentials.load(keys / "worker.json").identity.to_text() == creds.identity.to_text()
    assert ClientConfig.load(out).identity.to_text() == config.identity.to_text()  # type: ignore[union-attr]

    # A new client directory against an index that remembers the old user: a name of its own.
    (out / "client.json").unlink()
    compose_setup.grant(server.url, keys, out, public_url=server.url)
    fresh = ClientConfig.load(out)
    assert fresh.identity is not None and fresh.identity.key_id != config.identity.key_id  # type: ignore[union-attr]
    who = _whoami(home=out)
    assert who["role"] == "user" and who["name"] == f"user-{fresh.identity.key_id[:8]}"


def test_getting_started_runs_with_the_grant_and_a_worker_configured_as_in_compose(
    server: Server, admin_key: crypto.AdminKey, tmp_path: Path
) -> None:
    """What the README promises: `HMQ_HOME=./.localstack-home python examples/getting_started.py`,
    here with the API at the test server's URL and the worker's environment from localstack.yml."""
    keys, out = tmp_path / "keys", tmp_path / "home-out"
    write_private(keys / "admin.key", admin_key.to_text() + "\n")
    compose_setup.grant(server.url, keys, out, public_url=server.url)

    entrypoint = dockerfile_argvs(REPO / WORKER_DOCKERFILE)[-1]
    assert entrypoint[0] == "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
    env.update(dockerfile_env(REPO / WORKER_DOCKERFILE))
    env.update(environment(services()["worker-1"]))
    env.update(
        HMQ_API_URL=server.url,  # the compose network's http://api:8000
        HMQ_WORKER_CREDENTIALS=str(keys / "worker.json"),  # mounted at /keys/worker.json
        HMQ_WORKER_CACHE=str(tmp_path / "cache"),  # /var/cache/hmq in the image
    )
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 - closed by stop_process
    worker = subprocess.Popen(
        [sys.executable, *entrypoint[1:]], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    worker.log_file = log  # type: ignore[attr-defined]
    try:
        user_env = {k: v for k, v in os.environ.items() if not k.startswith("HMQ_")}
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / "getting_started.py")],
            env={**user_env, "HMQ_HOME": str(out)},
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_process(worker)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{(tmp_path / 'worker.log').read_text()}"
    assert "Results: [6, 20, 42]" in done.stdout
    with server.admin() as admin:
        (registered,) = admin.workers()
    assert (registered.name, registered.datacenter, registered.cores) == ("compose-worker", "compose", 1)
