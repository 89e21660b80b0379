"""The Open Inference Protocol (KServe v2) over HTTP: JSON and the binary tensor data extension.

Bodies are JSON, or binary: the header ``Inference-Header-Content-Length: N`` says the first N bytes are the
JSON inference header and the rest the inputs' raw little-endian bytes, in input order, each input naming its
size in ``parameters.binary_data_size``. Outputs come back binary when asked (``binary_data`` on an output,
or ``binary_data_output`` on the request), in the same layout. A missing Content-Type is fine (tritonclient
sends none); a compressed body says so with Content-Encoding (read by the front door). Errors answer
``{"error": "..."}``, request errors with 400. The semantics (inputs, outputs, metadata, config, statistics)
are `service.protocols.v2`'s, shared with gRPC; this module only reads and writes HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.requests import Request
from starlette.responses import Response

from service.core.inputs import check_rows, checked_float32
from service.core.runtime import OnnxModel
from service.errors import BadRequestError, InvalidInputError, ServiceError, quote, render_error
from service.ops.metrics import MODEL_SCOPE_KEY
from service.protocols import v2
from service.protocols.http_codec import _fast_rows, _find_problem, numbers_only, parse_json_object, read_body
from service.protocols.routing import DocumentedRoute, doc_stub
from service.state import STATE_KEY, AppState

__all__ = ["HEADER_LENGTH", "V2InferenceRequest", "V2InferenceResponse", "render", "router"]

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


# --- documented shapes ------------------------------------------------------------------------------------


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


class V2ModelConfigResponse(BaseModel):
    """Triton's model configuration extension (what perf_analyzer reads), dims without the batch."""

    model_config = ConfigDict(extra="allow")

    name: str
    platform: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


class V2ModelStatistics(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    inference_count: int
    execution_count: int
    inference_stats: dict[str, dict[str, int]]


class V2StatisticsResponse(BaseModel):
    model_stats: list[V2ModelStatistics]


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


_EXAMPLE_DATA: list[JsonValue] = [*([0.0] * 32), *([8.0] * 32)]  # a digits image of 8 x 8 pixels


class V2InferenceRequest(BaseModel):
    """A v2 inference request: the input `x` (or one input per column), optionally the outputs wanted."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": _EXAMPLE_DATA}],
                    "outputs": [{"name": "latent"}, {"name": "error"}],
                }
            ]
        },
    )

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data_output`: answer every output in binary unless it says otherwise; "
        "`threshold` / `false_alarm_rate` / `score` for a series model's step outputs.",
    )
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]


# --- reading a request ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    id: str | None
    inputs: list[v2.V2Input]
    outputs: list[tuple[str, bool]] | None
    """(output name, answer it binary), in the order asked; None for all."""
    binary_default: bool
    parameters: dict[str, Any]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _split_body(body: bytes, header_length: str | None, max_values: int) -> tuple[dict[str, Any], bytes]:
    """(JSON inference header, binary part) of a request body."""
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not header_length.isdigit() or len(header_length) > 18:
            raise BadRequestError(f"{HEADER_LENGTH} {quote(header_length)} is not a number of bytes")
        n = int(header_length)
        if n > len(body):
            raise BadRequestError(f"{HEADER_LENGTH} is {n} but the body has only {len(body)} bytes")
        json_part, binary = body[:n], body[n:]
    header = parse_json_object(json_part, max_values, "inference request", "an object with `inputs`")
    return header, binary


def _data_array(name: str, data: list[Any], fast: bool) -> np.ndarray[Any, Any]:
    arr = _fast_rows(data) if fast else None
    if arr is not None:
        return arr
    problem = _find_problem(data, f"input {name!r} data") if data else ""
    if problem:
        raise InvalidInputError(
            f"input {name!r} data must be numbers (nested or flat, row-major; booleans, strings and nulls "
            f"are not numbers, and nested rows must be equal in length): {problem}"
        )
    return np.array(data, dtype=np.float64) if data else np.zeros(0, np.float32)


def _tensor(
    spec: dict[str, Any], binary: bytes, offset: int, model: OnnxModel, max_rows: int, fast: bool
) -> tuple[v2.V2Input, int]:
    """One input tensor -> its array in its declared shape, and the binary offset after it."""
    name = spec.get("name")
    if not isinstance(name, str):
        raise BadRequestError(f"an input's name must be a string, got {quote(name)}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        _is_number(d) and int(d) == d and 0 <= d < 2**31 for d in shape
    ):
        raise BadRequestError(
            f"input {name!r} has shape {quote(shape)}; expected a list of non-negative integers"
        )
    shape = [int(d) for d in shape]
    if len(shape) > 4:
        raise BadRequestError(f"input {name!r} has {len(shape)} dimensions; expected at most 4")
    v2.check_shape(model, name, shape, max_rows)
    check_rows(shape[0] if shape else 0, f"input {name!r}", max_rows + _series_extra(model))
    dtype = v2.input_dtype(name, spec.get("datatype"))
    count = int(np.prod(shape))
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequestError(f"input {name!r} parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not _is_number(size) or int(size) != size or size < 0:
            raise BadRequestError(f"input {name!r} binary_data_size {quote(size)} is not a number of bytes")
        expected = count * dtype.itemsize
        if size != expected:
            raise InvalidInputError(
                f"input {name!r} binary_data_size is {size} bytes; shape {shape} of {spec.get('datatype')} "
                f"needs {expected}"
            )
        if offset + expected > len(binary):
            raise BadRequestError(
                f"input {name!r} needs {expected} bytes of binary data but only {len(binary) - offset} remain"
            )
        arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
        return v2.V2Input(name, checked_float32(arr, f"input {name}")), offset + expected
    data = spec.get("data")
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r} has no `data` list and no binary_data_size; expected one")
    values = _data_array(name, data, fast)
    if values.size != count:
        raise InvalidInputError(f"input {name!r} has {values.size} values; shape {shape} needs {count}")
    return v2.V2Input(name, checked_float32(values.reshape(shape), f"input {name}")), offset


def _series_extra(model: OnnxModel) -> int:
    """A whole series may have window - 1 more steps than the batch limit (it gives that many windows)."""
    return model.metadata.series.window - 1 if model.metadata.series else 0


def _wants_binary(parameters: object, default: bool, where: str) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise BadRequestError(f"{where} parameters must be an object")
    value = parameters.get("binary_data", default)
    if not isinstance(value, bool):
        raise BadRequestError(f"{where} binary_data must be true or false, got {quote(value)}")
    return value


def _outputs(requested: object, default: bool, model: OnnxModel) -> list[tuple[str, bool]] | None:
    if requested is None:
        return None
    available = list(v2.output_shapes(model))
    if not isinstance(requested, list) or not requested:
        raise BadRequestError('`outputs` must be a non-empty list of {"name": ...} objects when given')
    outputs = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise BadRequestError(
                f"output name {quote(name)} is a {type(name).__name__}; expected a string, one of {available}"
            )
        outputs.append((name, _wants_binary(item.get("parameters"), default, f"output {name!r}")))
    return outputs


def _parse(header: dict[str, Any], binary: bytes, body: bytes, model: OnnxModel, max_rows: int) -> _Request:
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"id must be a string, got {quote(request_id)}")
    parameters = header.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequestError(f"request parameters must be an object, got {quote(parameters)}")
    binary_default = (parameters or {}).get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequestError(f"binary_data_output must be true or false, got {quote(binary_default)}")
    specs = header.get("inputs")
    if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
        raise BadRequestError(
            '`inputs` must be a list of exactly one tensor; expected [{"name": "x", "datatype": "FP32", '
            f'"shape": {[-1, *model.sample_shape]}, "data": [...]}}]'
        )
    v2.check_inputs(model, [str(s.get("name")) for s in specs])
    rest = {**header, "inputs": [{**s, "data": 0} if "data" in s else s for s in specs]}
    fast = numbers_only(body[: len(body) - len(binary)], rest)
    inputs, used = [], 0
    for spec in specs:
        tensor, used = _tensor(spec, binary, used, model, max_rows, fast)
        inputs.append(tensor)
    if used != len(binary):
        raise BadRequestError(f"the body has {len(binary) - used} bytes of binary data that no input claims")
    outputs = _outputs(header.get("outputs"), binary_default, model)
    return _Request(request_id, inputs, outputs, binary_default, parameters or {})


def _answer(model: OnnxModel, parsed: _Request, results: list[v2.V2Output]) -> Response:
    """The inference answer, binary outputs after the JSON header."""
    binary_of = dict(parsed.outputs) if parsed.outputs is not None else {}
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in results:
        arr = np.ascontiguousarray(out.array, dtype="<f4" if out.datatype == "FP32" else "?")
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(arr.shape)}
        if binary_of.get(out.name, parsed.binary_default):
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
    head = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return Response(head, media_type=JSON_TYPE)
    return Response(
        b"".join([head, *chunks]), headers={HEADER_LENGTH: str(len(head))}, media_type=BINARY_TYPE
    )


# --- handlers ---------------------------------------------------------------------------------------------


def render(exc: ServiceError) -> Response:
    """A service error in the protocol's shape: `{"error": ...}`, request errors as 400."""
    response = render_error(exc, "error")
    response.status_code = v2.protocol_status(exc)
    return response


def _state(request: Request) -> AppState:
    state: AppState = request.scope["state"][STATE_KEY]
    return state


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON_TYPE)


def _model(request: Request) -> OnnxModel:
    params = request.path_params
    return _state(request).registry.get(params["name"], v2.version_of(params.get("version")))


async def _server_metadata(request: Request) -> Response:
    return _json(v2.server_metadata())


async def _server_live(request: Request) -> Response:
    return _json({"live": True})


async def _server_ready(request: Request) -> Response:
    problems = _state(request).registry.snapshot.problems()
    if problems:
        return _json({"error": "not ready: " + "; ".join(problems)}, 503)
    return _json({"ready": True})


async def _metadata(request: Request) -> Response:
    model = _model(request)
    snapshot = _state(request).registry.snapshot
    versioned = "version" in request.path_params
    versions = [model.metadata.version] if versioned else snapshot.versions(model.metadata.name)
    return _json(v2.model_metadata(model, versions))


async def _ready(request: Request) -> Response:
    model = _model(request)
    payload = {"name": model.metadata.name, "version": str(model.metadata.version), "ready": model.warmed}
    return _json(payload, 200 if model.warmed else 503)


async def _config(request: Request) -> Response:
    return _json(v2.model_config(_model(request), _state(request).settings.max_batch_rows))


async def _stats(request: Request) -> Response:
    state = _state(request)
    name = request.path_params.get("name")
    version = v2.version_of(request.path_params.get("version"))
    if name is not None:
        model = state.registry.get(name, version)
        keys = (
            {(name, model.metadata.version)}
            if version is not None
            else {(name, v) for v in state.registry.snapshot.versions(name)}
        )
    else:
        keys = {(m.metadata.name, m.metadata.version) for m in state.registry.snapshot.all_models()}
    stats = [v2.statistics(state.executor.stats.of(n, v)) for n, v in sorted(keys)]
    return _json({"model_stats": stats})


async def _infer(request: Request) -> Response:
    state = _state(request)
    model = _model(request)
    request.scope[MODEL_SCOPE_KEY] = model.metadata.name
    settings = state.settings
    body = await read_body(request, settings.max_body_bytes)
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH), settings.max_json_values)
    parsed = _parse(header, binary, body, model, settings.max_batch_rows)
    names = [n for n, _ in parsed.outputs] if parsed.outputs is not None else None
    results = await v2.infer(state, model, parsed.inputs, names, parsed.parameters)
    return _answer(model, parsed, results)


# --- routes -----------------------------------------------------------------------------------------------

NamePath = Annotated[
    str, Path(description="Model name, as listed by GET /models.", examples=["digits-plain"])
]
VersionPath = Annotated[str, Path(description="Model version (a positive integer).", examples=["1"])]

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
    200: {
        "description": "The outputs asked for; with binary outputs, the JSON header is followed by their "
        f"bytes and `{HEADER_LENGTH}` gives the header's length.",
        "content": {BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
}

router = APIRouter()


def _add(
    path: str,
    operation: str,
    doc: str,
    handler: Callable[[Request], Coroutine[Any, Any, Response]],
    answer: Any,
    method: str = "GET",
    responses: dict[int | str, dict[str, Any]] | None = None,
    **params: Any,
) -> None:
    router.routes.append(
        DocumentedRoute(
            "/v2" + path,
            doc_stub(operation, doc, answer, **params),
            handler=handler,
            methods=[method],
            tags=["v2"],
            response_model=answer,
            responses=responses or {},
            generate_unique_id_function=lambda route: route.name,
        )
    )


_add(
    "",
    "v2_server_metadata",
    "The server's name, version and protocol extensions.",
    _server_metadata,
    V2ServerMetadataResponse,
)
_add("/health/live", "v2_server_live", "200 while the process is up.", _server_live, V2LiveResponse)
_add(
    "/health/ready",
    "v2_server_ready",
    "200 when every model is loaded and warmed up, else 503 naming the models that are not.",
    _server_ready,
    V2ReadyResponse,
    responses={503: {"model": V2ErrorResponse, "description": "Not ready; says which models."}},
)
_add("/models/stats", "v2_statistics", "Every loaded version's statistics.", _stats, V2StatisticsResponse)
for _prefix, _suffix, _versioned in [
    ("/models/{name}", "", False),
    ("/models/{name}/versions/{version}", "_version", True),
]:
    _params: dict[str, Any] = {"name": NamePath} | ({"version": VersionPath} if _versioned else {})
    _which = "This model version's" if _versioned else "The model's (latest version's)"
    _add(
        _prefix,
        f"v2_model{_suffix}_metadata",
        f"{_which} tensors and versions.",
        _metadata,
        V2ModelMetadataResponse,
        responses=_ERRORS,
        **_params,
    )
    _add(
        _prefix + "/ready",
        f"v2_model{_suffix}_ready",
        f"200 when {_which.lower()} sessions are loaded and warmed.",
        _ready,
        V2ModelReadyResponse,
        responses={
            **_ERRORS,
            503: {"model": V2ErrorResponse, "description": "The model exists but is not ready."},
        },
        **_params,
    )
    _add(
        _prefix + "/config",
        f"v2_model{_suffix}_config",
        f"{_which} configuration (Triton's extension).",
        _config,
        V2ModelConfigResponse,
        responses=_ERRORS,
        **_params,
    )
    _add(
        _prefix + "/stats",
        f"v2_model{_suffix}_stats",
        f"{_which} statistics.",
        _stats,
        V2StatisticsResponse,
        responses=_ERRORS,
        **_params,
    )
    _add(
        _prefix + "/infer",
        "v2_infer" if not _versioned else "v2_model_version_infer",
        f"Run {_which.lower().replace(chr(39) + 's', '')} on its input tensor(s).",
        _infer,
        V2InferenceResponse,
        method="POST",
        responses=_INFER_ERRORS,
        body=V2InferenceRequest,
        **_params,
    )
