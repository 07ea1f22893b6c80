"""``python -m lambdas.serve``: the API under uvicorn, configured from ``HMQ_*`` variables."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from lambdas.app import create_app
from lambdas.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lambdas.serve", description="Run the hmq API under uvicorn.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(Settings.from_env())
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, timeout_keep_alive=30)


if __name__ == "__main__":
    main()
