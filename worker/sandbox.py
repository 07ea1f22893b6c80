"""Isolation of the processes that run user code: executors and package builds.

Chosen once when the worker starts (``--isolation``, ``HMQ_ISOLATION``), then applied to every
executor it spawns and every pip run that builds a package environment.

``bwrap``: each executor runs in a bubblewrap sandbox (the Debian package ``bubblewrap``, found
on PATH) with new user, pid, ipc, uts, cgroup and mount namespaces; the network is shared (tasks
download data). What a call can do there:

- see only: /usr (with the /bin, /lib... links), from /etc only what Python and name resolution
  need (resolv.conf, hosts, nsswitch, passwd, group, localtime, CA certificates, the loader
  cache; not /etc/ssl/private, not shadow), the interpreter prefix (``sys.base_prefix``), the
  worker's virtual environment (``sys.prefix``) and its own package environment, all read-only;
  the two scripts the executor needs, read-only at /run/hmq; its own scratch directory (its
  working directory and HOME, the only writable path of the host) and a private /tmp (tmpfs).
  The worker's credentials, HMQ_HOME (admin.key, client.json, server/settings.json, the index),
  the source tree and other executors' scratch directories are not in its filesystem at all;
- see and signal only the processes of its own sandbox (``--unshare-pid``): not the worker,
  not other executors (so neither their memory), nothing else on the host;
- hold no capability (``--cap-drop ALL``) and create no further user namespace
  (``--disable-userns``), so it cannot rearrange its mounts; a new session (``--new-session``)
  keeps it off the worker's terminal;
- leave no process behind: after every call the executor kills every other process of the
  namespace (setsid or not); when the executor ends, the namespace's init ends and the kernel
  kills whatever was left; when the worker dies, ``--die-with-parent`` ends the sandbox.

``uid``: the worker runs as root and each executor runs as ``--executor-user`` (an unprivileged
account), with the worker's view of the filesystem. A call cannot read what that account may
not read (the credentials file is 0600, HMQ_HOME is private to its owner) and cannot write the
interpreter, the virtual environment or the package environments (owned by root). It can see
the host's processes and can signal those of the executor account, which all the worker's
executors share: isolation is between the tasks and the worker, not between the users of one
worker. Processes: the executor is a child subreaper and kills its whole process tree after
every call and when it ends (setsid does not leave the tree); the worker kills an executor's
tree when it stops it, and is itself a subreaper, so what an executor that died left behind is
re-parented to the worker and killed. What escapes: a process that runs a set-user-ID program,
and the processes of a call still running when the worker itself is killed with SIGKILL (the
executor dies with it, its children go to init).

``none`` (only when asked for): calls run as the worker's own user with its view of the
machine: they can read its credentials and write its environments. The executor still kills
its process tree after every call. The worker logs a warning at start and for each executor.

``auto`` (the default): ``uid`` when an executor user is configured (the admin chose it);
otherwise ``bwrap`` when a real run of the worker's interpreter in the sandbox succeeds; otherwise
the worker refuses to start and says what to install or configure. ``--isolation bwrap`` with
``--executor-user`` runs the sandbox as that user: both layers.

In every mode the executor's environment has none of the worker's ``HMQ_*``/``AWS_*`` variables.
Package builds (pip) get the same scrubbed environment and, under ``bwrap``, run in a sandbox
whose only writable paths are the environment being built and a private /tmp; under ``uid``
they run as the executor account, and the worker keeps a read-only copy (``worker/envs.py``).
"""

from __future__ import annotations

import configparser
import grp
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from hmq import _jsonable
from hmq._errors import ConfigurationError
from worker import executor

log = logging.getLogger("hmq.worker")

EXECUTOR_SCRIPT = str(Path(executor.__file__))
JSONABLE_SCRIPT = str(Path(_jsonable.__file__))
SANDBOX_SCRIPTS = "/run/hmq"
"""Where the two scripts the executor needs appear inside the sandbox (read-only)."""

PROBE_TIMEOUT_SECONDS = 60.0
"""Longest the start-time probe of bubblewrap may take."""

# Never handed to user code: the worker's own configuration and the cloud credentials it holds.
_PRIVATE_ENV = ("HMQ_", "AWS_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
_NAMESPACES = (
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
)
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "gai.conf",
    "nsswitch.conf",
    "services",
    "protocols",
    "passwd",
    "group",
    "localtime",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "mime.types",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust",
)
_PIP_PATH_OPTIONS = ("find-links", "index-url", "extra-index-url", "cert", "constraint", "requirement")
_HOWTO = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) where unprivileged user "
    "namespaces are allowed (sysctl user.max_user_namespaces > 0; in a container, a seccomp profile "
    "that permits them), or run the worker as root with --executor-user NAME (isolation by uid), "
    "or pass --isolation none to run calls without isolation (unsafe on a shared worker)"
)
NO_ISOLATION_WARNING = (
    "ISOLATION IS OFF (--isolation none): calls run as this worker's user with its view of the "
    "machine; they can read its credentials and HMQ_HOME and write its environments"
)


class Isolation(str, Enum):
    """How executors are isolated (see the module docstring)."""

    AUTO = "auto"
    BWRAP = "bwrap"
    UID = "uid"
    NONE = "none"


def scrubbed_env(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without the worker's private variables."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.startswith(_PRIVATE_ENV)}


def _system_args() -> list[str]:
    """/usr, the /bin... links, the parts of /etc Python needs, /proc, /dev and a private /tmp."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def _read_only(paths: Iterable[str]) -> list[str]:
    """Read-only binds of ``paths`` (and their real paths, where symlinks differ), once each."""
    args: list[str] = []
    seen: set[str] = set()
    for path in paths:
        for p in (os.path.abspath(path), os.path.realpath(path)):
            if p not in seen and os.path.exists(p):
                seen.add(p)
                args += ["--ro-bind", p, p]
    return args


def interpreter_paths(python: str) -> list[str]:
    """What an interpreter needs to run: the worker's prefixes and the interpreter's own."""
    return [sys.base_prefix, sys.prefix, str(Path(python).parent.parent), str(Path(python).resolve().parent.parent)]


@dataclass(frozen=True)
class Sandbox:
    """The isolation chosen at start; builds the command lines of executors and pip runs."""

    mode: Isolation
    user: Optional[str] = None
    bwrap: Optional[str] = None

    @classmethod
    def select(cls, isolation: str | Isolation, user: Optional[str] = None) -> Sandbox:
        """Resolve ``isolation`` for this host (probing bubblewrap where needed); raise
        ``ConfigurationError`` saying what to install or configure when it cannot be had."""
        try:
            mode = Isolation(isolation)
        except ValueError:
            raise ConfigurationError(f"unknown isolation {isolation!r}: use auto, bwrap, uid or none") from None
        if mode is Isolation.NONE:
            log.warning(NO_ISOLATION_WARNING)
            return cls(Isolation.NONE, user)
        if mode is Isolation.UID or (mode is Isolation.AUTO and user is not None):
            if user is None:
                raise ConfigurationError("--isolation uid needs --executor-user NAME (and a worker running as root)")
            return cls(Isolation.UID, user)
        bwrap = shutil.which("bwrap")
        problem = "(bwrap) is not on PATH" if bwrap is None else _probe(bwrap, user)
        if problem is None:
            return cls(Isolation.BWRAP, user, bwrap)
        prefix = "--isolation bwrap" if mode is Isolation.BWRAP else "cannot isolate calls"
        raise ConfigurationError(f"{prefix}: bubblewrap {problem}; {_HOWTO}")

    def describe(self) -> str:
        if self.mode is Isolation.BWRAP:
            return f"bwrap ({self.bwrap}" + (f", as {self.user})" if self.user else ")")
        if self.mode is Isolation.UID:
            return f"uid (calls run as {self.user})"
        return "NONE"

    @property
    def run_as(self) -> Optional[str]:
        """The account the sandbox's processes run as (None: the worker's)."""
        return self.user if self.mode is not Isolation.NONE else None

    def check_private(self, path: Path) -> None:
        """Under ``uid``: refuse a cache path the executor account could rename or replace (its
        own, or writable by it without the sticky bit): the worker runs what it holds as root."""
        if self.mode is Isolation.BWRAP or self.user is None:
            return
        entry = pwd.getpwnam(self.user)
        groups = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if self.user in g.gr_mem)}
        for directory in [Path(path), *Path(path).parents]:
            try:
                st = directory.stat()
            except FileNotFoundError:
                continue
            writable = st.st_uid == entry.pw_uid or st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid in groups)
            if writable and not st.st_mode & stat.S_ISVTX:
                raise ConfigurationError(
                    f"{directory} can be changed by the executor user {self.user!r}, which could then replace "
                    f"what the worker runs from {path}: use a cache directory it cannot write (--cache-dir)"
                )

    def executor_command(self, python: str, workdir: Path, max_result: int, max_log: int = 0) -> list[str]:
        """The command line of an executor for interpreter ``python`` in ``workdir``."""
        if self.mode is not Isolation.BWRAP:
            return [python, "-I", EXECUTOR_SCRIPT, JSONABLE_SCRIPT, str(workdir), str(max_result), "tree", str(max_log)]
        assert self.bwrap is not None
        return [
            self.bwrap,
            *_NAMESPACES,
            *_system_args(),
            *_read_only(interpreter_paths(python)),
            "--ro-bind",
            EXECUTOR_SCRIPT,
            f"{SANDBOX_SCRIPTS}/executor.py",
            "--ro-bind",
            JSONABLE_SCRIPT,
            f"{SANDBOX_SCRIPTS}/_jsonable.py",
            "--bind",
            str(workdir),
            str(workdir),
            "--chdir",
            str(workdir),
            "--",
            python,
            "-I",
            f"{SANDBOX_SCRIPTS}/executor.py",
            f"{SANDBOX_SCRIPTS}/_jsonable.py",
            str(workdir),
            str(max_result),
            "namespace",
            str(max_log),
        ]

    def executor_env(self, base: dict[str, str], workdir: Path) -> dict[str, str]:
        """``base`` adjusted for the sandbox: HOME is the scratch directory (and /tmp is the
        sandbox's own under bwrap)."""
        if self.mode is Isolation.NONE:
            return base
        extra = {"HOME": str(workdir)}
        if self.mode is Isolation.BWRAP:
            extra["TMPDIR"] = "/tmp"
        return {**base, **extra}

    def exit_status(self, code: Optional[int]) -> Optional[int]:
        """An executor's exit status as the executor's own: bubblewrap reports death by signal
        N as 128 + N."""
        if self.mode is Isolation.BWRAP and code is not None and 128 < code < 128 + signal.NSIG:
            return -(code - 128)
        return code

    def build_command(self, argv: list[str], env_dir: Path, pip_args: tuple[str, ...] = ()) -> list[str]:
        """``argv`` (creating or filling a package environment) run so that only ``env_dir``
        and a private /tmp are writable, with the worker's pip configuration and the local
        indexes it names readable (under bwrap; elsewhere ``argv`` unchanged)."""
        if self.mode is not Isolation.BWRAP:
            return argv
        assert self.bwrap is not None
        home = "/tmp/home"
        return [
            self.bwrap,
            *_NAMESPACES,
            *_system_args(),
            *_read_only([*interpreter_paths(sys.executable), *_pip_paths(pip_args)]),
            *_pip_config_binds(home),
            "--bind",
            str(env_dir),
            str(env_dir),
            "--setenv",
            "HOME",
            home,
            "--setenv",
            "TMPDIR",
            "/tmp",
            "--chdir",
            "/tmp",
            "--",
            *argv,
        ]


def _probe(bwrap: str, user: Optional[str]) -> Optional[str]:
    """None when the worker's interpreter runs in the sandbox; else why not."""
    argv = [
        bwrap,
        *_NAMESPACES,
        *_system_args(),
        *_read_only(interpreter_paths(sys.executable)),
        "--",
        sys.executable,
        "-I",
        "-c",
        "import cloudpickle",
    ]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, env=scrubbed_env(), user=user, cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({bwrap}) cannot run: {exc}"
    if out.returncode == 0:
        return None
    why = (out.stderr.strip().splitlines() or [f"exit code {out.returncode}"])[-1]
    return f"({bwrap}) does not work here: {why}"


# --- pip's configuration, readable in the build sandbox ------------------------------------
def pip_config_files() -> list[tuple[str, str]]:
    """(path on the host, path relative to HOME or None-for-absolute) of pip's config files."""
    home = os.path.expanduser("~")
    files = [(p, p) for p in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf")]
    for rel in (".config/pip/pip.conf", ".pip/pip.conf"):
        files.append((os.path.join(home, rel), rel))
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append((os.environ["PIP_CONFIG_FILE"], os.environ["PIP_CONFIG_FILE"]))
    return [(src, dest) for src, dest in files if os.path.isfile(src)]


def _pip_config_binds(home: str) -> list[str]:
    args: list[str] = []
    for src, dest in pip_config_files():
        args += ["--ro-bind", src, dest if os.path.isabs(dest) else f"{home}/{dest}"]
    return args


def _pip_paths(pip_args: tuple[str, ...]) -> list[str]:
    """Local files and directories pip is told to read (find-links, file:// indexes with the
    mirror around them, a CA bundle, constraint files), from its config files, PIP_* variables
    and ``pip_args``."""
    values = list(pip_args)
    for option in _PIP_PATH_OPTIONS:
        values.append(os.environ.get("PIP_" + option.upper().replace("-", "_"), ""))
    for src, _ in pip_config_files():
        parser = configparser.RawConfigParser()
        try:
            parser.read(src)
        except configparser.Error:
            continue
        values += [parser.get(s, o) for s in parser.sections() for o in _PIP_PATH_OPTIONS if parser.has_option(s, o)]
    paths = []
    for token in " ".join(values).split():
        path = urlparse(token).path.rstrip("/") if token.startswith("file:") else token
        if os.path.basename(path) == "simple":  # a local mirror: its pages link to files beside it
            path = os.path.dirname(path)
        if path.startswith("/") and os.path.exists(path):
            paths.append(path)
    return paths
