"""A bare grpcio server answering every `ModelInfer` with prepared bytes: what grpcio itself costs a call.

    python -m bench.grpc_floor --port PORT [--kind aio|sync] [--latent 16]

`inference.GRPCInferenceService/ModelInfer` only: no model, no checks, no metrics. Each call reads the request
(protobuf, as the service's does), and answers `latent` of shape (rows, `--latent`) as raw contents, the
size of the service's answer to the same request, from bytes made once per batch size. `aio` is grpcio's
asyncio server (the one the service runs on its event loop); `sync` its thread-pool server (two threads, one
per core here). `bench.protocols` drives it with the same client as the service's gRPC cases, so the
server CPU per call it reports is the floor under the service's own.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures
from typing import Any

import grpc

from service.protocols.grpc import inference_pb2 as pb
from service.protocols.grpc import inference_pb2_grpc as pb_grpc

__all__ = ["main"]


class _Answers:
    """The answer to a request of `rows` rows, built once per row count."""

    def __init__(self, latent: int) -> None:
        self.latent = latent
        self.raw: dict[int, bytes] = {}

    def __call__(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        rows = int(request.inputs[0].shape[0]) if request.inputs and request.inputs[0].shape else 1
        raw = self.raw.get(rows)
        if raw is None:
            raw = self.raw[rows] = bytes(4 * rows * self.latent)
        answer = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        answer.outputs.add(name="latent", datatype="FP32", shape=[rows, self.latent])
        answer.raw_output_contents.append(raw)
        return answer


class _Async(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, answers: _Answers) -> None:
        self.answers = answers

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return self.answers(request)


class _Sync(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, answers: _Answers) -> None:
        self.answers = answers

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return self.answers(request)


async def _serve_async(address: str, answers: _Answers) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Async(answers), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=["aio", "sync"], default="aio")
    parser.add_argument("--latent", type=int, default=16, help="width of the answered `latent`")
    args = parser.parse_args(argv)
    address, answers = f"127.0.0.1:{args.port}", _Answers(args.latent)
    if args.kind == "aio":
        asyncio.run(_serve_async(address, answers))
        return 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Sync(answers), server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(address)
    server.start()
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
