"""The real server, started with `python -m service` on a free port, answers over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import FIXTURE_MODELS
from tests.live import LiveServer


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with LiveServer(FIXTURE_MODELS) as server:
        yield server.url


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


def test_e2e_metrics_add_up_every_worker() -> None:
    with LiveServer(FIXTURE_MODELS, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": None}) as server:
        # Fresh connections, so the kernel spreads them over both workers' accept queues.
        for _ in range(40):
            r = httpx.post(f"{server.url}/denoise", json={"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]})
            assert r.status_code == 200
        text = httpx.get(f"{server.url}/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("ae_requests_total{") and '"/denoise"' in x)
    assert float(line.rsplit(" ", 1)[1]) == 40, line
