"""The one-shot steps of ``localstack.yml`` (docker compose), run in the API image.

``setup`` (before the API starts): creates the bucket named by ``HMQ_STORAGE_URL`` and the admin
key, ``KEYS/admin.key``, plus ``KEYS/admin.pub`` for the API's ``HMQ_ADMIN_PUBLIC_KEY``.

``grant`` (once the API is healthy): grants the workers' credentials, ``KEYS/worker.json``, and a
user whose configuration, ``OUT/client.json``, lets the host run ``HMQ_HOME=OUT python ...``.

Both run at every ``docker compose up`` and keep what exists: the same admin key, worker key and
user key, granted again (which renews their certificates).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from hmq import crypto, provision
from hmq._errors import HmqError
from hmq.admin import Admin

ADMIN_KEY = "admin.key"
ADMIN_PUB = "admin.pub"
WORKER_FILE = "worker.json"
WORKER_UID = 10001  # the user of worker/Dockerfile: it must read worker.json (mode 0600)
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


def create_bucket(storage_url: str) -> str:
    """Create the bucket of an ``s3://`` storage URL unless it exists; returns its name."""
    from botocore.exceptions import ClientError

    from lambdas.storage.s3 import S3Store

    store = S3Store.from_url(storage_url)
    client = store.client
    try:
        try:
            client.head_bucket(Bucket=store.bucket)
        except ClientError:
            region = client.meta.region_name
            where = (
                {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            )
            client.create_bucket(Bucket=store.bucket, **where)
    finally:
        client.close()
    return store.bucket


def ensure_admin_key(keys: Path) -> crypto.AdminKey:
    """The admin key in ``keys`` (made when missing); ``admin.pub`` is rewritten from it."""
    key = provision.ensure_admin_key(keys / ADMIN_KEY)
    # Public, read by the API's (non-root) user.
    (keys / ADMIN_PUB).write_text(key.identity.public.to_text() + "\n")
    (keys / ADMIN_PUB).chmod(0o644)
    return key


def grant_user(admin: Admin, home: Path, name: str, public_url: str) -> Path:
    """Grant (again) the user of ``home/client.json`` (made when missing); it points at ``public_url``."""
    path = provision.ensure_user(admin, home, name, public_url)
    ignore = home / ".gitignore"  # the directory holds a secret key: keep it out of version control
    if not ignore.exists():
        ignore.write_text("*\n")
    return path


def _hand_over(path: Path, uid: int, gid: int) -> None:
    """Give ``path`` to ``uid:gid`` (this step runs as root; the file's reader does not)."""
    if os.geteuid() == 0 and path.exists():
        os.chown(path, uid, gid)


def grant(
    api_url: str,
    keys: Path,
    out: Path,
    *,
    public_url: str = DEFAULT_PUBLIC_URL,
    worker_name: str = "compose-worker",
    username: str = "user",
) -> tuple[Path, Path]:
    """Grant the workers and the host's user; returns (worker credentials, client config)."""
    key = crypto.AdminKey.from_text((keys / ADMIN_KEY).read_text().strip())
    out.mkdir(parents=True, exist_ok=True)
    worker_file = keys / WORKER_FILE
    with Admin(api_url, key) as admin:
        provision.ensure_worker(admin, worker_file, worker_name, api_url)
        client_file = grant_user(admin, out, username, public_url)
    _hand_over(worker_file, WORKER_UID, WORKER_UID)
    # The host user owns the bind-mounted directory (when it made it before `up`): give them
    # their configuration.
    owner = out.stat()
    for path in (client_file, out / ".gitignore"):
        _hand_over(path, owner.st_uid, owner.st_gid)
    return worker_file, client_file


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="compose_setup.py", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    setup = steps.add_parser("setup", help="create the bucket (HMQ_STORAGE_URL) and the admin key")
    setup.add_argument("--keys", type=Path, default=Path("/keys"), help="directory of the keys (default: /keys)")
    setup.add_argument("--storage-url", default=os.environ.get("HMQ_STORAGE_URL", ""), help="default: $HMQ_STORAGE_URL")
    give = steps.add_parser("grant", help="grant the workers and the host's user")
    give.add_argument("--api", required=True, help="the API's URL from this container")
    give.add_argument("--keys", type=Path, default=Path("/keys"), help="directory of the keys (default: /keys)")
    give.add_argument("--out", type=Path, required=True, help="directory for the host user's client.json")
    give.add_argument("--public-url", default=DEFAULT_PUBLIC_URL, help="the API's URL from the host")
    give.add_argument("--worker-name", default="compose-worker")
    give.add_argument("--username", default="user")
    args = parser.parse_args(argv)
    try:
        if args.step == "setup":
            if not args.storage_url.startswith("s3://"):
                parser.error("an s3:// storage URL is needed (--storage-url or HMQ_STORAGE_URL)")
            print(f"bucket {create_bucket(args.storage_url)!r} is ready")
            key = ensure_admin_key(args.keys)
            print(f"admin public key {key.identity.public.to_text()} in {args.keys / ADMIN_PUB}")
        else:
            worker_file, client_file = grant(
                args.api,
                args.keys,
                args.out,
                public_url=args.public_url,
                worker_name=args.worker_name,
                username=args.username,
            )
            print(f"worker credentials in {worker_file}; client configuration in {client_file}")
    except HmqError as exc:
        print(f"compose_setup.py {args.step}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
