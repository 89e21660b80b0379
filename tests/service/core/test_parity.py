"""The service answers what ONNX Runtime computes on the same files; its endpoints agree with each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.contract import ModelMetadata, ScoreCalibration
from service.core.calibration import threshold_for_rate
from tests.reference import fused_outputs

X = np.random.default_rng(42).normal(5.0, 2.0, (16, 4)).astype(np.float32)  # (batch, input_dim)


@pytest.mark.parametrize("name", ["tiny", "tiny-vae"])
def test_denoise_equals_onnxruntime_direct(client: Any, fixture_models: Path, name: str) -> None:
    directory = fixture_models / name / "1"
    direct = fused_outputs(directory, X)["reconstruction"]
    served = client.post("/denoise", json={"model": name, "version": 1, "inputs": X.tolist()}).json()[
        "outputs"
    ]
    np.testing.assert_allclose(served, direct, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "tiny-vae"])
def test_decode_of_encode_equals_denoise(client: Any, name: str) -> None:
    latents = client.post("/encode", json={"model": name, "inputs": X.tolist()}).json()["latents"]
    decoded = client.post("/decode", json={"model": name, "latents": latents}).json()["outputs"]
    denoised = client.post("/denoise", json={"model": name, "inputs": X.tolist()}).json()["outputs"]
    np.testing.assert_allclose(decoded, denoised, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "tiny-vae"])
def test_reconstruction_error_is_mse_of_denoise_in_normalised_space(
    client: Any, fixture_models: Path, name: str
) -> None:
    meta = ModelMetadata.read(fixture_models / name / "1")
    offset, scale = np.asarray(meta.normalisation.offset), np.asarray(meta.normalisation.scale)
    request = {"model": name, "version": 1, "inputs": X.tolist()}
    outputs = np.asarray(client.post("/denoise", json=request).json()["outputs"])
    expected = (((outputs - offset) / scale - (X - offset) / scale) ** 2).mean(axis=1)  # (batch,)
    errors = client.post("/reconstruction-error", json=request).json()["errors"]
    np.testing.assert_allclose(errors, expected, rtol=1e-4, atol=1e-5)


def test_per_feature_errors_average_to_sample_error(client: Any) -> None:
    body = client.post(
        "/reconstruction-error", json={"model": "tiny-vae", "inputs": X.tolist(), "per_feature": True}
    ).json()
    feature_errors = np.asarray(body["feature_errors"])
    assert feature_errors.shape == (16, 4)
    np.testing.assert_allclose(feature_errors.mean(axis=1), body["errors"], rtol=1e-5)


def test_neg_elbo_equals_fused_graph_output(client: Any, fixture_models: Path) -> None:
    directory = fixture_models / "tiny-vae" / "1"
    direct = fused_outputs(directory, X)["neg_elbo"]
    body = client.post(
        "/reconstruction-error", json={"model": "tiny-vae", "inputs": X.tolist(), "score": "neg_elbo"}
    )
    np.testing.assert_allclose(body.json()["errors"], direct, rtol=1e-6)


@pytest.mark.parametrize(
    ("rate", "low", "high"), [(0.01, "0.99", "0.99"), (0.04, "0.95", "0.97"), (0.25, "0.7", "0.8")]
)
def test_false_alarm_rate_maps_to_interpolated_quantile(
    client: Any, fixture_models: Path, rate: float, low: str, high: str
) -> None:
    quantiles = ModelMetadata.read(fixture_models / "tiny" / "2").calibration["mse"].quantiles
    level = 1 - rate
    p0, p1 = float(low), float(high)
    weight = 0.0 if p1 == p0 else (level - p0) / (p1 - p0)
    expected = quantiles[low] + weight * (quantiles[high] - quantiles[low])
    body = client.post(
        "/reconstruction-error", json={"model": "tiny", "inputs": X.tolist(), "false_alarm_rate": rate}
    )
    assert body.status_code == 200
    assert body.json()["threshold"] == pytest.approx(expected, rel=1e-9)
    assert body.json()["threshold_source"] == "false_alarm_rate"
    assert body.json()["false_alarm_rate"] == rate
    assert body.json()["anomalies"] == [e > expected for e in body.json()["errors"]]


def _calibration(quantiles: dict[str, float]) -> ScoreCalibration:
    return ScoreCalibration(
        n=100, mean=1.0, std=1.0, quantiles=quantiles, false_alarm_rate=0.01, threshold=3.0
    )


def test_threshold_for_rate_interpolates_linearly() -> None:
    cal = _calibration({"0.5": 1.0, "0.9": 2.0, "0.99": 4.0})
    assert threshold_for_rate(cal, 0.1) == pytest.approx(2.0)
    assert threshold_for_rate(cal, 0.3) == pytest.approx(1.5)  # level 0.7: halfway between 0.5 and 0.9
    assert threshold_for_rate(cal, 0.055) == pytest.approx(3.0)  # level 0.945: halfway between 0.9 and 0.99


def test_calibration_rate_for_inverts_interpolation() -> None:
    cal = _calibration({"0.5": 1.0, "0.9": 2.0, "0.99": 4.0})
    assert cal.rate_for(3.0) == pytest.approx(0.055)
    assert cal.rate_for(10.0) is None
    assert cal.rate_for(threshold_for_rate(cal, 0.2)) == pytest.approx(0.2)


def test_request_threshold_reports_its_false_alarm_rate(client: Any, fixture_models: Path) -> None:
    cal = ModelMetadata.read(fixture_models / "tiny" / "2").calibration["mse"]
    body = client.post(
        "/reconstruction-error",
        json={"model": "tiny", "inputs": X.tolist(), "threshold": cal.quantiles["0.95"]},
    ).json()
    assert body["false_alarm_rate"] == pytest.approx(0.05)


@pytest.mark.parametrize("name", ["tiny", "tiny-vae"])
def test_codes_by_the_open_inference_protocol_share_encodes_micro_batches(
    client: Any, fixture_models: Path, name: str
) -> None:
    from service.core.runtime import OnnxModel
    from service.core.tasks import TASKS, NoOptions, OutputsOptions

    model = OnnxModel.load(fixture_models / name / "1")
    encode = TASKS["encode"].plan(model, NoOptions())
    for outputs in [("latent",), tuple(model.encoder_outputs)]:
        codes = TASKS["outputs"].plan(model, OutputsOptions(outputs=outputs))
        assert (codes.key, codes.fn) == (encode.key, encode.fn)
    fused = TASKS["outputs"].plan(model, OutputsOptions(outputs=("latent", "reconstruction")))
    assert fused.key != encode.key
    rest = client.post("/encode", json={"model": name, "version": 1, "inputs": X.tolist()}).json()
    v2 = client.post(
        f"/v2/models/{name}/versions/1/infer",
        json={
            "inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}],
            "outputs": [{"name": "latent"}],
        },
    ).json()
    (latent,) = v2["outputs"]
    np.testing.assert_array_equal(np.asarray(latent["data"]).reshape(latent["shape"]), rest["latents"])
