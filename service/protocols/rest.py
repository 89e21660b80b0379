"""The HTTP routes. Thin: parse (service.protocols.rest_codec), look up (registry), call the runtime, answer.

Tensor endpoints read the raw body themselves (no pydantic body parameter: that path is several times slower)
and answer with orjson or binary bytes; their OpenAPI entries still document the typed request and answers.
Models run directly on the event loop (they take microseconds; the threadpool costs more than it saves),
except batches over AE_INLINE_MAX_ROWS rows, which go to a worker thread. With AE_BATCHING, concurrent
requests to one model and operation coalesce into one run (service.core.batching). Routes that take only the
request and answer a Response skip FastAPI's dependency solving (`TensorRoute`): per-request cost matters
at batch 1, and they parse their own bodies anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

import numpy as np
import onnxruntime as ort
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from service import __version__
from service.contract import ScoreName
from service.core.batching import BatcherPool, BatchLimits, Rows
from service.core.calibration import choose_threshold
from service.core.registry import LoadFailure, ModelRegistry, RegistrySnapshot
from service.core.runtime import Float32Array, OnnxModel
from service.errors import (
    InvalidInputError,
    ModelNotFoundError,
    NotAcceptableError,
    NotReadyError,
    UnsupportedMediaTypeError,
)
from service.ops.metrics import CONTENT_TYPE_LATEST, MODEL_SCOPE_KEY, ServiceMetrics
from service.ops.threads import ThreadPlan
from service.protocols.rest_codec import (
    JSON,
    NPY,
    RAW,
    SHAPE_HEADER,
    TensorFormat,
    check_rows,
    decode_tensor,
    dump_json,
    encode_tensor,
    parse_json_object,
    query_fields,
    read_body,
    request_format,
    response_format,
    rows_to_array,
)
from service.protocols.schemas import (
    DecodeParams,
    DecodeRequest,
    DecodeResponse,
    DenoiseParams,
    DenoiseRequest,
    DenoiseResponse,
    EncodeParams,
    EncodeRequest,
    EncodeResponse,
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    ModelInfo,
    ModelListResponse,
    ModelVersionsResponse,
    ReadinessResponse,
    ReconstructionErrorParams,
    ReconstructionErrorRequest,
    ReconstructionErrorResponse,
    SampleParams,
    SampleRequest,
    SampleResponse,
)
from service.settings import Settings

__all__ = ["REQUEST_MODELS", "AppState", "TensorRoute", "router"]

P = TypeVar("P", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class AppState:
    """What the lifespan hands to every request (as `request.state.ae`)."""

    settings: Settings
    registry: ModelRegistry
    metrics: ServiceMetrics
    thread_plan: ThreadPlan
    batchers: BatcherPool | None = field(init=False)
    """Micro-batchers per model and operation when AE_BATCHING is on, else None."""

    def __post_init__(self) -> None:
        s = self.settings
        pool = None
        if s.batching:
            limits = BatchLimits(
                max_rows=s.batch_max_rows,
                max_wait_s=s.batch_max_wait_ms / 1000,
                queue_rows=s.batch_queue_rows,
                timeout_s=s.batch_timeout_s,
                inline_max_rows=s.inline_max_rows,
                retry_after_s=s.retry_after_s,
            )
            pool = BatcherPool(limits)
        object.__setattr__(self, "batchers", pool)


def _operation_id(route: APIRoute) -> str:
    return route.name


class TensorRoute(APIRoute):
    """An APIRoute that calls an `endpoint(request) -> Response` directly, without dependency solving or
    response validation (nothing to solve or validate there); other endpoints are handled as usual."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        d = self.dependant
        plain = (
            d.request_param_name is not None
            and not (d.path_params or d.query_params or d.header_params or d.cookie_params)
            and not (d.body_params or d.dependencies)
        )
        returns = get_type_hints(self.endpoint).get("return")
        if not (plain and isinstance(returns, type) and issubclass(returns, Response)):
            return handler
        endpoint: Callable[[Request], Any] = self.endpoint
        return endpoint


router = APIRouter(generate_unique_id_function=_operation_id, route_class=TensorRoute)

# Request models the OpenAPI schema shows without any route taking them as a pydantic body.
REQUEST_MODELS: list[type[BaseModel]] = [
    EncodeRequest,
    DecodeRequest,
    DenoiseRequest,
    ReconstructionErrorRequest,
    SampleRequest,
]

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Malformed JSON, or a binary tensor that cannot be read.",
        404: "Unknown model or version; the message names the available ones.",
        406: "Accept names no answer type the service can give.",
        413: "Body over AE_MAX_BODY_BYTES, or more rows than AE_MAX_BATCH_ROWS.",
        415: "Content-Type is not application/json, application/x-npy or application/octet-stream.",
        422: "Invalid input: wrong row length, ragged rows, empty batch, NaN or infinity, non-numbers, "
        "or a bad field.",
        503: "The model exists but failed to load.",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


def _tensor_doc(request_model: type[BaseModel], params: type[BaseModel], field: str | None) -> dict[str, Any]:
    """openapi_extra: the typed JSON body, the binary alternatives, and the query parameters binary uses."""
    content: dict[str, Any] = {JSON: {"schema": {"$ref": f"#/components/schemas/{request_model.__name__}"}}}
    parameters: list[dict[str, Any]] = []

    def need(required: bool) -> str:
        return "required" if required else "optional"

    if field is not None:
        content[NPY] = _BINARY
        content[RAW] = _BINARY
        properties = params.model_json_schema()["properties"]
        for name, info in params.model_fields.items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "schema": {
                        k: v for k, v in properties[name].items() if k not in {"description", "examples"}
                    },
                    "description": f"Binary bodies only ({need(info.is_required())}): {info.description}",
                }
            )
        parameters.append(
            {
                "name": SHAPE_HEADER,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": r"^\d+(,\d+)*$"},
                "description": f"Shape of a {RAW} body, e.g. `4,64`: little-endian float32, row-major.",
            }
        )
    description = (
        f"JSON ({request_model.__name__}), or for `{field}` a binary tensor ({NPY}, or raw little-endian "
        f"float32 as {RAW} with {SHAPE_HEADER}) with the other fields in the query string. "
        "A missing Content-Type is read as JSON."
        if field
        else f"JSON ({request_model.__name__}); a missing Content-Type is read as JSON."
    )
    extra: dict[str, Any] = {
        "requestBody": {"required": True, "description": description, "content": content}
    }
    if parameters:
        extra["parameters"] = parameters
    return extra


def _binary_answer(what: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": f"JSON, or with Accept {NPY} / {RAW} the `{what}` tensor alone as binary "
            f"({RAW} carries its shape in {SHAPE_HEADER}).",
            "content": {NPY: _BINARY, RAW: _BINARY},
        }
    }


def _state(request: Request) -> AppState:
    state: AppState = request.scope["state"]["ae"]
    return state


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {loc!r}")
        elif err["type"] == "missing":
            parts.append(f"missing field {loc!r}")
        elif not loc:
            parts.append(str(err["msg"]).removeprefix("Value error, "))
        else:
            parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def _validate(params: type[P], data: dict[str, Any], strict: bool) -> P:
    try:
        return params.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InvalidInputError(_validation_message(exc)) from None


@dataclass(frozen=True)
class _Call:
    """A parsed tensor request: its state, fields, model, batch and answer format."""

    state: AppState
    params: Any
    model: OnnxModel
    x: Float32Array
    answer: TensorFormat


async def _parse(
    request: Request, params_cls: type[BaseModel], field: str, width: Callable[[OnnxModel], int]
) -> _Call:
    state = _state(request)
    fmt = request_format(request.headers.get("content-type"))
    answer = response_format(request.headers.get("accept"))
    body = await read_body(request, state.settings.max_body_bytes)
    max_rows = state.settings.max_batch_rows
    if fmt == "json":
        obj = parse_json_object(body)
        rows = obj.pop(field, None)
        params = _validate(params_cls, obj, strict=True)
    else:
        params = _validate(params_cls, query_fields(request.scope), strict=False)
    model = state.registry.get(params.model, params.version)  # type: ignore[attr-defined]
    request.scope[MODEL_SCOPE_KEY] = model.metadata.name
    if fmt == "json":
        x = rows_to_array(rows, field, width(model), max_rows, body, obj)
    else:
        x = decode_tensor(body, fmt, request.headers.get(SHAPE_HEADER), field, width(model), max_rows)
    return _Call(state, params, model, x, answer)


async def _run(
    state: AppState, model: OnnxModel, endpoint: str, rows: int, fn: Callable[..., T], *args: Any
) -> T:
    """Run a model call of `rows` rows inline, or on a worker thread for a big batch; record its time and
    rows."""
    start = time.perf_counter()
    if rows <= state.settings.inline_max_rows:
        result = fn(*args)
    else:
        result = await run_in_threadpool(fn, *args)
    state.metrics.observe_model_call(endpoint, model.metadata.name, rows, time.perf_counter() - start)
    return result


async def _run_rows(
    call: _Call, endpoint: str, operation: str, fn: Callable[[OnnxModel, Float32Array], Rows]
) -> Rows:
    """Run a row-wise model call: through the micro-batcher when batching is on, else as `_run` does.

    `operation` names what `fn` computes, so that only calls with the same meaning share a run."""
    pool = call.state.batchers
    if pool is None:
        return await _run(call.state, call.model, endpoint, int(call.x.shape[0]), fn, call.model, call.x)
    metrics, name = call.state.metrics, call.model.metadata.name

    def observe(rows: int, seconds: float) -> None:
        metrics.observe_model_call(endpoint, name, rows, seconds)

    return await pool.get(call.model, operation, fn, observe).submit(call.x)


def _encode_rows(model: OnnxModel, x: Float32Array) -> Rows:
    encoded = model.encode(x)
    return encoded.latent, encoded.log_var


def _decode_rows(model: OnnxModel, z: Float32Array) -> Rows:
    return (model.decode(z),)


def _denoise_rows(model: OnnxModel, x: Float32Array) -> Rows:
    return (model.denoise(x),)


def _score_rows(score: ScoreName, per_feature: bool) -> Callable[[OnnxModel, Float32Array], Rows]:
    def run(model: OnnxModel, x: Float32Array) -> Rows:
        scored = model.score(x, score, per_feature)
        return scored.errors, scored.feature_errors

    return run


def _answer(
    model: OnnxModel, fmt: TensorFormat, payload: dict[str, Any], tensor: np.ndarray[Any, Any], **headers: str
) -> Response:
    """`payload` as JSON, or for a binary `fmt` the `tensor` alone with the payload's facts as headers."""
    meta = model.metadata
    if fmt == "json":
        return Response(dump_json(payload), media_type=JSON)
    body, tensor_headers = encode_tensor(tensor, fmt)
    all_headers = {"X-Model": meta.name, "X-Model-Version": str(meta.version), **tensor_headers, **headers}
    return Response(body, media_type=NPY if fmt == "npy" else RAW, headers=all_headers)


def _input_dim(model: OnnxModel) -> int:
    return model.input_dim


def _latent_dim(model: OnnxModel) -> int:
    return model.latent_dim


_TENSOR_ERRORS = _errors(400, 404, 406, 413, 415, 422, 503)


@router.post(
    "/encode",
    tags=["inference"],
    response_model=EncodeResponse,
    responses={**_binary_answer("latents"), **_TENSOR_ERRORS},
    openapi_extra=_tensor_doc(EncodeRequest, EncodeParams, "inputs"),
)
async def encode(request: Request) -> Response:
    """Encode feature vectors into latents (for a vae: the mean, plus log_var)."""
    call = await _parse(request, EncodeParams, "inputs", _input_dim)
    latent, log_var = await _run_rows(call, "encode", "encode", _encode_rows)
    assert latent is not None
    meta = call.model.metadata
    payload: dict[str, Any] = {"model": meta.name, "version": meta.version, "latents": latent}
    if log_var is not None:
        payload["log_var"] = log_var
    return _answer(call.model, call.answer, payload, latent)


@router.post(
    "/decode",
    tags=["inference"],
    response_model=DecodeResponse,
    responses={**_binary_answer("outputs"), **_TENSOR_ERRORS},
    openapi_extra=_tensor_doc(DecodeRequest, DecodeParams, "latents"),
)
async def decode(request: Request) -> Response:
    """Decode latents into feature vectors (raw units)."""
    call = await _parse(request, DecodeParams, "latents", _latent_dim)
    (outputs,) = await _run_rows(call, "decode", "decode", _decode_rows)
    assert outputs is not None
    meta = call.model.metadata
    payload = {"model": meta.name, "version": meta.version, "outputs": outputs}
    return _answer(call.model, call.answer, payload, outputs)


@router.post(
    "/denoise",
    tags=["inference"],
    response_model=DenoiseResponse,
    responses={**_binary_answer("outputs"), **_TENSOR_ERRORS},
    openapi_extra=_tensor_doc(DenoiseRequest, DenoiseParams, "inputs"),
)
async def denoise(request: Request) -> Response:
    """Reconstruct feature vectors (denoising model: the clean estimate; vae: the decoded mean)."""
    call = await _parse(request, DenoiseParams, "inputs", _input_dim)
    (outputs,) = await _run_rows(call, "denoise", "denoise", _denoise_rows)
    assert outputs is not None
    meta = call.model.metadata
    payload = {"model": meta.name, "version": meta.version, "outputs": outputs}
    return _answer(call.model, call.answer, payload, outputs)


@router.post(
    "/reconstruction-error",
    tags=["inference"],
    response_model=ReconstructionErrorResponse,
    response_model_exclude_none=True,
    responses={**_binary_answer("errors"), **_TENSOR_ERRORS},
    openapi_extra=_tensor_doc(ReconstructionErrorRequest, ReconstructionErrorParams, "inputs"),
)
async def reconstruction_error(request: Request) -> Response:
    """Score samples by reconstruction error and flag those above the threshold as anomalies."""
    call = await _parse(request, ReconstructionErrorParams, "inputs", _input_dim)
    params: ReconstructionErrorParams = call.params
    meta = call.model.metadata
    if params.per_feature and call.answer != "json":
        raise NotAcceptableError("per_feature answers are JSON only; send Accept: application/json")
    score = params.score or meta.default_score
    if score not in meta.scores:
        raise InvalidInputError(
            f"model {meta.name} version {meta.version} has no score {score!r}; expected one of {meta.scores}"
        )
    choice = choose_threshold(meta, score, params.threshold, params.false_alarm_rate)
    operation = f"score:{score}:{params.per_feature}"
    errors, feature_errors = await _run_rows(
        call, "reconstruction_error", operation, _score_rows(score, params.per_feature)
    )
    assert errors is not None
    no_threshold = choice.threshold is None
    anomalies = np.zeros(errors.shape, dtype=bool) if no_threshold else errors > choice.threshold  # (batch,)
    payload: dict[str, Any] = {
        "model": meta.name,
        "version": meta.version,
        "score": score,
        "errors": errors,
        "threshold": choice.threshold,
        "threshold_source": choice.source,
        "false_alarm_rate": choice.false_alarm_rate,
        "anomalies": anomalies,
    }
    if feature_errors is not None:
        payload["feature_errors"] = feature_errors
    headers: dict[str, str] = {"X-Score": score}
    if choice.threshold is not None:
        headers["X-Threshold"] = repr(choice.threshold)
        headers["X-Threshold-Source"] = str(choice.source)
    if choice.false_alarm_rate is not None:
        headers["X-False-Alarm-Rate"] = repr(choice.false_alarm_rate)
    return _answer(call.model, call.answer, payload, errors, **headers)


@router.post(
    "/sample",
    tags=["inference"],
    response_model=SampleResponse,
    responses={**_binary_answer("outputs"), **_errors(400, 404, 406, 413, 415, 422, 503)},
    openapi_extra=_tensor_doc(SampleRequest, SampleParams, None),
)
async def sample(request: Request) -> Response:
    """Generate samples by decoding z ~ N(0, I) (generative models only; `seed` makes it reproducible)."""
    state = _state(request)
    content_type = request.headers.get("content-type")
    if request_format(content_type) != "json":
        raise UnsupportedMediaTypeError(f"/sample takes a JSON body, got Content-Type {content_type!r}")
    answer = response_format(request.headers.get("accept"))
    params = _validate(
        SampleParams, parse_json_object(await read_body(request, state.settings.max_body_bytes)), True
    )
    model = state.registry.get(params.model, params.version)
    request.scope[MODEL_SCOPE_KEY] = model.metadata.name
    check_rows(params.n, "n", state.settings.max_batch_rows)
    outputs = await _run(state, model, "sample", params.n, model.sample, params.n, params.seed)
    meta = model.metadata
    return _answer(model, answer, {"model": meta.name, "version": meta.version, "outputs": outputs}, outputs)


def _model_info(model: OnnxModel) -> ModelInfo:
    meta = model.metadata
    return ModelInfo(
        name=meta.name,
        version=meta.version,
        status="ready",
        variant=meta.variant,
        input_dim=meta.input_dim,
        latent_dim=meta.latent_dim,
        kind=meta.kind,
        architecture=meta.architecture,
        input_shape=meta.sample_shape,
        feature_names=meta.feature_names,
        series=meta.series,
        image=meta.image,
        generative=meta.generative,
        providers=model.providers["model"],
        metrics=meta.metrics,
        scores=meta.scores,
        default_score=meta.default_score,
        calibration=meta.calibration,
        data=meta.data,
        created_at=meta.created_at,
    )


def _failure_info(failure: LoadFailure) -> ModelInfo:
    meta = failure.metadata
    info = ModelInfo(name=failure.name, version=failure.version, status="failed", error=failure.error)
    if meta is None:
        return info
    return info.model_copy(
        update={
            "variant": meta.variant,
            "input_dim": meta.input_dim,
            "latent_dim": meta.latent_dim,
            "kind": meta.kind,
            "architecture": meta.architecture,
            "input_shape": meta.sample_shape,
            "feature_names": meta.feature_names,
            "series": meta.series,
            "image": meta.image,
            "generative": meta.generative,
            "metrics": meta.metrics,
            "scores": meta.scores,
            "default_score": meta.default_score,
            "calibration": meta.calibration,
            "data": meta.data,
            "created_at": meta.created_at,
        }
    )


def _all_infos(snapshot: RegistrySnapshot) -> list[ModelInfo]:
    infos = [_model_info(m) for m in snapshot.all_models()] + [_failure_info(f) for f in snapshot.failures]
    return sorted(infos, key=lambda i: (i.name, i.version or 0))


@router.get("/models", tags=["models"], response_model=ModelListResponse)
async def list_models(request: Request) -> ModelListResponse:
    """Every model version found: its metadata, providers and calibration, or why it failed to load."""
    return ModelListResponse(models=_all_infos(_state(request).registry.snapshot))


@router.get("/models/{name}", tags=["models"], response_model=ModelVersionsResponse, responses=_errors(404))
async def get_model(name: str, request: Request) -> ModelVersionsResponse:
    """Every version of one model."""
    snapshot = _state(request).registry.snapshot  # one snapshot throughout, whatever a reload swaps in
    versions = [i for i in _all_infos(snapshot) if i.name == name]
    if not versions:
        available = ", ".join(snapshot.names()) or "none"
        raise ModelNotFoundError(f"unknown model {name!r}; available models: {available}")
    loaded = snapshot.versions(name)
    return ModelVersionsResponse(name=name, latest=max(loaded) if loaded else None, versions=versions)


@router.get("/healthz", tags=["health"], response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    tags=["health"],
    response_model=ReadinessResponse,
    responses={
        503: {"model": ErrorResponse, "description": "Some model is not loaded or warmed; says which."}
    },
)
async def readyz(request: Request) -> ReadinessResponse:
    """Every model is loaded, warmed, and on the providers asked for."""
    snapshot = _state(request).registry.snapshot
    problems = snapshot.problems()
    if problems:
        raise NotReadyError("not ready: " + "; ".join(problems))
    return ReadinessResponse(status="ready", models=len(snapshot.all_models()))


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition.", "content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", tags=["health"], response_model=InfoResponse)
async def info(request: Request) -> InfoResponse:
    """Service metadata: version, model repository, providers, thread plan, request limits."""
    state = _state(request)
    settings = state.settings
    return InfoResponse(
        version=__version__,
        models_dir=str(settings.models_dir),
        available_providers=ort.get_available_providers(),
        requested_providers=settings.providers,
        thread_plan=state.thread_plan.as_dict(),
        limits={
            "max_batch_rows": settings.max_batch_rows,
            "max_body_bytes": settings.max_body_bytes,
            "inline_max_rows": settings.inline_max_rows,
        },
    )
