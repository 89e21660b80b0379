"""`python -m service --host HOST --port PORT [--grpc-port PORT] [--models DIR] [--workers N] [...]`.

HTTP on --port (REST and the Open Inference Protocol), gRPC on --grpc-port (default 8081, 0 for none), with
the connection limits of `service.ops.connections` (header timeout and size, keep-alive, connection count).
A configuration error is one line on stderr and exit status 2.

`python -m service --write-openapi service/openapi.json` regenerates the committed OpenAPI schema.

Signals: SIGTERM (or SIGINT) stops accepting connections, lets requests in flight finish (at most
--timeout-graceful-shutdown seconds, by default AE_DRAIN_TIMEOUT_S) and exits 0. SIGHUP reloads the model
repository; with several workers the supervisor forwards it to every worker instead of restarting them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from service.app import write_openapi
from service.ops.auth import ApiKeys
from service.ops.reload import SUPERVISOR_PID_ENV
from service.settings import Settings, settings_reference

logger = logging.getLogger("uvicorn.error")


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGHUP is forwarded to the workers (a hot reload in each)
    rather than restarting them."""

    def handle_hup(self) -> None:
        pids = [p.pid for p in self.processes if p.pid is not None]
        logger.info("Received SIGHUP, telling workers %s to reload their models.", pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the stop signal after its graceful shutdown; a drained server exits 0.
    sys.exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the autoencoder models.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port of the Open Inference Protocol (AE_GRPC_PORT; default 8081; 0 for none)",
    )
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
        "--write-settings-doc", type=Path, metavar="PATH", help="write the settings reference and exit"
    )
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for in-flight requests before cancelling them (uvicorn's "
        "graceful-shutdown timeout; default AE_DRAIN_TIMEOUT_S in whole seconds, 30)",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The settings for these options; a configuration error is one line on stderr and exit status 2.

    Workers are separate processes that build their own app: they get the options through the environment."""
    if args.models is not None:
        os.environ["AE_MODELS_DIR"] = str(args.models.resolve())
    if args.workers is not None:
        os.environ["AE_WORKERS"] = str(args.workers)
    if args.grpc_port is not None:
        os.environ["AE_GRPC_PORT"] = str(args.grpc_port)
    os.environ.setdefault("AE_GRPC_PORT", "8081")
    os.environ["AE_GRPC_HOST"] = args.host
    try:
        settings = Settings()
        ApiKeys(settings)  # an unreadable keys file is a configuration error: say so before starting
    except (ValidationError, RuntimeError) as exc:
        first = str(exc).splitlines()
        print(f"error: {' '.join(line.strip() for line in first[:3])}", file=sys.stderr)
        sys.exit(2)
    return settings


def _config(args: argparse.Namespace, settings: Settings) -> uvicorn.Config:
    drain = args.timeout_graceful_shutdown
    if drain is None:
        drain = max(1, round(settings.drain_timeout_s))
    return uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=settings.workers,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=drain,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        http="service.ops.connections:GuardedHttpToolsProtocol",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )


def _supervise(config: uvicorn.Config) -> None:
    """Several workers under the supervisor, their metrics summed through a shared directory."""
    os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="ae-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _Supervisor(config, sockets=[config.bind_socket()]).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.write_openapi:
        write_openapi(args.write_openapi)
        return
    if args.write_settings_doc:
        args.write_settings_doc.write_text(settings_reference())
        return
    settings = _settings(args)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Until a worker's lifespan takes SIGHUP over, a reload request must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = _config(args, settings)
    if settings.workers == 1:
        uvicorn.Server(config).run()
    else:
        _supervise(config)


if __name__ == "__main__":
    main()
