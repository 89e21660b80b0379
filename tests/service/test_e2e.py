"""The real server, started with `python -m service` on a free port, answers over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    port = _free_port()
    models = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--port",
        str(port),
        "--models",
        str(models),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"server did not become ready: {out}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_e2e_denoise_json_and_binary(server_url: str) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]]
    r = httpx.post(f"{server_url}/denoise", json={"model": "tiny", "inputs": rows})
    assert r.status_code == 200
    raw = httpx.post(
        f"{server_url}/denoise?model=tiny",
        content=np.asarray(rows, dtype="<f4").tobytes(),
        headers={
            "content-type": "application/octet-stream",
            "x-tensor-shape": "1,4",
            "accept": "application/octet-stream",
        },
    )
    assert raw.status_code == 200
    np.testing.assert_allclose(np.frombuffer(raw.content, dtype="<f4"), r.json()["outputs"][0], rtol=1e-6)


def test_e2e_errors_and_metrics(server_url: str) -> None:
    r = httpx.post(f"{server_url}/encode", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["detail"]
    assert 'status="400"' in httpx.get(f"{server_url}/metrics").text
