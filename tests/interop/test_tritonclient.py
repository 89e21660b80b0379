"""The Open Inference Protocol (KServe v2) routes, driven by the real v2 client `tritonclient.http`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.live import LiveServer
from tests.reference import fused_outputs

PLAIN_OUTPUTS = ["latent", "reconstruction", "feature_errors", "error"]
VAE_OUTPUTS = ["latent", "log_var", "reconstruction", "feature_errors", "error", "neg_elbo"]


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(f"{live_server.host}:{live_server.port}", connection_timeout=10)
    yield triton
    triton.close()


def _batch(rows: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(5.0, 2.0, (rows, dim)).astype(np.float32)  # (rows, dim)


def _input(x: np.ndarray, binary: bool, name: str = "x", datatype: str = "FP32") -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_v2_server_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "autoencoder-serving"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize(("name", "outputs"), [("tiny", PLAIN_OUTPUTS), ("tiny-vae", VAE_OUTPUTS)])
def test_v2_model_metadata_lists_tensors(
    client: httpclient.InferenceServerClient, name: str, outputs: list[str]
) -> None:
    meta = client.get_model_metadata(name)
    assert meta["name"] == name
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    shapes = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert sorted(shapes) == sorted(outputs)
    assert shapes["latent"] == [-1, 2] and shapes["reconstruction"] == [-1, 4] and shapes["error"] == [-1]
    assert client.is_model_ready(name)


def test_v2_model_metadata_versions(client: httpclient.InferenceServerClient) -> None:
    assert client.get_model_metadata("tiny")["versions"] == ["1", "2"]
    assert client.get_model_metadata("tiny", model_version="1")["versions"] == ["1"]
    assert client.is_model_ready("tiny", model_version="1")
    assert not client.is_model_ready("tiny", model_version="7")
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("name", "outputs"), [("tiny", PLAIN_OUTPUTS), ("tiny-vae", VAE_OUTPUTS)])
def test_v2_infer_all_outputs_match_onnxruntime(
    client: httpclient.InferenceServerClient,
    live_server: LiveServer,
    name: str,
    outputs: list[str],
    binary: bool,
) -> None:
    x = _batch(5)
    requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    result = client.infer(name, [_input(x, binary)], outputs=requested, request_id="req-1")
    response = result.get_response()
    assert response["model_name"] == name and response["id"] == "req-1"
    expected = fused_outputs(live_server.models_dir / name / str(int(response["model_version"])), x)
    for output in outputs:
        got = result.as_numpy(output)
        assert got is not None, output
        assert got.dtype == np.float32 and got.shape == expected[output].shape, output
        np.testing.assert_allclose(got, expected[output], rtol=1e-5, atol=1e-6, err_msg=output)


def test_v2_infer_without_outputs_answers_all_in_binary(
    client: httpclient.InferenceServerClient, live_server: LiveServer
) -> None:
    x = _batch(3, seed=1)
    # No `outputs`: tritonclient asks for binary_data_output, and every output comes back.
    result = client.infer("tiny", [_input(x, binary=True)])
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == PLAIN_OUTPUTS
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    expected = fused_outputs(live_server.models_dir / "tiny" / "2", x)
    np.testing.assert_allclose(result.as_numpy("error"), expected["error"], rtol=1e-5)


def test_v2_infer_selects_outputs(client: httpclient.InferenceServerClient, live_server: LiveServer) -> None:
    x = _batch(2, seed=2)
    wanted = [
        httpclient.InferRequestedOutput("error"),
        httpclient.InferRequestedOutput("latent", binary_data=False),
    ]
    result = client.infer("tiny", [_input(x, binary=True)], outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["error", "latent"]
    assert result.as_numpy("reconstruction") is None
    expected = fused_outputs(live_server.models_dir / "tiny" / "2", x)
    np.testing.assert_allclose(result.as_numpy("latent"), expected["latent"], rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("error"), expected["error"], rtol=1e-5)


def test_v2_infer_pinned_version(client: httpclient.InferenceServerClient, live_server: LiveServer) -> None:
    x = _batch(2, seed=3)
    outputs = [httpclient.InferRequestedOutput("reconstruction")]
    v1 = client.infer("tiny", [_input(x, True)], model_version="1", outputs=outputs)
    v2 = client.infer("tiny", [_input(x, True)], model_version="2", outputs=outputs)
    assert v1.get_response()["model_version"] == "1" and v2.get_response()["model_version"] == "2"
    np.testing.assert_allclose(
        v1.as_numpy("reconstruction"),
        fused_outputs(live_server.models_dir / "tiny" / "1", x)["reconstruction"],
        rtol=1e-5,
    )
    assert not np.allclose(v1.as_numpy("reconstruction"), v2.as_numpy("reconstruction"))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_v2_infer_compressed_request(
    client: httpclient.InferenceServerClient, live_server: LiveServer, algorithm: str
) -> None:
    x = _batch(4, seed=4)
    result = client.infer(
        "tiny",
        [_input(x, True)],
        outputs=[httpclient.InferRequestedOutput("error")],
        request_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(
        result.as_numpy("error"), fused_outputs(live_server.models_dir / "tiny" / "2", x)["error"]
    )


def test_v2_infer_converts_other_numeric_datatypes(
    client: httpclient.InferenceServerClient, live_server: LiveServer
) -> None:
    x = _batch(2, seed=5)
    result = client.infer(
        "tiny",
        [_input(x.astype(np.float64), True, datatype="FP64")],
        outputs=[httpclient.InferRequestedOutput("error")],
    )
    np.testing.assert_allclose(
        result.as_numpy("error"), fused_outputs(live_server.models_dir / "tiny" / "2", x)["error"]
    )


def _error(
    client: httpclient.InferenceServerClient, model: str, inputs: list[httpclient.InferInput], **kw: object
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs, **kw)
    return info.value


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_infer_errors_in_protocol_shape(client: httpclient.InferenceServerClient, binary: bool) -> None:
    good = _batch(2)
    cases: list[tuple[str, list[httpclient.InferInput], dict[str, object], str, str]] = [
        ("no-such-model", [_input(good, binary)], {}, "404", "unknown model 'no-such-model'"),
        ("tiny", [_input(good, binary)], {"model_version": "9"}, "404", "has no version 9"),
        ("tiny", [_input(_batch(2, dim=3), binary)], {}, "400", "expected [batch, 4]"),
        ("tiny", [_input(good, binary, name="inputs")], {}, "400", "unknown input 'inputs'"),
        ("tiny", [_input(good, binary), _input(good, binary, name="y")], {}, "400", "exactly one tensor"),
        (
            "tiny",
            [_input(good, binary)],
            {"outputs": [httpclient.InferRequestedOutput("log_var")]},
            "400",
            "unknown output 'log_var'",
        ),
        (
            "tiny",
            [_input(np.array([[1, 0, 1, 0]], dtype=bool), binary, datatype="BOOL")],
            {},
            "400",
            "datatype 'BOOL'",
        ),
        ("tiny", [_input(np.full((1, 4), np.nan, np.float32), binary)], {}, "400", "expected finite numbers"),
    ]
    for model, inputs, kw, status, message in cases:
        error = _error(client, model, inputs, **kw)
        assert error.status() == status, (model, kw, error)
        assert message in error.message(), (message, error.message())


def test_v2_model_config_is_tritons_shape_with_dims_without_the_batch(
    client: httpclient.InferenceServerClient,
) -> None:
    config = client.get_model_config("tiny")
    assert config["name"] == "tiny" and config["platform"] == "onnxruntime_onnx"
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]
    dims = {o["name"]: o["dims"] for o in config["output"]}
    assert sorted(dims) == sorted(PLAIN_OUTPUTS)
    assert dims["latent"] == [2] and dims["reconstruction"] == [4] and dims["error"] == []
    assert config["max_batch_size"] > 0


def test_v2_statistics_count_rows_and_successful_requests(client: httpclient.InferenceServerClient) -> None:
    def stats() -> dict[str, object]:
        answer: dict[str, object] = client.get_inference_statistics("tiny", "2")["model_stats"][0]
        return answer

    before = stats()
    client.infer("tiny", [_input(_batch(7), binary=True)])
    after = stats()
    assert int(after["inference_count"]) == int(before.get("inference_count", 0)) + 7  # type: ignore[call-overload]
    success_before = before["inference_stats"]["success"].get("count", 0)  # type: ignore[index]
    assert int(after["inference_stats"]["success"]["count"]) == int(success_before) + 1  # type: ignore[index]
