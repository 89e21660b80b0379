"""Every model shipped in the repository's models/ directory loads and serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.contract import ModelMetadata
from tests.conftest import SHIPPED_MODELS

SHIPPED = sorted(p.parent for p in SHIPPED_MODELS.glob("*/*/metadata.json"))


@pytest.fixture(scope="module")
def shipped_client() -> Any:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(models_dir=SHIPPED_MODELS))) as client:
        yield client


def test_shipped_repository_is_not_empty() -> None:
    assert SHIPPED, f"no models under {SHIPPED_MODELS}"


def test_shipped_models_all_ready(shipped_client: Any) -> None:
    r = shipped_client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["models"] == len(SHIPPED)


@pytest.mark.parametrize("directory", SHIPPED, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_shipped_model_serves_every_endpoint(shipped_client: Any, directory: Path) -> None:
    meta = ModelMetadata.read(directory)
    low, high = np.asarray(meta.data.feature_min), np.asarray(meta.data.feature_max)
    # (batch, input_dim); a series model's as windows (batch, window, channels), which it scores one each
    x = np.random.default_rng(0).uniform(low, high, (8, meta.input_dim))
    if meta.series is not None:
        x = x.reshape(8, *meta.input_shape)
    ref = {"model": meta.name, "version": meta.version}
    latents = shipped_client.post("/encode", json={**ref, "inputs": x.tolist()}).json()["latents"]
    assert np.asarray(latents).shape == (8, meta.latent_dim)
    decoded = shipped_client.post("/decode", json={**ref, "latents": latents}).json()["outputs"]
    denoised = shipped_client.post("/denoise", json={**ref, "inputs": x.tolist()}).json()["outputs"]
    assert np.asarray(denoised).shape == x.shape  # as sent
    # Decoded codes come in the model's own sample shape (an image model's (channels, height, width)).
    np.testing.assert_allclose(np.reshape(decoded, x.shape), denoised, rtol=1e-4, atol=1e-4)
    body = shipped_client.post(
        "/reconstruction-error", json={**ref, "inputs": x.tolist(), "per_feature": True}
    ).json()
    errors = np.asarray(body["feature_errors"])  # (batch, *sample shape)
    np.testing.assert_allclose(
        errors.mean(axis=tuple(range(1, errors.ndim))), body["errors"], rtol=1e-4, atol=1e-6
    )
    if meta.calibration:
        assert body["threshold_source"] == "model_default"
    sample = shipped_client.post("/sample", json={**ref, "n": 2, "seed": 0})
    assert sample.status_code == (200 if meta.generative else 422)


IMAGE_MODELS = [d for d in SHIPPED if ModelMetadata.read(d).image is not None]


@pytest.mark.parametrize("directory", IMAGE_MODELS, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_shipped_image_model_answers_pngs_of_its_size(shipped_client: Any, directory: Path) -> None:
    import io

    from PIL import Image

    meta = ModelMetadata.read(directory)
    assert meta.image is not None
    size = (meta.image.width, meta.image.height)
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size[::-1]).astype(np.uint8)  # (height, width)
    Image.fromarray(pixels).save(buffer, "PNG")
    png = {"content-type": "image/png", "accept": "image/png"}
    query = f"model={meta.name}&version={meta.version}"
    denoised = shipped_client.post(f"/denoise?{query}", content=buffer.getvalue(), headers=png)
    assert denoised.status_code == 200, denoised.text
    assert Image.open(io.BytesIO(denoised.content)).size == size
    if meta.generative:
        sample = shipped_client.post(
            "/sample", json={"model": meta.name, "n": 1, "seed": 0}, headers={"accept": "image/png"}
        )
        assert sample.status_code == 200, sample.text
        assert Image.open(io.BytesIO(sample.content)).size == size
