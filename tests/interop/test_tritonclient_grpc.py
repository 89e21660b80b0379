"""The Open Inference Protocol over gRPC, driven by the real v2 client `tritonclient.grpc`: the same numbers
as REST, API keys in metadata, and errors with gRPC status codes and the service's messages."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.fixtures.make_models import FIXTURE_MODELS
from tests.live import LiveServer

KEY = "grpc-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(FIXTURE_MODELS, grpc=True, env={"AE_API_KEYS": KEY, "AE_MAX_BATCH_ROWS": "64"}) as live:
        yield live


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(f"{server.host}:{server.grpc_port}")
    yield triton
    triton.close()


def _batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(5.0, 2.0, (rows, 4)).astype(np.float32)


def _input(x: np.ndarray, name: str = "x", datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def _rest(server: LiveServer, path: str, body: dict[str, object]) -> dict[str, object]:
    r = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    answer: dict[str, object] = r.json()
    return answer


def test_grpc_health_metadata_and_readiness(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live(headers=AUTH)
    assert client.is_server_ready(headers=AUTH)
    meta = client.get_server_metadata(headers=AUTH, as_json=True)
    assert meta["name"] == "autoencoder-serving"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(meta["extensions"])
    model = client.get_model_metadata("tiny", headers=AUTH, as_json=True)
    assert model["versions"] == ["1", "2"]
    assert {"name": "x", "datatype": "FP32", "shape": ["-1", "4"]} in model["inputs"]
    assert client.is_model_ready("tiny", "1", headers=AUTH)
    assert not client.is_model_ready("tiny", "7", headers=AUTH)
    config = client.get_model_config("tiny", headers=AUTH, as_json=True)["config"]
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == ["4"]


def test_grpc_health_service(server: LiveServer) -> None:
    with grpc.insecure_channel(f"{server.host}:{server.grpc_port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("rows", [1, 64])
def test_grpc_infer_matches_rest_denoise_and_encode(
    client: grpcclient.InferenceServerClient, server: LiveServer, rows: int
) -> None:
    x = _batch(rows, seed=rows)
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("latent", "reconstruction", "error")]
    result = client.infer("tiny", [_input(x)], outputs=wanted, headers=AUTH)
    denoised = _rest(server, "/denoise", {"model": "tiny", "inputs": x.tolist()})
    encoded = _rest(server, "/encode", {"model": "tiny", "inputs": x.tolist()})
    scored = _rest(server, "/reconstruction-error", {"model": "tiny", "inputs": x.tolist()})
    np.testing.assert_allclose(result.as_numpy("reconstruction"), denoised["outputs"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("latent"), encoded["latents"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("error"), scored["errors"], rtol=1e-5, atol=1e-6)
    assert result.get_response().model_version == "2"


def test_grpc_infer_typed_contents(server: LiveServer) -> None:
    # tritonclient's own protocol modules (the service's define the same `inference` messages, so the two
    # cannot be loaded in one process).
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    x = _batch(3, seed=9)
    request = pb.ModelInferRequest(model_name="tiny", model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="error")
    with grpc.insecure_channel(f"{server.host}:{server.grpc_port}") as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=tuple(AUTH.items()))
    errors = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
    expected = _rest(server, "/reconstruction-error", {"model": "tiny", "version": 1, "inputs": x.tolist()})
    np.testing.assert_allclose(errors, expected["errors"], rtol=1e-5)


def _error(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return info.value


def test_grpc_errors_carry_status_codes_and_the_service_messages(
    client: grpcclient.InferenceServerClient,
) -> None:
    good = [_input(_batch(2))]
    cases = [
        (lambda: client.infer("nope", good, headers=AUTH), "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        (
            lambda: client.infer("tiny", good, model_version="9", headers=AUTH),
            "StatusCode.NOT_FOUND",
            "has no version 9",
        ),
        (
            lambda: client.infer("tiny", [_input(_batch(2)[:, :3])], headers=AUTH),
            "StatusCode.INVALID_ARGUMENT",
            "expected [batch, 4]",
        ),
        (
            lambda: client.infer("tiny", [_input(np.full((1, 4), np.nan, np.float32))], headers=AUTH),
            "StatusCode.INVALID_ARGUMENT",
            "expected finite numbers",
        ),
        (
            lambda: client.infer("tiny", [_input(_batch(65))], headers=AUTH),
            "StatusCode.RESOURCE_EXHAUSTED",
            "AE_MAX_BATCH_ROWS",
        ),
        (lambda: client.infer("tiny", good), "StatusCode.UNAUTHENTICATED", "missing API key"),
        (
            lambda: client.infer("tiny", good, headers={"authorization": "Bearer wrong"}),
            "StatusCode.PERMISSION_DENIED",
            "the API key is not valid",
        ),
        (
            lambda: client.infer("tiny", good, model_version="\u00b2", headers=AUTH),
            "StatusCode.INVALID_ARGUMENT",
            "not a positive integer",
        ),
    ]
    for call, status, message in cases:
        error = _error(call)
        assert error.status() == status, (status, error)
        assert message in error.message(), (message, error.message())


def test_grpc_statistics_count_the_requests(client: grpcclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("tiny", "2", headers=AUTH, as_json=True)["model_stats"][0]
    client.infer("tiny", [_input(_batch(5))], headers=AUTH)
    after = client.get_inference_statistics("tiny", "2", headers=AUTH, as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 5
    assert (
        int(after["inference_stats"]["success"]["count"])
        == int(before["inference_stats"]["success"].get("count", 0)) + 1
    )


def _grpc_count(server: LiveServer, model: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    labels = ('endpoint="grpc/ModelInfer"', f'model="{model}"', 'status="200"')
    for line in text.splitlines():
        if line.startswith("ae_requests_total{") and all(label in line for label in labels):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_grpc_requests_are_counted_by_the_model_they_ran_and_unknown_names_add_no_labels(
    server: LiveServer, client: grpcclient.InferenceServerClient
) -> None:
    before = _grpc_count(server, "tiny")
    client.infer("tiny", [_input(_batch(2))], headers=AUTH)
    assert _grpc_count(server, "tiny") == before + 1
    with pytest.raises(InferenceServerException):
        client.infer("no-such-model-7f3a", [_input(_batch(2))], headers=AUTH)
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    assert "no-such-model-7f3a" not in text


def test_grpc_unavailable_model_is_unavailable(tmp_path: object) -> None:
    import shutil
    from pathlib import Path

    root = Path(str(tmp_path)) / "models"
    shutil.copytree(FIXTURE_MODELS, root)
    (root / "tiny" / "2" / "encoder.onnx").write_bytes(b"\0" * 10)
    with LiveServer(root, grpc=True, ready_path="/healthz") as live:
        triton = grpcclient.InferenceServerClient(f"{live.host}:{live.grpc_port}")
        error = _error(lambda: triton.infer("tiny", [_input(_batch(1))], model_version="2"))
        triton.close()
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "failed to load" in error.message()


def test_grpc_image_tensors_match_rest() -> None:
    from tests.fixtures.make_shaped import SHAPED_MODELS

    images = np.random.default_rng(5).uniform(0, 255, (3, 1, 4, 4)).round().astype(np.float32)
    with LiveServer(SHAPED_MODELS, grpc=True) as live:
        triton = grpcclient.InferenceServerClient(f"{live.host}:{live.grpc_port}")
        try:
            wanted = [grpcclient.InferRequestedOutput(n) for n in ("reconstruction", "error")]
            result = triton.infer("tiny-image", [_input(images)], outputs=wanted)
        finally:
            triton.close()
        rest = httpx.post(
            f"{live.url}/reconstruction-error", json={"model": "tiny-image", "inputs": images.tolist()}
        ).json()
        denoised = httpx.post(f"{live.url}/denoise", json={"model": "tiny-image", "inputs": images.tolist()})
    assert result.as_numpy("reconstruction").shape == (3, 1, 4, 4)  # the image shape it was sent in
    np.testing.assert_allclose(result.as_numpy("reconstruction"), denoised.json()["outputs"], rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("error"), rest["errors"], rtol=1e-5)
