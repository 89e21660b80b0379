"""The REST task routes: `/encode`, `/decode`, `/denoise`, `/reconstruction-error`, `/sample`.

Each only translates: read the body (JSON with `inputs` or `records`; a binary tensor, CSV or PNG with the
other fields in the query string), build the core's `Call` (`service.core.inputs` shapes the input by the
model's kind), run it through the executor, and answer the `Answer` as JSON, a binary tensor or PNG as Accept
asks. The OpenAPI entries come from the request and answer types (`DocumentedRoute`); the binary and file
alternatives are listed from the same tables the handlers use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.core import images
from service.core.inputs import Samples, check_rows, from_array, from_csv, from_records, latents_from_array
from service.core.runtime import OnnxModel
from service.core.tasks import TASKS, Answer, Call, Task
from service.errors import InvalidInputError, NotAcceptableError
from service.ops.metrics import MODEL_SCOPE_KEY
from service.protocols import schemas
from service.protocols.http_codec import (
    JSON,
    NPY,
    PNG,
    RAW,
    SHAPE_HEADER,
    AnswerFormat,
    BodyFormat,
    answer_format,
    body_format,
    decode_body,
    decode_tensor,
    encode_tensor,
    query_fields,
    read_body,
)
from service.protocols.json_codec import dump_json, json_tensor, numbers_only, parse_json_object
from service.protocols.routing import DocumentedRoute, doc_stub
from service.state import STATE_KEY, AppState

__all__ = ["ROUTES", "router", "validation_message"]

router = APIRouter()


@dataclass(frozen=True)
class RestRoute:
    """One task's REST route: its path, types, and the body and answer formats it takes."""

    path: str
    task: str
    params: type[BaseModel]
    request: type[BaseModel]
    response: type[BaseModel]
    field: str | None
    """The JSON tensor field (`inputs`, `latents`), None for a route without one."""
    bodies: tuple[BodyFormat, ...]
    answers: tuple[AnswerFormat, ...]


_SAMPLE_BODIES: tuple[BodyFormat, ...] = ("json", "npy", "raw", "csv", "png", "multipart")
ROUTES = [
    RestRoute(
        "/encode",
        "encode",
        schemas.EncodeParams,
        schemas.EncodeRequest,
        schemas.EncodeResponse,
        "inputs",
        _SAMPLE_BODIES,
        ("json", "npy", "raw"),
    ),
    RestRoute(
        "/decode",
        "decode",
        schemas.DecodeParams,
        schemas.DecodeRequest,
        schemas.DecodeResponse,
        "latents",
        ("json", "npy", "raw"),
        ("json", "npy", "raw", "png"),
    ),
    RestRoute(
        "/denoise",
        "denoise",
        schemas.DenoiseParams,
        schemas.DenoiseRequest,
        schemas.DenoiseResponse,
        "inputs",
        _SAMPLE_BODIES,
        ("json", "npy", "raw", "png"),
    ),
    RestRoute(
        "/reconstruction-error",
        "reconstruction_error",
        schemas.ReconstructionErrorParams,
        schemas.ReconstructionErrorRequest,
        schemas.ReconstructionErrorResponse,
        "inputs",
        _SAMPLE_BODIES,
        ("json", "npy", "raw", "png"),
    ),
    RestRoute(
        "/sample",
        "sample",
        schemas.SampleParams,
        schemas.SampleRequest,
        schemas.SampleResponse,
        None,
        ("json",),
        ("json", "npy", "raw", "png"),
    ),
]


def _state(request: Request) -> AppState:
    state: AppState = request.scope["state"][STATE_KEY]
    return state


def validation_message(exc: ValidationError) -> str:
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
            parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r:.80})")
    return "; ".join(parts)


def _validate(params: type[BaseModel], data: dict[str, Any], strict: bool) -> Any:
    try:
        return params.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc)) from None


def _samples(
    route: RestRoute,
    task: Task[Any],
    model: OnnxModel,
    fmt: BodyFormat,
    body: bytes,
    request: Request,
    json_parts: tuple[Any, Any, bool] | None,
    max_rows: int,
    resize: bool,
) -> Samples:
    """The request's input as the core's Samples, by its body format."""
    field = route.field or "inputs"
    build = latents_from_array if task.takes == "latents" else from_array
    if json_parts is not None:
        tensor, records, fast = json_parts
        if records is not None and tensor is None and task.takes == "samples":
            return from_records(model, records, "records", max_rows)
        return build(model, json_tensor(tensor, field, fast), field, max_rows)
    if fmt in ("npy", "raw"):
        arr = decode_tensor(body, fmt, request.headers.get(SHAPE_HEADER), field)
        return build(model, arr, field, max_rows)
    if fmt == "csv":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("the CSV body is not UTF-8 text") from None
        return from_csv(model, text, max_rows)
    files = [body] if fmt == "png" else images.multipart_files(body, request.headers.get("content-type", ""))
    return images.from_png(model, files, resize, max_rows)


async def _parse(request: Request, route: RestRoute, task: Task[Any]) -> tuple[Call[Any], AnswerFormat]:
    state = _state(request)
    settings = state.settings
    headers = request.headers
    fmt = body_format(headers.get("content-type"), route.bodies)
    answer = answer_format(headers.get("accept"), route.answers)
    body = await read_body(request, settings.max_body_bytes)

    def decode() -> tuple[Call[Any], AnswerFormat]:
        json_parts = None
        resize = False
        if fmt == "json":
            obj = parse_json_object(body, settings.max_json_values)
            tensor = obj.pop(route.field, None) if route.field else None
            records = obj.pop("records", None) if task.takes == "samples" else None
            params = _validate(route.params, obj, strict=True)
            rest = {**obj, route.field: 0} if route.field else obj
            json_parts = (tensor, records, route.field is not None and numbers_only(body, rest))
        else:
            fields = query_fields(request.scope)
            if fmt in ("png", "multipart"):
                resize = fields.pop("resize", "false").lower() in ("1", "true", "yes")
            params = _validate(route.params, fields, strict=False)
        model = state.registry.get(params.model, params.version)
        request.scope[MODEL_SCOPE_KEY] = model.metadata.name
        if task.takes == "nothing":
            check_rows(params.n, "n", settings.max_batch_rows)
            return Call(task, model, params), answer
        rows = settings.max_batch_rows
        samples = _samples(route, task, model, fmt, body, request, json_parts, rows, resize)
        return Call(task, model, params, samples), answer

    return await decode_body(body, decode)


# --- answers ----------------------------------------------------------------------------------------------

_KEYED = ("outputs", "feature_errors")
"""Per-value tensors answered as records (keyed by column name) when the request sent named columns."""
_FACT_HEADERS = {
    "score": "X-Score",
    "threshold": "X-Threshold",
    "threshold_source": "X-Threshold-Source",
    "false_alarm_rate": "X-False-Alarm-Rate",
}


def _keyed(values: np.ndarray[Any, Any], names: tuple[str, ...]) -> list[dict[str, float]]:
    return [dict(zip(names, row, strict=True)) for row in values.tolist()]


def _json_answer(answer: Answer) -> Response:
    payload: dict[str, Any] = {"model": answer.model, "version": answer.version, **answer.facts}
    for name, values in answer.tensors.items():
        keyed = answer.names is not None and name in _KEYED and values.shape[-1] == len(answer.names)
        payload[name] = _keyed(values, answer.names) if keyed else values  # type: ignore[arg-type]
    return Response(dump_json(payload), media_type=JSON)


def _binary_answer(answer: Answer, fmt: AnswerFormat) -> Response:
    body, tensor_headers = encode_tensor(answer.tensors[answer.primary], fmt)  # type: ignore[arg-type]
    headers = {"X-Model": answer.model, "X-Model-Version": str(answer.version), **tensor_headers}
    for fact, header in _FACT_HEADERS.items():
        value = answer.facts.get(fact)
        if value is not None:
            headers[header] = value if isinstance(value, str) else repr(value)
    return Response(body, media_type=NPY if fmt == "npy" else RAW, headers=headers)


_BOUNDARY = "ae-image-boundary"


def _png_answer(call: Call[Any], answer: Answer) -> Response:
    """One PNG, or several as multipart/mixed."""
    files = images.answer_pngs(call, answer)
    headers = {"X-Model": answer.model, "X-Model-Version": str(answer.version)}
    if len(files) == 1:
        return Response(files[0], media_type=PNG, headers=headers)
    parts = [
        f'--{_BOUNDARY}\r\nContent-Type: {PNG}\r\nContent-Disposition: inline; name="{i}"\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    body = b"".join(parts) + f"--{_BOUNDARY}--\r\n".encode()
    return Response(body, media_type=f"multipart/mixed; boundary={_BOUNDARY}", headers=headers)


def _render(call: Call[Any], answer: Answer, fmt: AnswerFormat) -> Response:
    if fmt == "json":
        return _json_answer(answer)
    if fmt == "png":
        return _png_answer(call, answer)
    return _binary_answer(answer, fmt)


def _handler(route: RestRoute) -> Callable[[Request], Any]:
    task = TASKS[route.task]

    async def handle(request: Request) -> Response:
        call, fmt = await _parse(request, route, task)
        per_feature = getattr(call.options, "per_feature", False)
        if fmt in ("npy", "raw") and per_feature:
            raise NotAcceptableError("per_feature answers are JSON only; send Accept: application/json")
        if fmt == "png" and task.name == "reconstruction_error" and not per_feature:
            # A PNG answer to a score is its error map, which needs each pixel's error.
            call = replace(call, options=call.options.model_copy(update={"per_feature": True}))
        answer = await _state(request).executor.run(call)
        return _render(call, answer, fmt)

    return handle


# --- OpenAPI: the binary and file alternatives, from the same tables --------------------------------------

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_BODY_MEDIA = {"npy": NPY, "raw": RAW, "csv": "text/csv", "png": PNG, "multipart": "multipart/form-data"}
_ANSWER_MEDIA = {"npy": NPY, "raw": RAW, "png": PNG}
_ERRORS = {
    400: "Malformed JSON, or a binary tensor or file that cannot be read.",
    401: "No API key (when keys are configured).",
    403: "A wrong API key.",
    404: "Unknown model or version; the message names the available ones.",
    406: "Accept names no answer type the route can give.",
    408: "The body did not arrive in time (AE_BODY_TIMEOUT_S).",
    413: "Body over AE_MAX_BODY_BYTES, more rows than AE_MAX_BATCH_ROWS, or more values than "
    "AE_MAX_JSON_VALUES.",
    415: "A Content-Type or Content-Encoding the route does not take.",
    422: "Invalid input: wrong shape, ragged rows, empty batch, NaN or infinity, non-numbers, unknown or "
    "missing columns, or a bad field.",
    503: "The model failed to load, or the server is overloaded (with Retry-After).",
    504: "The request ran past AE_REQUEST_TIMEOUT_S.",
}


def _openapi_extra(route: RestRoute) -> dict[str, Any]:
    binary = [f for f in route.bodies if f != "json"]
    if not binary:
        return {}
    content = {_BODY_MEDIA[f]: _BINARY for f in binary}
    properties = route.params.model_json_schema()["properties"]
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {k: v for k, v in properties[name].items() if k not in {"description", "examples"}},
            "description": f"Binary and file bodies only "
            f"({'required' if info.is_required() else 'optional'}): {info.description}",
        }
        for name, info in route.params.model_fields.items()
    ]
    parameters.append(
        {
            "name": SHAPE_HEADER,
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": r"^\d+(,\d+){0,3}$"},
            "description": f"Shape of a {RAW} body, e.g. `4,64`: little-endian float32, row-major.",
        }
    )
    if "png" in route.bodies:
        parameters.append(
            {
                "name": "resize",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "PNG bodies: resize images to the model's size instead of refusing them.",
            }
        )
    return {"requestBody": {"content": content}, "parameters": parameters}


def _responses(route: RestRoute) -> dict[int | str, dict[str, Any]]:
    media = {_ANSWER_MEDIA[f]: _BINARY for f in route.answers if f != "json"}
    answers: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "JSON, or as Accept asks the first tensor alone as binary (raw float32 carries "
            f"its shape in {SHAPE_HEADER}) or images as PNG (several: multipart/mixed).",
            "content": media,
        }
    }
    return answers | {
        code: {"model": schemas.ErrorResponse, "description": text} for code, text in _ERRORS.items()
    }


for _route in ROUTES:
    _task = TASKS[_route.task]
    router.routes.append(
        DocumentedRoute(
            _route.path,
            doc_stub(_route.task, _task.doc, _route.response, body=_route.request),
            handler=_handler(_route),
            methods=["POST"],
            tags=["inference"],
            response_model=_route.response,
            response_model_exclude_none=True,
            responses=_responses(_route),
            openapi_extra=_openapi_extra(_route),
            generate_unique_id_function=lambda route: route.name,
        )
    )
