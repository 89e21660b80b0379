"""Broken model versions are reported by /readyz and /models while the others keep serving."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from service.core.registry import ModelRegistry
from tests.fixtures.make_models import write_model
from tests.repository import set_graph_sha256

ROW = [[1.0, 2.0, 3.0, 4.0]]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _broken_repo(root: Path, fixture_models: Path) -> Path:
    shutil.copytree(fixture_models / "tiny", root / "good")
    for version in ("1", "2"):
        meta_path = root / "good" / version / "metadata.json"
        meta_path.write_text(meta_path.read_text().replace('"name": "tiny"', '"name": "good"'))
    bad_sha = write_model(root, "badsha", 1)
    set_graph_sha256(bad_sha, "decoder", "0" * 64)
    truncated = write_model(root, "truncated", 1)
    blob = (truncated / "model.onnx").read_bytes()
    (truncated / "model.onnx").write_bytes(blob[: len(blob) // 2])
    set_graph_sha256(truncated, "model", _sha(truncated / "model.onnx"))
    invalid = write_model(root, "invalid", 1)
    (invalid / "metadata.json").write_text('{"name": "invalid", "version": 1}')
    write_model(root, "mismatch", 1, graph_input_dim=5)
    return root


@pytest.fixture
def broken_client(make_client: Any, tmp_path: Path, fixture_models: Path) -> Any:
    return make_client(_broken_repo(tmp_path, fixture_models))


def test_readyz_names_every_broken_model_and_no_more(broken_client: Any, tmp_path: Path) -> None:
    # The probes are open to everyone: names and states only, no paths or load errors.
    for path, key in [("/readyz", "detail"), ("/v2/health/ready", "error")]:
        r = broken_client.get(path)
        assert r.status_code == 503
        detail = r.json()[key]
        for name in ["badsha", "truncated", "invalid", "mismatch"]:
            assert f"{name}/1 failed" in detail, detail
        for secret in [str(tmp_path), "sha256", "validation error", "ONNX Runtime", "metadata.json"]:
            assert secret not in detail, detail


def test_models_give_every_load_error_without_the_repository_path(broken_client: Any, tmp_path: Path) -> None:
    models = broken_client.get("/models").json()["models"]
    errors = {m["name"]: m["error"] for m in models if m["status"] == "failed"}
    assert "decoder graph decoder.onnx has sha256" in errors["badsha"]
    assert "metadata expects 0000" in errors["badsha"]
    assert "model graph model.onnx does not load in ONNX Runtime" in errors["truncated"]
    assert "invalid metadata.json" in errors["invalid"]
    assert "encoder graph input x has shape" in errors["mismatch"]
    assert "metadata expects (batch, 4)" in errors["mismatch"]
    assert not [e for e in errors.values() if str(tmp_path) in e]


def test_models_lists_failures_with_reasons(broken_client: Any) -> None:
    models = {(m["name"], m["version"]): m for m in broken_client.get("/models").json()["models"]}
    assert models[("good", 2)]["status"] == "ready"
    for name in ["badsha", "truncated", "invalid", "mismatch"]:
        assert models[(name, 1)]["status"] == "failed"
        assert models[(name, 1)]["error"]
    assert models[("mismatch", 1)]["input_dim"] == 4  # valid metadata is still shown
    assert models[("invalid", 1)]["input_dim"] is None


def test_good_model_keeps_serving_beside_broken_ones(broken_client: Any) -> None:
    r = broken_client.post("/denoise", json={"model": "good", "inputs": ROW})
    assert r.status_code == 200
    assert r.json()["version"] == 2


def test_request_to_failed_model_is_503_with_reason(broken_client: Any) -> None:
    r = broken_client.post("/denoise", json={"model": "badsha", "inputs": ROW})
    assert r.status_code == 503
    assert r.json()["detail"].startswith("model badsha version 1 failed to load: decoder graph")


def test_metadata_in_wrong_directory_fails(tmp_path: Path) -> None:
    directory = write_model(tmp_path, "a", 1)
    shutil.move(directory, tmp_path / "a" / "3")
    snapshot = ModelRegistry(tmp_path).load()
    assert not snapshot.models
    assert "metadata says a version 1 but the files are in a/3" in snapshot.failures[0].error


def test_providers_demanding_cuda_fail_readiness(make_client: Any, fixture_models: Path) -> None:
    import onnxruntime as ort

    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    client = make_client(fixture_models, providers="cuda,cpu")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert "tiny/1 failed" in r.json()["detail"]
    errors = [m["error"] for m in client.get("/models").json()["models"]]
    assert all(
        "AE_PROVIDERS asks for ['CUDAExecutionProvider'] but the encoder session got only" in e
        for e in errors
    )


def test_snapshot_swap_is_one_assignment(tmp_path: Path) -> None:
    write_model(tmp_path, "a", 1)
    registry = ModelRegistry(tmp_path)
    first = registry.load()
    write_model(tmp_path, "a", 2, seed=5)
    assert registry.get("a").metadata.version == 1
    second = registry.load()
    assert registry.snapshot is second is not first
    assert registry.get("a").metadata.version == 2
    assert first.get("a").metadata.version == 1


def _layout(root: Path, fixture_models: Path, layout: str) -> Path:
    """The tiny fixture as KServe's storage initializer leaves /mnt/models for each kind of storageUri."""
    source = {
        "repository": fixture_models,  # <root>/<name>/<version>/
        "model": fixture_models / "tiny",  # <root>/<version>/: one model's version folders
        "version": fixture_models / "tiny" / "2",  # <root>/metadata.json: one version folder
    }[layout]
    target = root / "mnt-models"
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("repository", {("tiny", 1), ("tiny", 2), ("tiny-vae", 1)}),
        ("model", {("tiny", 1), ("tiny", 2)}),
        ("version", {("tiny", 2)}),
    ],
)
def test_registry_reads_every_layout_of_mnt_models(
    tmp_path: Path, fixture_models: Path, layout: str, expected: set[tuple[str, int]]
) -> None:
    snapshot = ModelRegistry(_layout(tmp_path, fixture_models, layout)).load()
    assert not snapshot.failures
    assert {(name, v) for name, versions in snapshot.models.items() for v in versions} == expected
    assert snapshot.get("tiny").metadata.version == 2


@pytest.mark.parametrize("layout", ["model", "version"])
def test_service_answers_on_a_single_model_layout_as_on_the_repository(
    make_client: Any, tmp_path: Path, fixture_models: Path, layout: str
) -> None:
    whole = make_client(fixture_models).post("/reconstruction-error", json={"model": "tiny", "inputs": ROW})
    client = make_client(_layout(tmp_path, fixture_models, layout))
    assert client.get("/v2/health/ready").status_code == 200
    listed = sorted((m["name"], m["version"]) for m in client.get("/models").json()["models"])
    assert listed == {"model": [("tiny", 1), ("tiny", 2)], "version": [("tiny", 2)]}[layout]
    r = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROW})
    assert r.status_code == 200, r.text
    assert r.json()["errors"] == whole.json()["errors"]
    assert client.get("/v2/models/tiny/versions/2/ready").status_code == 200
    missing = client.post("/reconstruction-error", json={"model": "tiny-vae", "inputs": ROW})
    assert missing.status_code == 404
    assert "tiny-vae" in missing.json()["detail"]


def test_single_version_layout_with_invalid_metadata_fails_readiness(
    make_client: Any, tmp_path: Path, fixture_models: Path
) -> None:
    root = _layout(tmp_path, fixture_models, "version")
    (root / "metadata.json").write_text('{"name": "tiny"}')
    snapshot = ModelRegistry(root).load()
    assert not snapshot.models
    assert "invalid metadata.json" in snapshot.failures[0].error
    assert make_client(root).get("/readyz").status_code == 503
