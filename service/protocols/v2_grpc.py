"""The Open Inference Protocol (KServe v2) over gRPC: `inference.GRPCInferenceService` and `grpc.health.v1`.

Served by grpcio's asyncio server on the HTTP server's event loop, so that its requests share the executor
(and its micro-batches) with REST and v2 over HTTP. Same semantics (`service.protocols.v2`), same API keys
(`authorization: Bearer <key>` metadata), same admission gate and request deadline (the shorter of the
client's deadline and AE_REQUEST_TIMEOUT_S), same body limit (AE_MAX_BODY_BYTES per message). Inputs come as
`raw_input_contents` or typed `contents`; outputs go back as `raw_output_contents`. Errors carry the service's
message with a gRPC status: 400/422 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
404 NOT_FOUND, 408/504 DEADLINE_EXCEEDED, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE. With several server
workers each binds the port with SO_REUSEPORT and the kernel spreads connections among them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.core.runtime import OnnxModel
from service.errors import (
    BadRequestError,
    DeadlineExceededError,
    InvalidInputError,
    ServiceError,
    quote,
)
from service.ops.admission import AdmissionGate
from service.protocols import v2
from service.protocols.grpc import inference_pb2 as pb
from service.protocols.grpc import inference_pb2_grpc as pb_grpc
from service.state import AppState

__all__ = ["GRPC_CODES", "InferenceServicer", "grpc_code", "start_grpc"]

logger = logging.getLogger(__name__)

GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}
_PATH = "/v2/grpc"
"""The path API keys and metrics see for gRPC calls (a protected, non-admin path)."""
_RESOLVED: contextvars.ContextVar[list[str]] = contextvars.ContextVar("grpc_model")
"""The loaded model a call resolved to, for its metric label (empty when it named none that is loaded)."""

R = TypeVar("R")


def grpc_code(exc: ServiceError) -> grpc.StatusCode:
    return GRPC_CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _version(text: str) -> int | None:
    return v2.version_of(text or None)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC: check the key, take an admission slot (inference only), run under the deadline, translate."""

    def __init__(self, state: AppState, gate: AdmissionGate) -> None:
        self.state = state
        self.gate = gate

    async def _call(
        self, method: str, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[R]], admit: bool
    ) -> R:
        start = time.perf_counter()
        status = 200
        resolved = _RESOLVED.set([""])
        try:
            headers = [(k.encode(), str(v).encode()) for k, v in (context.invocation_metadata() or ())]
            refusal = self.state.keys.refusal(_PATH, headers)
            if refusal is not None:
                raise refusal
            if not admit:
                return await work()
            if not self.gate.try_acquire():
                await self.gate.acquire(client=context.peer())
            try:
                return await self._with_deadline(context, work)
            finally:
                self.gate.release()
        except ServiceError as exc:
            status = exc.status_code
            await context.abort(grpc_code(exc), exc.detail)
            raise AssertionError("unreachable") from None  # abort raises
        finally:
            model = _RESOLVED.get()[0]
            _RESOLVED.reset(resolved)
            self.state.metrics.observe_request(f"grpc/{method}", model, status, time.perf_counter() - start)

    async def _with_deadline(self, context: grpc.aio.ServicerContext, work: Callable[[], Awaitable[R]]) -> R:
        limit = self.state.settings.request_timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            limit = remaining if limit is None else min(limit, remaining)
        if limit is None:
            return await work()
        try:
            async with asyncio.timeout(limit):
                return await work()
        except TimeoutError:
            raise DeadlineExceededError(
                f"the request took longer than {limit:.3g} s and was cancelled"
            ) from None

    # --- health and metadata ---------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.state.registry.snapshot.problems())

    def _model(self, name: str, version: str) -> OnnxModel:
        model = self.state.registry.get(name, _version(version))
        # A loaded model's name, not the request's: the metric's label set stays bounded.
        _RESOLVED.get()[0] = model.metadata.name
        return model

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            try:
                model = self._model(request.name, request.version)
            except ServiceError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=model.warmed)

        return await self._call("ModelReady", context, work, admit=False)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**v2.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            model = self._model(request.name, request.version)
            snapshot = self.state.registry.snapshot
            versions = [model.metadata.version] if request.version else snapshot.versions(model.metadata.name)
            meta = v2.model_metadata(model, versions)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return await self._call("ModelMetadata", context, work, admit=False)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        async def work() -> pb.ModelConfigResponse:
            config = v2.model_config(
                self._model(request.name, request.version), self.state.settings.max_batch_rows
            )
            return pb.ModelConfigResponse(
                config=pb.ModelConfig(
                    name=config["name"],
                    platform=config["platform"],
                    backend=config["backend"],
                    version_policy=pb.ModelVersionPolicy(latest=pb.ModelVersionPolicy.Latest(num_versions=1)),
                    max_batch_size=config["max_batch_size"],
                    input=[
                        pb.ModelInput(name=t["name"], data_type=t["data_type"], dims=t["dims"])
                        for t in config["input"]
                    ],
                    output=[
                        pb.ModelOutput(name=t["name"], data_type=t["data_type"], dims=t["dims"])
                        for t in config["output"]
                    ],
                    dynamic_batching=pb.ModelDynamicBatching(),
                    parameters={
                        k: pb.ModelParameter(string_value=v["string_value"])
                        for k, v in config["parameters"].items()
                    },
                )
            )

        return await self._call("ModelConfig", context, work, admit=False)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        async def work() -> pb.ModelStatisticsResponse:
            snapshot = self.state.registry.snapshot
            if request.name:
                model = self._model(request.name, request.version)
                versions = [model.metadata.version] if request.version else snapshot.versions(request.name)
                keys = [(request.name, v) for v in versions]
            else:
                keys = [(m.metadata.name, m.metadata.version) for m in snapshot.all_models()]
            answers = []
            for name, version in keys:
                stats = v2.statistics(self.state.executor.stats.of(name, version))
                durations = {k: pb.StatisticDuration(**d) for k, d in stats["inference_stats"].items()}
                answers.append(
                    pb.ModelStatistics(
                        name=name,
                        version=stats["version"],
                        last_inference=stats["last_inference"],
                        inference_count=stats["inference_count"],
                        execution_count=stats["execution_count"],
                        inference_stats=pb.InferStatistics(**durations),
                    )
                )
            return pb.ModelStatisticsResponse(model_stats=answers)

        return await self._call("ModelStatistics", context, work, admit=False)

    # --- inference -------------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        async def work() -> pb.ModelInferResponse:
            model = self._model(request.model_name, request.model_version)
            inputs = _inputs(request, model, self.state.settings.max_batch_rows)
            parameters = {k: _parameter(p) for k, p in request.parameters.items()}
            outputs = [o.name for o in request.outputs] or None
            results = await v2.infer(self.state, model, inputs, outputs, parameters)
            answer = pb.ModelInferResponse(
                model_name=model.metadata.name, model_version=str(model.metadata.version), id=request.id
            )
            for out in results:
                arr = np.ascontiguousarray(out.array, dtype="<f4" if out.datatype == "FP32" else "?")
                answer.outputs.add(name=out.name, datatype=out.datatype, shape=arr.shape)
                answer.raw_output_contents.append(arr.tobytes())
            return answer

        return await self._call("ModelInfer", context, work, admit=True)


def _inputs(request: pb.ModelInferRequest, model: OnnxModel, max_rows: int) -> list[v2.V2Input]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; expected one for "
            "each input"
        )
    if not request.inputs:
        raise BadRequestError('`inputs` must be a list of exactly one tensor; expected an input named "x"')
    v2.check_inputs(model, [t.name for t in request.inputs])
    inputs = []
    for i, tensor in enumerate(request.inputs):
        name, shape = tensor.name, [int(d) for d in tensor.shape]
        if any(d < 0 or d >= 2**31 for d in shape) or len(shape) > 4:
            raise BadRequestError(
                f"input {name!r} has shape {shape}; expected at most 4 non-negative dimensions"
            )
        v2.check_shape(model, name, shape, max_rows)
        dtype = v2.input_dtype(name, tensor.datatype)
        count = int(np.prod(shape))
        if raw:
            if len(raw[i]) != count * dtype.itemsize:
                raise BadRequestError(
                    f"input {name!r} has {len(raw[i])} bytes of raw contents; shape {shape} of "
                    f"{tensor.datatype} needs {count * dtype.itemsize}"
                )
            arr = np.frombuffer(raw[i], dtype=dtype, count=count).reshape(shape)
        else:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                raise InvalidInputError(
                    f"input {name!r} datatype {quote(tensor.datatype)} needs raw_input_contents"
                )
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise InvalidInputError(
                    f"input {name!r} has {len(values)} values; shape {shape} needs {count}"
                )
            arr = np.asarray(values, dtype=dtype).reshape(shape)
        inputs.append(v2.V2Input(name, arr))  # checked (finite, float32) by the core
    return inputs


class _Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """`grpc.health.v1.Health/Check`: SERVING when every model is loaded and warmed."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in ("", "inference.GRPCInferenceService"):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        ready = not self.state.registry.snapshot.problems()
        status = (
            health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return health_pb2.HealthCheckResponse(status=status)


async def start_grpc(state: AppState, gate: AdmissionGate, host: str, port: int) -> grpc.aio.Server:
    """Start the gRPC server on `host:port` (on the running event loop); the caller stops it."""
    settings = state.settings
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", 256),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 2),
        ],
        maximum_concurrent_rpcs=settings.max_concurrency + settings.max_queue,
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state, gate), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(_Health(state), server)
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind the gRPC port {address}")
    await server.start()
    logger.info("gRPC (inference.GRPCInferenceService, grpc.health.v1) listening on %s", address)
    return server
