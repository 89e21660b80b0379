"""The Open Inference Protocol (KServe v2) over REST, so existing v2 clients and tooling work unchanged.

Each model version takes one input tensor ``x`` (FP32, shape ``[-1, input_dim]``) and offers the fused graph's
outputs by name: ``latent``, ``reconstruction``, ``feature_errors``, ``error`` (and ``log_var``, ``neg_elbo``
for the VAE). A request picks outputs with ``outputs``; without it every output is answered.

Bodies are JSON, or the binary tensor data extension: the header ``Inference-Header-Content-Length: N`` says
the first N bytes are the JSON inference header and the rest are the inputs' raw little-endian bytes, in
input order, each input naming its size in ``parameters.binary_data_size``. Outputs come back binary when
asked (``binary_data`` on an output, or ``binary_data_output`` on the request), in the same layout. A missing
Content-Type is fine (``tritonclient`` sends none). Errors answer ``{"error": "..."}`` with a 4xx status, or
503 for a model that exists but failed to load.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

import service
from service.core.runtime import Float32Array, OnnxModel
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError, ServiceError
from service.ops.metrics import MODEL_SCOPE_KEY
from service.protocols.rest import AppState
from service.protocols.rest_codec import check_rows, checked_float32, parse_json_object, read_body

__all__ = [
    "HEADER_LENGTH",
    "V2Context",
    "V2InferenceRequest",
    "V2InferenceResponse",
    "V2ModelMetadataResponse",
    "V2ServerMetadataResponse",
    "make_router",
    "router",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
SERVER_NAME = "autoencoder-serving"

# numpy dtype of each v2 datatype that can carry real numbers; BOOL, BYTES and BF16 are refused.
_DATATYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}


# --- documented shapes (the handlers answer with orjson; these models document the schema) -----------------


class V2ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong and what was expected.")


class V2ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2LiveResponse(BaseModel):
    live: bool


class V2ReadyResponse(BaseModel):
    ready: bool


class V2ModelReadyResponse(BaseModel):
    name: str
    version: str
    ready: bool


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class V2ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["x"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[1, 64]])
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size`: bytes of this tensor in the binary part of the body."
    )
    data: list[Any] | None = Field(
        default=None,
        description="The tensor's values, flat in row-major order or nested; absent when binary.",
    )


class V2RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["latent"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data`: answer this output in the binary part of the body."
    )


class V2InferenceRequest(BaseModel):
    """A v2 inference request: one input `x`, optionally the outputs wanted."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data_output`: answer every output in binary unless it says otherwise.",
    )
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, to stand alone inside an OpenAPI operation."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "JSON, or the binary tensor data extension (see the `Inference-Header-Content-Length` "
        "header).",
        "content": {
            JSON_TYPE: {
                "schema": _inline_schema(V2InferenceRequest),
                # A digits image (8 x 8 = 64 features), asking for two of the outputs.
                "example": {
                    "inputs": [
                        {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 32 + [8.0] * 32}
                    ],
                    "outputs": [{"name": "latent"}, {"name": "error"}],
                },
            }
        },
    }
}


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type=JSON_TYPE)


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON_TYPE
    )


def _protocol_status(exc: ServiceError) -> int:
    # The protocol answers request errors with 400; the rest keep the service's status (404, 413, 503).
    return 400 if isinstance(exc, InvalidInputError) else exc.status_code


# --- model description ------------------------------------------------------------------------------------


def _output_shapes(model: OnnxModel) -> dict[str, list[int]]:
    """Every output of the fused graph and its shape, -1 for the batch."""
    per_name = {
        "latent": [-1, model.latent_dim],
        "log_var": [-1, model.latent_dim],
        "reconstruction": [-1, model.input_dim],
        "feature_errors": [-1, model.input_dim],
        "error": [-1],
        "neg_elbo": [-1],
    }
    return {name: per_name.get(name, [-1, -1]) for name in model.metadata.graphs["model"].outputs}


def _input_name(model: OnnxModel) -> str:
    return model.metadata.graphs["model"].inputs[0]


def _model_metadata(name: str, versions: list[int], model: OnnxModel) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": _input_name(model), "datatype": "FP32", "shape": [-1, model.input_dim]}],
        "outputs": [{"name": n, "datatype": "FP32", "shape": s} for n, s in _output_shapes(model).items()],
    }


# --- request parsing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedRequest:
    id: str | None
    x: Float32Array
    """(batch, input_dim)"""
    outputs: list[tuple[str, bool]]
    """(output name, answer it binary), in the order asked."""


def _decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    if not encoding or encoding.strip().lower() == "identity":
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.strip().lower())
    if wbits is None:
        raise BadRequestError(f"unsupported Content-Encoding {encoding!r}; expected gzip, deflate or none")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadRequestError(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"the decompressed body is over the limit of {max_bytes} bytes (AE_MAX_BODY_BYTES)"
        )
    return data


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """(JSON inference header, binary part) of a request body."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequestError(f"{HEADER_LENGTH} {header_length!r} is not a number of bytes") from None
        if not 0 <= n <= len(body):
            raise BadRequestError(f"{HEADER_LENGTH} is {n} but the body has only {len(body)} bytes")
        json_part, binary = body[:n], body[n:]
    return parse_json_object(json_part, "inference request", "an object with `inputs`"), binary


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _only_numbers(data: list[Any]) -> bool:
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif not _is_number(item):
            return False
    return True


def _tensor(
    spec: dict[str, Any], binary: bytes, offset: int, width: int, max_rows: int
) -> tuple[Float32Array, int]:
    """One input tensor -> (batch, width) float32, and the binary offset after it."""
    name = spec.get("name")
    shape = spec.get("shape")
    datatype = spec.get("datatype")
    if not isinstance(shape, list) or not all(_is_number(d) and int(d) == d and d >= 0 for d in shape):
        raise BadRequestError(f"input {name!r} has shape {shape!r}; expected a list of non-negative integers")
    shape = [int(d) for d in shape]
    if len(shape) != 2 or shape[1] != width:
        raise InvalidInputError(f"input {name!r} has shape {shape}; expected [batch, {width}]")
    check_rows(shape[0], f"input {name!r}", max_rows)
    dtype = _DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r} has datatype {datatype!r}; expected FP32 (or another numeric type: "
            + ", ".join(_DATATYPES)
            + ")"
        )
    count = shape[0] * shape[1]
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequestError(f"input {name!r} parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not _is_number(size) or int(size) != size or size < 0:
            raise BadRequestError(f"input {name!r} binary_data_size {size!r} is not a number of bytes")
        expected = count * dtype.itemsize
        if size != expected:
            raise InvalidInputError(
                f"input {name!r} binary_data_size is {size} bytes; "
                f"shape {shape} of {datatype} needs {expected}"
            )
        if offset + expected > len(binary):
            raise BadRequestError(
                f"input {name!r} needs {expected} bytes of binary data but only {len(binary) - offset} remain"
            )
        arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
        offset += expected
    else:
        data = spec.get("data")
        if not isinstance(data, list):
            raise InvalidInputError(
                f"input {name!r} has no `data` list and no binary_data_size; expected one"
            )
        try:
            values = np.asarray(data)
        except (ValueError, TypeError, OverflowError):
            values = None
        if values is None or values.dtype.kind not in "fiu" or not _only_numbers(data):
            raise InvalidInputError(
                f"input {name!r} data must be numbers (nested or flat, row-major); booleans, strings and "
                "nulls are not numbers, and nested rows must be equal in length"
            )
        if values.size != count:
            raise InvalidInputError(f"input {name!r} has {values.size} values; shape {shape} needs {count}")
        arr = values.reshape(shape)
    return checked_float32(arr, f"input {name}", width), offset


def _wants_binary(parameters: object, default: bool, where: str) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise BadRequestError(f"{where} parameters must be an object")
    value = parameters.get("binary_data", default)
    if not isinstance(value, bool):
        raise BadRequestError(f"{where} binary_data must be true or false, got {value!r}")
    return value


def parse_request(header: dict[str, Any], binary: bytes, model: OnnxModel, max_rows: int) -> ParsedRequest:
    """Check an inference request against the model and read its input tensor."""
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"id must be a string, got {request_id!r}")
    parameters = header.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequestError(f"request parameters must be an object, got {parameters!r}")
    binary_default = (parameters or {}).get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequestError(f"binary_data_output must be true or false, got {binary_default!r}")
    inputs = header.get("inputs")
    expected_input = _input_name(model)
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequestError(
            f"`inputs` must be a list of exactly one tensor; expected "
            f'[{{"name": "{expected_input}", "datatype": "FP32", "shape": [batch, {model.input_dim}], '
            '"data": [...]}]'
        )
    if inputs[0].get("name") != expected_input:
        raise BadRequestError(
            f"unknown input {inputs[0].get('name')!r} for model {model.metadata.name}; "
            f"expected {expected_input!r}"
        )
    x, used = _tensor(inputs[0], binary, 0, model.input_dim, max_rows)
    if used != len(binary):
        raise BadRequestError(f"the body has {len(binary) - used} bytes of binary data that no input claims")
    available = _output_shapes(model)
    requested = header.get("outputs")
    if requested is None:
        outputs = [(name, binary_default) for name in available]
    else:
        if not isinstance(requested, list) or not requested:
            raise BadRequestError('`outputs` must be a non-empty list of {"name": ...} objects when given')
        outputs = []
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if name is not None and not isinstance(name, str):
                raise BadRequestError(
                    f"output name {name!r} is a {type(name).__name__}; expected a string, one of "
                    f"{list(available)}"
                )
            if name not in available:
                raise BadRequestError(
                    f"unknown output {name!r} for model {model.metadata.name}; "
                    f"expected one of {list(available)}"
                )
            outputs.append((name, _wants_binary(item.get("parameters"), binary_default, f"output {name!r}")))
    return ParsedRequest(request_id, x, outputs)


def build_response(
    model: OnnxModel, parsed: ParsedRequest, results: dict[str, Float32Array]
) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, media type) of an inference answer, binary outputs after the JSON header."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary in parsed.outputs:
        arr = np.ascontiguousarray(results[name], dtype="<f4")
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary:
            raw = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = arr.ravel()
        entries.append(entry)
    payload: dict[str, Any] = {
        "model_name": model.metadata.name,
        "model_version": str(model.metadata.version),
        "outputs": entries,
    }
    if parsed.id is not None:
        payload["id"] = parsed.id
    header = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {}, JSON_TYPE
    return b"".join([header, *chunks]), {HEADER_LENGTH: str(len(header))}, BINARY_TYPE


# --- the router -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V2Context:
    """What the v2 routes need from the app, looked up per request."""

    get_model: Callable[[Request, str, int | None], OnnxModel]
    """(request, name, version or None for the latest) -> the loaded model; raises ServiceError."""
    versions: Callable[[Request, str], list[int]]
    """(request, name) -> loaded versions, ascending."""
    problems: Callable[[Request], list[str]]
    """Why the service is not ready; empty when it is."""
    max_body_bytes: Callable[[Request], int]
    max_batch_rows: Callable[[Request], int]
    inline_max_rows: Callable[[Request], int]
    """Batches up to this many rows run on the event loop; bigger ones on a worker thread."""
    observe: Callable[[Request, OnnxModel, int, float], None]
    """(request, model, rows, seconds): record one model run in the service's metrics."""


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": V2ErrorResponse, "description": "Malformed request or tensors that do not fit the model."},
    404: {"model": V2ErrorResponse, "description": "Unknown model or version."},
    503: {"model": V2ErrorResponse, "description": "The model exists but failed to load."},
}
_INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {
        "model": V2ErrorResponse,
        "description": "Body over AE_MAX_BODY_BYTES or batch over AE_MAX_BATCH_ROWS.",
    },
}

NamePath = Annotated[
    str, Path(description="Model name, as listed by GET /models.", examples=["digits-plain"])
]
VersionPath = Annotated[str, Path(description="Model version (a positive integer).", examples=["1"])]


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadRequestError(f"model version {value!r} is not a positive integer")
    return int(value)


def make_router(context: V2Context) -> APIRouter:
    """The v2 REST routes, reading models and limits through `context`."""
    router = APIRouter(prefix="/v2", tags=["v2"])

    def lookup(request: Request, name: str, version: str | None) -> OnnxModel:
        return context.get_model(request, name, _version(version))

    @router.get("", operation_id="v2_server_metadata", response_model=V2ServerMetadataResponse)
    async def server_metadata() -> Response:
        """The server's name, version and protocol extensions."""
        return _json(
            {"name": SERVER_NAME, "version": service.__version__, "extensions": ["binary_tensor_data"]}
        )

    @router.get("/health/live", operation_id="v2_server_live", response_model=V2LiveResponse)
    async def server_live() -> Response:
        """200 while the process is up."""
        return _json({"live": True})

    @router.get(
        "/health/ready",
        operation_id="v2_server_ready",
        response_model=V2ReadyResponse,
        responses={503: {"model": V2ErrorResponse, "description": "Not ready; the error says why."}},
    )
    async def server_ready(request: Request) -> Response:
        """200 when every model is loaded and warmed up, else 503 saying why."""
        problems = context.problems(request)
        if problems:
            return _error(503, "not ready: " + "; ".join(problems))
        return _json({"ready": True})

    async def metadata(request: Request, name: str, version: str | None) -> Response:
        try:
            model = lookup(request, name, version)
            versions = context.versions(request, name) if version is None else [model.metadata.version]
        except ServiceError as exc:
            return _error(_protocol_status(exc), exc.detail)
        return _json(_model_metadata(name, versions, model))

    async def ready(request: Request, name: str, version: str | None) -> Response:
        try:
            model = lookup(request, name, version)
        except ServiceError as exc:
            return _error(_protocol_status(exc), exc.detail)
        payload = {"name": name, "version": str(model.metadata.version), "ready": model.warmed}
        return _json(payload, 200 if model.warmed else 503)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        try:
            model = lookup(request, name, version)
            limit = context.max_body_bytes(request)
            body = _decompress(
                await read_body(request, limit), request.headers.get("content-encoding"), limit
            )
            header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
            parsed = parse_request(header, binary, model, context.max_batch_rows(request))
            request.scope[MODEL_SCOPE_KEY] = model.metadata.name
            start = time.perf_counter()
            if parsed.x.shape[0] <= context.inline_max_rows(request):
                results = model.run_model(parsed.x)
            else:
                results = await run_in_threadpool(model.run_model, parsed.x)
            context.observe(request, model, int(parsed.x.shape[0]), time.perf_counter() - start)
        except ServiceError as exc:
            return _error(_protocol_status(exc), exc.detail)
        content, headers, media_type = build_response(model, parsed, results)
        return Response(content, headers=headers, media_type=media_type)

    model_responses: dict[int | str, dict[str, Any]] = {**_ERRORS}
    infer_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "model": V2InferenceResponse,
            "description": "The outputs asked for; with binary outputs, the JSON header is followed by their "
            f"bytes and `{HEADER_LENGTH}` gives the header's length.",
            "content": {BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        **_INFER_ERRORS,
    }
    ready_responses: dict[int | str, dict[str, Any]] = {
        **_ERRORS,
        503: {"model": V2ErrorResponse, "description": "The model exists but is not ready."},
    }

    def add(
        path: str,
        kind: Literal["metadata", "ready", "infer"],
        operation_id: str,
        summary: str,
        versioned: bool,
    ) -> None:
        if kind == "infer":
            handler = infer
        elif kind == "ready":
            handler = ready
        else:
            handler = metadata
        if versioned:

            async def endpoint_v(request: Request, name: NamePath, version: VersionPath) -> Response:
                return await handler(request, name, version)

            endpoint: Callable[..., Any] = endpoint_v
        else:

            async def endpoint_n(request: Request, name: NamePath) -> Response:
                return await handler(request, name, None)

            endpoint = endpoint_n
        endpoint.__doc__ = summary
        if kind == "infer":
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                operation_id=operation_id,
                responses=infer_responses,
                openapi_extra=_INFER_BODY,
            )
        elif kind == "ready":
            router.add_api_route(
                path,
                endpoint,
                methods=["GET"],
                operation_id=operation_id,
                response_model=V2ModelReadyResponse,
                responses=ready_responses,
            )
        else:
            router.add_api_route(
                path,
                endpoint,
                methods=["GET"],
                operation_id=operation_id,
                response_model=V2ModelMetadataResponse,
                responses=model_responses,
            )

    add("/models/{name}", "metadata", "v2_model_metadata", "A model's tensors and loaded versions.", False)
    add(
        "/models/{name}/versions/{version}",
        "metadata",
        "v2_model_version_metadata",
        "One model version's tensors.",
        True,
    )
    add(
        "/models/{name}/ready",
        "ready",
        "v2_model_ready",
        "200 when the model's latest version is ready.",
        False,
    )
    add(
        "/models/{name}/versions/{version}/ready",
        "ready",
        "v2_model_version_ready",
        "200 when this model version is ready.",
        True,
    )
    add(
        "/models/{name}/infer",
        "infer",
        "v2_infer",
        "Run the model's latest version on one input tensor.",
        False,
    )
    add(
        "/models/{name}/versions/{version}/infer",
        "infer",
        "v2_model_version_infer",
        "Run one model version on one input tensor.",
        True,
    )
    return router


def _state(request: Request) -> AppState:
    state: AppState = request.state.ae
    return state


def _observe(request: Request, model: OnnxModel, rows: int, seconds: float) -> None:
    metrics = _state(request).metrics
    metrics.inference.labels("v2_infer", model.metadata.name).observe(seconds)
    metrics.batch_rows.labels("v2_infer", model.metadata.name).observe(rows)


def app_context() -> V2Context:
    """Models, readiness and limits from the app's lifespan state (`request.state.ae`)."""
    return V2Context(
        get_model=lambda request, name, version: _state(request).registry.get(name, version),
        versions=lambda request, name: _state(request).registry.snapshot.versions(name),
        problems=lambda request: _state(request).registry.snapshot.problems(),
        max_body_bytes=lambda request: _state(request).settings.max_body_bytes,
        max_batch_rows=lambda request: _state(request).settings.max_batch_rows,
        inline_max_rows=lambda request: _state(request).settings.inline_max_rows,
        observe=_observe,
    )


router = make_router(app_context())
"""The v2 routes of the app: `app.include_router(v2.router)`."""
