"""Real servers (`python -m service` on a free port) and writable copies of the tiny model repository."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURE_MODELS

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    port: int

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out.decode(errors="replace")


def start_server(models: Path, workers: int = 1, **env: str) -> Server:
    """Start the service and wait until /readyz answers (200 or 503: a broken model is allowed)."""
    port = free_port()
    cmd = [sys.executable, "-m", "service", "--port", str(port), "--models", str(models)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    full_env = {**os.environ, **{f"AE_{k.upper()}": v for k, v in env.items()}}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    server = Server(proc, f"http://127.0.0.1:{port}", port)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code in (200, 503):
                return server
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start: {server.output()}")
        time.sleep(0.1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A writable copy of the tiny fixture repository."""
    target = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS, target)
    return target


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(models: Path, workers: int = 1, **env: str) -> Server:
        server = start_server(models, workers, **env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)
