"""Broken models in the repository are refused with their reason, shown in /readyz and /models, and the
healthy models keep serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.make_models import write_model
from tests.live import LiveServer
from tests.repository import set_graph_sha256

GOOD = {"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]}


def _break_repository(root: Path) -> dict[str, str]:
    """Add one broken model of each kind to `root`; returns model name -> a piece of its expected reason."""
    import hashlib

    bad_sha = write_model(root, "bad-sha", 1, seed=4)
    (bad_sha / "model.onnx").write_bytes((bad_sha / "model.onnx").read_bytes() + b"\0")

    truncated = write_model(root, "truncated", 1, seed=5)
    graph = truncated / "encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:40])
    set_graph_sha256(truncated, "encoder", hashlib.sha256(graph.read_bytes()).hexdigest())

    invalid = write_model(root, "invalid-metadata", 1, seed=6)
    meta = json.loads((invalid / "metadata.json").read_text())
    meta["latent_dim"] = "two"
    (invalid / "metadata.json").write_text(json.dumps(meta))

    write_model(root, "wrong-size", 1, seed=7, graph_input_dim=5)

    missing = write_model(root, "missing-graph", 1, seed=8)
    (missing / "decoder.onnx").unlink()

    misplaced = root / "misplaced" / "1"
    shutil.copytree(root / "tiny" / "1", misplaced)
    return {
        "bad-sha": "has sha256",
        "truncated": "does not load in ONNX Runtime",
        "invalid-metadata": "invalid metadata.json",
        "wrong-size": "metadata expects (batch, 4)",
        "missing-graph": "decoder graph decoder.onnx is missing",
        "misplaced": "metadata says tiny version 1 but the files are in misplaced/1",
    }


@pytest.fixture
def broken_repo(repo: Path) -> tuple[Path, dict[str, str]]:
    return repo, _break_repository(repo)


def test_integrity_broken_models_reported_healthy_ones_serve(
    make_client: Any, broken_repo: tuple[Path, dict[str, str]]
) -> None:
    root, reasons = broken_repo
    client = make_client(root)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    for name, reason in reasons.items():
        # The probe names the broken versions; why they broke is for /models (behind the key, if any).
        assert f"{name}/1 failed" in ready.json()["detail"]
        assert reason not in ready.json()["detail"], (name, ready.json()["detail"])
    listed = {(m["name"], m["version"]): m for m in client.get("/models").json()["models"]}
    for name, reason in reasons.items():
        assert listed[(name, 1)]["status"] == "failed"
        assert reason in listed[(name, 1)]["error"]
    assert listed[("tiny", 2)]["status"] == "ready"
    assert client.post("/encode", json=GOOD).status_code == 200
    assert client.post("/sample", json={"model": "tiny-vae", "n": 2}).status_code == 200
    r = client.post("/encode", json={**GOOD, "model": "bad-sha"})
    assert r.status_code == 503
    assert "bad-sha version 1 failed to load" in r.json()["detail"]
    v2 = client.post(
        "/v2/models/truncated/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )
    assert v2.status_code == 503
    assert "does not load in ONNX Runtime" in v2.json()["error"]


def test_integrity_real_server_starts_with_a_corrupted_model(
    server_factory: Any, broken_repo: tuple[Path, dict[str, str]]
) -> None:
    root, reasons = broken_repo
    server: LiveServer = server_factory(root, ready_path="/healthz")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503
    assert "bad-sha/1 failed" in ready.json()["detail"]
    models = httpx.get(f"{server.url}/models").json()["models"]
    assert reasons["bad-sha"] in next(m["error"] for m in models if m["name"] == "bad-sha")
    r = httpx.post(f"{server.url}/denoise", json=GOOD)
    assert r.status_code == 200
    assert len(r.json()["outputs"][0]) == 4
