"""The Open Inference Protocol (KServe v2) over HTTP: its routes.

The body format (JSON and the binary tensor data extension) is `v2_http_codec`'s. A missing Content-Type is
fine (tritonclient sends none); a compressed body says so with Content-Encoding (read by the front door).
Errors answer ``{"error": "..."}``, request errors with 400. The semantics (inputs, outputs, metadata, config,
statistics) are `service.protocols.v2`'s, shared with gRPC; this module only reads and writes HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from service.core.runtime import OnnxModel
from service.errors import ServiceError, render_error
from service.ops.metrics import MODEL_SCOPE_KEY
from service.protocols import v2
from service.protocols.http_codec import decode_body, read_body
from service.protocols.routing import DocumentedRoute, doc_stub
from service.protocols.v2_http_codec import (
    BINARY_TYPE,
    HEADER_LENGTH,
    JSON_TYPE,
    V2HttpRequest,
    answer,
    parse_request,
    split_body,
)
from service.protocols.v2_schemas import (
    V2ErrorResponse,
    V2InferenceRequest,
    V2InferenceResponse,
    V2LiveResponse,
    V2ModelConfigResponse,
    V2ModelMetadataResponse,
    V2ModelReadyResponse,
    V2ReadyResponse,
    V2ServerMetadataResponse,
    V2StatisticsResponse,
)
from service.state import STATE_KEY, AppState

__all__ = ["HEADER_LENGTH", "render", "router"]

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

    def decode() -> V2HttpRequest:
        header, binary = split_body(body, request.headers.get(HEADER_LENGTH), settings.max_json_values)
        return parse_request(header, binary, body, model, settings.max_batch_rows)

    parsed = await decode_body(body, decode)
    names = [n for n, _ in parsed.outputs] if parsed.outputs is not None else None
    results = await v2.infer(state, model, parsed.inputs, names, parsed.parameters)
    return answer(model, parsed, results)


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


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": V2ErrorResponse, "description": "Not ready; says which models."}
}
_MODEL_NOT_READY = {**_ERRORS, 503: {"model": V2ErrorResponse, "description": "The model is not ready."}}
# (path under a model, operation, what it does, handler, answer, errors). Routes are matched in order and each
# one tried costs every request, so inference comes first.
_MODEL_ROUTES: list[tuple[str, str, str, Any, Any, dict[int | str, dict[str, Any]]]] = [
    ("/infer", "infer", "Run {it} on its input tensor(s).", _infer, V2InferenceResponse, _INFER_ERRORS),
    ("", "metadata", "The tensors and versions of {it}.", _metadata, V2ModelMetadataResponse, _ERRORS),
    (
        "/ready",
        "ready",
        "200 when {it} is loaded and warmed.",
        _ready,
        V2ModelReadyResponse,
        _MODEL_NOT_READY,
    ),
    (
        "/config",
        "config",
        "The configuration of {it} (Triton's extension).",
        _config,
        V2ModelConfigResponse,
        _ERRORS,
    ),
    ("/stats", "stats", "The statistics of {it}.", _stats, V2StatisticsResponse, _ERRORS),
]
for _suffix, _operation, _doc, _handler, _answer_type, _responses in _MODEL_ROUTES:
    for _prefix, _versioned in [("/models/{name}", False), ("/models/{name}/versions/{version}", True)]:
        _add(
            _prefix + _suffix,
            f"v2_model_version_{_operation}" if _versioned else f"v2_model_{_operation}",
            _doc.format(it="this model version" if _versioned else "the model's latest version"),
            _handler,
            _answer_type,
            method="POST" if _operation == "infer" else "GET",
            responses=_responses,
            name=NamePath,
            **({"version": VersionPath} if _versioned else {}),
            **({"body": V2InferenceRequest} if _operation == "infer" else {}),
        )
    if _operation == "infer":  # then the server's own routes, before the per-model ones
        _add(
            "",
            "v2_server_metadata",
            "The server's name, version and extensions.",
            _server_metadata,
            V2ServerMetadataResponse,
        )
        _add("/health/live", "v2_server_live", "200 while the process is up.", _server_live, V2LiveResponse)
        _add(
            "/health/ready",
            "v2_server_ready",
            "200 when every model is ready.",
            _server_ready,
            V2ReadyResponse,
            responses=_NOT_READY,
        )
        _add(
            "/models/stats",
            "v2_statistics",
            "Every loaded version's statistics.",
            _stats,
            V2StatisticsResponse,
        )
