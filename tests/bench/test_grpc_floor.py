"""bench.grpc_floor answers a ModelInfer call as the service does, in size and shape, so that the floor it
measures is that of the same call."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

# tritonclient's modules of the same protocol, as a client uses them: the service's own `inference_pb2` must
# not be imported in this process beside them (both register `inference.*` in protobuf's default pool).
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from bench.protocols import _Floor, _latent
from tests.fixtures.make_models import FIXTURE_MODELS
from tests.live import LiveServer

MODEL = "tiny"


def _call(host: str, port: int, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        answer: pb.ModelInferResponse = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=30
        )
        return answer


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["aio", "sync"])
def test_the_floor_answers_the_services_shape_and_size(kind: str) -> None:
    rows = 64
    x = np.random.default_rng(0).normal(5.0, 2.0, (rows, 4)).astype(np.float32)
    request = pb.ModelInferRequest(model_name=MODEL, id="r1")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    request.outputs.add(name="latent")
    request.raw_input_contents.append(x.tobytes())
    with LiveServer(FIXTURE_MODELS, grpc=True, env={"AE_API_KEYS": None, "AE_API_KEYS_FILE": None}) as live:
        service = _call(live.host, live.grpc_port, request)
    with _Floor(kind, _latent(FIXTURE_MODELS, MODEL)) as floor:
        bare = _call(floor.host, floor.grpc_port, request)
    assert [(o.name, o.datatype, list(o.shape)) for o in bare.outputs] == [
        (o.name, o.datatype, list(o.shape)) for o in service.outputs
    ]
    assert [len(b) for b in bare.raw_output_contents] == [len(b) for b in service.raw_output_contents]
    assert (bare.model_name, bare.id) == (service.model_name, service.id)
