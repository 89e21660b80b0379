"""`python -m service --host HOST --port PORT [--models DIR] [--workers N] [--log-level LEVEL]`.

`python -m service --write-openapi service/openapi.json` regenerates the committed OpenAPI schema.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from service.main import write_openapi


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the autoencoder models.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--models", type=Path, help="model repository (AE_MODELS_DIR; default the repo's models/)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (AE_WORKERS; default 1)")
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument(
        "--write-openapi", type=Path, metavar="PATH", help="write the OpenAPI schema and exit"
    )
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for in-flight requests before closing them (default: no limit)",
    )
    args = parser.parse_args(argv)
    if args.write_openapi:
        write_openapi(args.write_openapi)
        return
    # Workers are separate processes that build their own app: hand them the options through the environment.
    if args.models is not None:
        os.environ["AE_MODELS_DIR"] = str(args.models.resolve())
    if args.workers is not None:
        os.environ["AE_WORKERS"] = str(args.workers)
    workers = int(os.environ.get("AE_WORKERS", "1"))
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )


if __name__ == "__main__":
    main()
