"""A real server for tests: `python -m service` in a subprocess on a free loopback port.

`LiveServer` starts it, waits until it answers, and stops it (SIGTERM, then SIGKILL after a grace period).
Its `process` stays reachable for tests that signal the server or check how it exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited, or did not answer its readiness probe in time."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, *, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; raise ServerStartError if `process` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"the server exited with {process.returncode} before {url} answered 200")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"status {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise ServerStartError(f"{url} did not answer 200 within {timeout:.0f} s (last: {last})")
        time.sleep(0.1)


WORKER_STARTED = "Application startup complete."
"""What uvicorn logs (at info) when a worker's lifespan start-up is done."""


class LiveServer:
    """`python -m service --models MODELS [ARGS]` on a free loopback port, from `start()` to `stop()`.

    `env` is laid over the caller's environment; a None value removes that variable. The server counts as
    started once `ready_path` answers 200: `/readyz` (every model loaded), or `/healthz` for a server that
    is expected to stay not-ready (a broken model in its repository). With `--workers N`, also once every
    worker has finished its start-up: the first ready worker answers for all of them, while a slower one
    may still be reading the model repository that the test is about to change.
    """

    host = LOOPBACK

    def __init__(
        self,
        models: Path,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        ready_path: str = "/readyz",
        log_level: str = "warning",
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        nofile: int | None = None,
        grpc: bool = False,
        cwd: Path = ROOT,
    ) -> None:
        self.models_dir = models
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
        if self.workers > 1 and log_level not in ("info", "debug", "trace"):
            log_level = "info"  # each worker's "Application startup complete." is how start() counts them
        self.port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        """The gRPC port (0: gRPC off, the default here, so that test servers never share one)."""
        self.command = [
            sys.executable,
            "-m",
            "service",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--models",
            str(models),
            "--log-level",
            log_level,
            "--grpc-port",
            str(self.grpc_port),
            *args,
        ]
        self.env = dict(os.environ)
        for name, value in (env or {}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.cwd = cwd
        """Where `python -m service` runs (its `service` package is that tree's)."""
        self.nofile = nofile
        """The server's open-files limit (`ulimit -n`), when set."""
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The `python -m service` process (with several workers, their supervisor)."""
        if self._process is None:
            raise RuntimeError("the server has not been started")
        return self._process

    def start(self) -> Self:
        """Start the server and wait until it is ready; on failure stop it and raise with its log."""
        # Not a pipe: nobody reads it while the server runs, and a full pipe would stall the server.
        self._log = tempfile.TemporaryFile(prefix="ae-live-server-")  # noqa: SIM115 (closed in __exit__)
        # Its own session, so that a final SIGKILL reaches the worker processes too.
        self._process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limit_files if self.nofile is not None else None,
        )
        try:
            deadline = time.monotonic() + self.start_timeout
            wait_ready(self.url + self.ready_path, timeout=self.start_timeout, process=self._process)
            while self.workers > 1 and self.log_text().count(WORKER_STARTED) < self.workers:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise ServerStartError(f"not all {self.workers} workers started")
                time.sleep(0.05)
        except ServerStartError as exc:
            self.stop()
            log = self.log_text()
            self._log.close()
            raise ServerStartError(f"{exc}\n--- server log ---\n{log[-LOG_TAIL_CHARS:]}") from None
        return self

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def log_text(self) -> str:
        """All the server has written to stdout and stderr so far."""
        if self._log is None or self._log.closed:
            return ""
        # pread leaves the file offset alone: the server shares it and may still be writing.
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL to the whole session after `stop_timeout`; return the exit code."""
        if self._process is None:
            return None
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
