"""The shipped series model answers the same numbers over REST, v2 over HTTP and v2 over gRPC.

The series sent is `example.csv` beside the model: two days after its training data, with faults written
in. One live server (`python -m service` with gRPC on) serves the shipped repository.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.contract import ModelMetadata
from tests.conftest import SHIPPED_MODELS
from tests.live import LiveServer

SERIES = SHIPPED_MODELS / "sensors-plain" / "1"
EXAMPLE = SERIES / "example.csv"
STEP_OUTPUTS = ("step_error", "step_anomaly", "error")

pytestmark = pytest.mark.skipif(not EXAMPLE.is_file(), reason="the shipped series model is not built")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(SHIPPED_MODELS, grpc=True, env={"AE_API_KEYS": None, "AE_API_KEYS_FILE": None}) as live:
        yield live


def _example() -> tuple[list[str], np.ndarray[Any, Any]]:
    """The example's header and its channel values (steps, channels), the time column left out."""
    with EXAMPLE.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.asarray([[float(c) for c in row[1:]] for row in rows[1:]], dtype=np.float32)


def _rest(server: LiveServer) -> dict[str, Any]:
    """/reconstruction-error on the example CSV as it is (its time column checked and dropped)."""
    answer = httpx.post(
        f"{server.url}/reconstruction-error",
        params={"model": "sensors-plain"},
        content=EXAMPLE.read_bytes(),
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _v2_http(server: LiveServer, values: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    request = {
        "inputs": [
            {"name": "x", "shape": list(values.shape), "datatype": "FP32", "data": values.ravel().tolist()}
        ],
        "outputs": [{"name": n} for n in STEP_OUTPUTS],
    }
    answer = httpx.post(f"{server.url}/v2/models/sensors-plain/versions/1/infer", json=request)
    assert answer.status_code == 200, answer.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.json()["outputs"]}


def _v2_grpc(server: LiveServer, values: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{server.host}:{server.grpc_port}")
    try:
        tensor = grpcclient.InferInput("x", list(values.shape), "FP32")
        tensor.set_data_from_numpy(values)
        wanted = [grpcclient.InferRequestedOutput(n) for n in STEP_OUTPUTS]
        result = client.infer("sensors-plain", [tensor], model_version="1", outputs=wanted)
        return {n: result.as_numpy(n) for n in STEP_OUTPUTS}
    finally:
        client.close()


def test_shipped_series_model_gives_the_same_numbers_over_rest_v2_http_and_grpc(server: LiveServer) -> None:
    meta = ModelMetadata.read(SERIES)
    assert meta.series is not None and meta.feature_names is not None
    header, values = _example()
    assert header == [meta.series.time_column, *meta.feature_names]
    rest = _rest(server)
    steps = len(values)
    assert len(rest["errors"]) == len(rest["anomalies"]) == steps
    assert len(rest["window_errors"]) == steps - meta.series.window + 1
    for answer in (_v2_http(server, values), _v2_grpc(server, values)):
        np.testing.assert_allclose(answer["step_error"].ravel(), rest["errors"], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(answer["step_anomaly"].ravel().astype(bool), rest["anomalies"])
        np.testing.assert_allclose(answer["error"].ravel(), rest["window_errors"], rtol=1e-5, atol=1e-7)
    # The faults written into the example are what the model is for: some steps are flagged, not all.
    assert 0 < sum(rest["anomalies"]) < steps
