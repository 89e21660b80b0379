"""Every endpoint and every client error, on the tiny fixture repository (status and message)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from tests.payloads import npy_bytes

ROWS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [-1.0, 0.5, 2.5, 9.0]]


def test_encode_returns_latents_of_latest_version(client: Any) -> None:
    r = client.post("/encode", json={"model": "tiny", "inputs": ROWS})
    assert r.status_code == 200
    body = r.json()
    assert (body["model"], body["version"]) == ("tiny", 2)
    assert np.asarray(body["latents"]).shape == (3, 2)
    assert "log_var" not in body


def test_encode_explicit_version_differs(client: Any) -> None:
    v1 = client.post("/encode", json={"model": "tiny", "version": 1, "inputs": ROWS}).json()
    v2 = client.post("/encode", json={"model": "tiny", "version": 2, "inputs": ROWS}).json()
    assert v1["version"] == 1
    assert not np.allclose(v1["latents"], v2["latents"])


def test_encode_vae_adds_log_var(client: Any) -> None:
    body = client.post("/encode", json={"model": "tiny-vae", "inputs": ROWS}).json()
    assert np.asarray(body["latents"]).shape == (3, 2)
    assert np.asarray(body["log_var"]).shape == (3, 2)


def test_decode_returns_outputs(client: Any) -> None:
    r = client.post("/decode", json={"model": "tiny", "latents": [[0.1, -0.2]]})
    assert r.status_code == 200
    assert np.asarray(r.json()["outputs"]).shape == (1, 4)


def test_denoise_returns_outputs(client: Any) -> None:
    r = client.post("/denoise", json={"model": "tiny-vae", "inputs": ROWS})
    assert r.status_code == 200
    assert np.asarray(r.json()["outputs"]).shape == (3, 4)


def test_denoise_missing_content_type_is_json(client: Any) -> None:
    import orjson

    r = client.post("/denoise", content=orjson.dumps({"model": "tiny", "inputs": ROWS}), headers={})
    assert r.status_code == 200
    assert np.asarray(r.json()["outputs"]).shape == (3, 4)


def test_sample_is_reproducible_with_seed(client: Any) -> None:
    a = client.post("/sample", json={"model": "tiny-vae", "n": 5, "seed": 7}).json()
    b = client.post("/sample", json={"model": "tiny-vae", "n": 5, "seed": 7}).json()
    c = client.post("/sample", json={"model": "tiny-vae", "n": 5, "seed": 8}).json()
    assert np.asarray(a["outputs"]).shape == (5, 4)
    assert a["outputs"] == b["outputs"]
    assert a["outputs"] != c["outputs"]


def test_sample_refuses_non_generative_model(client: Any) -> None:
    r = client.post("/sample", json={"model": "tiny", "n": 2})
    assert r.status_code == 422
    assert "cannot generate" in r.json()["detail"]


def test_sample_n_over_limit_is_413(make_client: Any) -> None:
    r = make_client(max_batch_rows=4).post("/sample", json={"model": "tiny-vae", "n": 5})
    assert r.status_code == 413
    assert "AE_MAX_BATCH_ROWS" in r.json()["detail"]


def test_sample_n_below_one_is_422(client: Any) -> None:
    r = client.post("/sample", json={"model": "tiny-vae", "n": 0})
    assert r.status_code == 422
    assert "n" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": "nope", "inputs": ROWS}, 404, "available models: tiny, tiny-vae"),
        ({"model": "tiny", "version": 9, "inputs": ROWS}, 404, "available versions: 1, 2"),
        ({"model": "tiny", "inputs": [[1.0, 2.0, 3.0]]}, 422, "must have 4 values, got 3"),
        ({"model": "tiny", "inputs": [[1, 2, 3, 4], [1, 2, 3]]}, 422, "ragged rows"),
        ({"model": "tiny", "inputs": []}, 422, "empty batch"),
        ({"model": "tiny", "inputs": [[1, 2, 3, True]]}, 422, "inputs[0][3] is a boolean"),
        ({"model": "tiny", "inputs": [[1, 2, 3, "4"]]}, 422, "inputs[0][3] is a string"),
        ({"model": "tiny", "inputs": [[1, 2, None, 4]]}, 422, "inputs[0][2] is null"),
        ({"model": "tiny", "inputs": [1, 2, 3, 4]}, 422, "got a 1-D array of shape (4,)"),
        ({"model": "tiny", "inputs": [[[1, 2, 3, 4]]]}, 422, "3-D"),
        ({"model": "tiny", "inputs": "abc"}, 422, "expected a list of rows"),
        ({"model": "tiny", "inputs": [[1, 2, 3, 1e39]]}, 422, "outside the float32 range"),
        ({"model": "tiny"}, 422, "missing field 'inputs'"),
        ({"inputs": ROWS}, 422, "missing field 'model'"),
        ({"model": "tiny", "inputs": ROWS, "input": 1}, 422, "unknown field 'input'"),
        ({"model": "tiny", "version": True, "inputs": ROWS}, 422, "version"),
        ({"model": "tiny", "version": 0, "inputs": ROWS}, 422, "greater than or equal to 1"),
    ],
)
def test_encode_rejects_bad_requests(client: Any, body: dict[str, Any], status: int, fragment: str) -> None:
    r = client.post("/encode", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_encode_bool_in_inputs_found_despite_top_level_bool(client: Any) -> None:
    body = {"model": "tiny", "per_feature": True, "inputs": [[1, 2, 3, False]]}
    r = client.post("/reconstruction-error", json=body)
    assert r.status_code == 422
    assert "inputs[0][3] is a boolean (false)" in r.json()["detail"]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_encode_non_finite_is_422(client: Any, token: bytes) -> None:
    body = b'{"model": "tiny", "inputs": [[1, 2, 3, ' + token + b"]]}"
    r = client.post("/encode", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "expected finite numbers" in r.json()["detail"]


def test_encode_nan_in_npy_is_422(client: Any) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    x[1, 2] = np.nan
    r = client.post("/encode?model=tiny", content=npy_bytes(x), headers={"content-type": "application/x-npy"})
    assert r.status_code == 422
    assert "inputs[1][2] is nan" in r.json()["detail"]


@pytest.mark.parametrize("body", [b'{"model": "tiny", "inputs": [[1,2', b"[1, 2]", b"   ", b"\xff\xfe"])
def test_encode_malformed_json_is_400(client: Any, body: bytes) -> None:
    r = client.post("/encode", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["detail"]


def test_encode_wrong_content_type_is_415(client: Any) -> None:
    r = client.post(
        "/encode", content=b"model=tiny", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415
    assert "expected application/json, application/x-npy or application/octet-stream" in r.json()["detail"]


def test_encode_unacceptable_accept_is_406(client: Any) -> None:
    r = client.post("/encode", json={"model": "tiny", "inputs": ROWS}, headers={"accept": "text/csv"})
    assert r.status_code == 406
    assert "text/csv" in r.json()["detail"]


def test_encode_too_many_rows_is_413(make_client: Any) -> None:
    r = make_client(max_batch_rows=2).post("/encode", json={"model": "tiny", "inputs": ROWS})
    assert r.status_code == 413
    assert "3 rows, over the limit of 2" in r.json()["detail"]


def test_encode_body_over_limit_is_413_by_content_length(make_client: Any) -> None:
    r = make_client(max_body_bytes=50).post("/encode", json={"model": "tiny", "inputs": ROWS})
    assert r.status_code == 413
    assert "over the limit of 50 bytes" in r.json()["detail"]


def test_encode_chunked_body_over_limit_is_413(make_client: Any) -> None:
    def chunks() -> Any:
        yield b'{"model": "tiny", "inputs": ['
        for _ in range(20):
            yield b"[1, 2, 3, 4],"
        yield b"[1, 2, 3, 4]]}"

    r = make_client(max_body_bytes=100).post("/encode", content=chunks())
    assert r.status_code == 413
    assert "over the limit of 100 bytes" in r.json()["detail"]


def test_encode_npy_in_npy_out(client: Any) -> None:
    x = np.asarray(ROWS, dtype=np.float32)
    r = client.post(
        "/encode?model=tiny&version=1",
        content=npy_bytes(x),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-npy"
    assert r.headers["x-model-version"] == "1"
    latents = np.load(io.BytesIO(r.content))
    expected = client.post("/encode", json={"model": "tiny", "version": 1, "inputs": ROWS}).json()["latents"]
    np.testing.assert_allclose(latents, expected, rtol=1e-6)


def test_denoise_raw_float32_in_and_out(client: Any) -> None:
    x = np.asarray(ROWS, dtype=np.float32)
    r = client.post(
        "/denoise?model=tiny",
        content=x.astype("<f4").tobytes(),
        headers={
            "content-type": "application/octet-stream",
            "x-tensor-shape": "3,4",
            "accept": "application/octet-stream",
        },
    )
    assert r.status_code == 200
    assert r.headers["x-tensor-shape"] == "3,4"
    out = np.frombuffer(r.content, dtype="<f4").reshape(3, 4)
    expected = client.post("/denoise", json={"model": "tiny", "inputs": ROWS}).json()["outputs"]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("headers", "content", "status", "fragment"),
    [
        ({"content-type": "application/octet-stream"}, b"\0" * 16, 400, "needs the X-Tensor-Shape header"),
        ({"content-type": "application/octet-stream", "x-tensor-shape": "a,b"}, b"\0" * 16, 400, "not comma"),
        ({"content-type": "application/octet-stream", "x-tensor-shape": "2,4"}, b"\0" * 16, 400, "needs 32"),
        ({"content-type": "application/octet-stream", "x-tensor-shape": "16"}, b"\0" * 64, 422, "2-D array"),
        ({"content-type": "application/octet-stream", "x-tensor-shape": "2,2"}, b"\0" * 16, 422, "4 values"),
        ({"content-type": "application/x-npy"}, b"not an npy file", 400, "not a readable .npy"),
    ],
)
def test_denoise_bad_binary_bodies(
    client: Any, headers: dict[str, str], content: bytes, status: int, fragment: str
) -> None:
    r = client.post("/denoise?model=tiny", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_denoise_binary_without_model_query_is_422(client: Any) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    r = client.post("/denoise", content=npy_bytes(x), headers={"content-type": "application/x-npy"})
    assert r.status_code == 422
    assert "missing field 'model'" in r.json()["detail"]


def test_denoise_npy_bool_dtype_is_422(client: Any) -> None:
    r = client.post(
        "/denoise?model=tiny",
        content=npy_bytes(np.ones((1, 4), dtype=bool)),
        headers={"content-type": "application/x-npy"},
    )
    assert r.status_code == 422
    assert "dtype bool" in r.json()["detail"]


def test_reconstruction_error_default_threshold(client: Any, fixture_models: Any) -> None:
    from service.contract import ModelMetadata

    meta = ModelMetadata.read(fixture_models / "tiny" / "2")
    body = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROWS}).json()
    assert body["score"] == "mse"
    assert body["threshold"] == pytest.approx(meta.calibration["mse"].threshold)
    assert body["threshold_source"] == "model_default"
    assert body["false_alarm_rate"] == pytest.approx(0.01)
    assert body["anomalies"] == [e > body["threshold"] for e in body["errors"]]
    assert "feature_errors" not in body


def test_reconstruction_error_request_threshold(client: Any) -> None:
    body = client.post(
        "/reconstruction-error", json={"model": "tiny", "inputs": ROWS, "threshold": 1.5}
    ).json()
    assert body["threshold"] == 1.5
    assert body["threshold_source"] == "request"
    assert body["anomalies"] == [e > 1.5 for e in body["errors"]]


def test_reconstruction_error_both_threshold_and_rate_is_422(client: Any) -> None:
    body = {"model": "tiny", "inputs": ROWS, "threshold": 1.0, "false_alarm_rate": 0.01}
    r = client.post("/reconstruction-error", json=body)
    assert r.status_code == 422
    assert "either threshold or false_alarm_rate, not both" in r.json()["detail"]


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5])
def test_reconstruction_error_rate_outside_open_interval_is_422(client: Any, rate: float) -> None:
    r = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROWS, "false_alarm_rate": rate})
    assert r.status_code == 422
    assert "false_alarm_rate" in r.json()["detail"]


def test_reconstruction_error_rate_outside_grid_is_422(client: Any) -> None:
    r = client.post(
        "/reconstruction-error", json={"model": "tiny", "inputs": ROWS, "false_alarm_rate": 0.0001}
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "false_alarm_rate 0.0001 is not supported by this model's calibration" in detail
    assert "support false-alarm rates from 0.001 to 0.5" in detail


def test_reconstruction_error_neg_elbo_only_where_declared(client: Any) -> None:
    r = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROWS, "score": "neg_elbo"})
    assert r.status_code == 422
    assert "has no score 'neg_elbo'; expected one of ['mse']" in r.json()["detail"]
    ok = client.post("/reconstruction-error", json={"model": "tiny-vae", "inputs": ROWS, "score": "neg_elbo"})
    assert ok.status_code == 200
    assert ok.json()["score"] == "neg_elbo"
    assert ok.json()["threshold_source"] == "model_default"


def test_reconstruction_error_unknown_score_is_422(client: Any) -> None:
    r = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROWS, "score": "l1"})
    assert r.status_code == 422
    assert "score" in r.json()["detail"]


def test_reconstruction_error_uncalibrated_model(make_client: Any, tmp_path: Any) -> None:
    from tests.fixtures.make_models import write_model

    write_model(tmp_path, "raw", 1, calibrated=False)
    client = make_client(tmp_path)
    body = client.post("/reconstruction-error", json={"model": "raw", "inputs": ROWS}).json()
    assert body["threshold"] is None
    assert body["threshold_source"] is None
    assert body["anomalies"] == [False, False, False]
    r = client.post("/reconstruction-error", json={"model": "raw", "inputs": ROWS, "false_alarm_rate": 0.01})
    assert r.status_code == 422
    assert "no calibration for score 'mse'" in r.json()["detail"]


def test_reconstruction_error_binary_answer_has_threshold_headers(client: Any) -> None:
    r = client.post(
        "/reconstruction-error?model=tiny&false_alarm_rate=0.05",
        content=npy_bytes(np.asarray(ROWS, dtype=np.float32)),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert r.status_code == 200
    assert r.headers["x-threshold-source"] == "false_alarm_rate"
    assert np.load(io.BytesIO(r.content)).shape == (3,)


def test_reconstruction_error_per_feature_binary_is_406(client: Any) -> None:
    r = client.post(
        "/reconstruction-error?model=tiny&per_feature=true",
        content=npy_bytes(np.asarray(ROWS, dtype=np.float32)),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert r.status_code == 406
    assert "per_feature answers are JSON only" in r.json()["detail"]


def test_models_lists_every_version_with_contract_fields(client: Any) -> None:
    models = client.get("/models").json()["models"]
    assert [(m["name"], m["version"]) for m in models] == [("tiny", 1), ("tiny", 2), ("tiny-vae", 1)]
    vae = models[2]
    for key in ["variant", "input_dim", "latent_dim", "image", "generative", "providers", "metrics"]:
        assert key in vae
    assert vae["status"] == "ready"
    assert vae["providers"] == ["CPUExecutionProvider"]
    assert vae["scores"] == ["mse", "neg_elbo"]
    assert vae["generative"] is True
    assert "0.99" in vae["calibration"]["mse"]["quantiles"]


def test_get_model_lists_versions(client: Any) -> None:
    body = client.get("/models/tiny").json()
    assert body["name"] == "tiny"
    assert body["latest"] == 2
    assert [v["version"] for v in body["versions"]] == [1, 2]


def test_get_model_unknown_is_404(client: Any) -> None:
    r = client.get("/models/nope")
    assert r.status_code == 404
    assert r.json()["detail"] == "unknown model 'nope'; available models: tiny, tiny-vae"


def test_healthz_ok(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ready(client: Any) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "models": 3}


def test_readyz_empty_repository_is_503(make_client: Any, tmp_path: Any) -> None:
    r = make_client(tmp_path).get("/readyz")
    assert r.status_code == 503
    assert "no models found under" in r.json()["detail"]


def test_metrics_count_requests_by_endpoint_model_status(client: Any) -> None:
    client.post("/denoise", json={"model": "tiny", "inputs": ROWS})
    client.post("/denoise", json={"model": "tiny", "inputs": [[1.0]]})
    text = client.get("/metrics").text
    assert 'ae_requests_total{endpoint="/denoise",model="tiny",status="200"} 1.0' in text
    assert 'ae_requests_total{endpoint="/denoise",model="tiny",status="422"} 1.0' in text
    assert 'ae_batch_rows_sum{endpoint="denoise",model="tiny"} 3.0' in text
    assert 'ae_inference_duration_seconds_count{endpoint="denoise",model="tiny"} 1.0' in text
    assert "ae_request_duration_seconds_bucket" in text
    assert "ae_models_loaded 3.0" in text


def test_info_shows_thread_plan(client: Any) -> None:
    body = client.get("/info").json()
    plan = body["thread_plan"]
    assert plan["intra_op_threads"] == 1
    assert plan["workers"] * plan["intra_op_threads"] <= plan["cpus_available"]
    assert body["limits"]["max_batch_rows"] == 1024


def test_big_batch_runs_off_the_event_loop_with_same_answer(make_client: Any) -> None:
    rows = np.random.default_rng(0).normal(5, 2, (40, 4)).tolist()
    inline = make_client(inline_max_rows=1000).post("/denoise", json={"model": "tiny", "inputs": rows}).json()
    threaded = make_client(inline_max_rows=1).post("/denoise", json={"model": "tiny", "inputs": rows}).json()
    assert inline["outputs"] == threaded["outputs"]


def test_unknown_route_keeps_error_shape(client: Any) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert set(r.json()) == {"detail"}
