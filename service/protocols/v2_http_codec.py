"""The Open Inference Protocol's HTTP bodies: the JSON inference header and the binary tensor data extension.

Bodies are JSON, or binary: ``Inference-Header-Content-Length: N`` says the first N bytes are the JSON
inference header and the rest the inputs' raw little-endian bytes, in input order, each input naming its size
in ``parameters.binary_data_size``. Outputs come back binary when asked (``binary_data`` on an output, or
``binary_data_output`` on the request), in the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.responses import Response

from service.core.inputs import check_rows
from service.core.runtime import OnnxModel
from service.errors import BadRequestError, InvalidInputError, quote
from service.protocols import v2
from service.protocols.json_codec import fast_rows, find_problem, numbers_only, parse_json_object

__all__ = [
    "BINARY_TYPE",
    "HEADER_LENGTH",
    "JSON_TYPE",
    "V2HttpRequest",
    "answer",
    "parse_request",
    "split_body",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


# --- reading a request ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V2HttpRequest:
    id: str | None
    inputs: list[v2.V2Input]
    outputs: list[tuple[str, bool]] | None
    """(output name, answer it binary), in the order asked; None for all."""
    binary_default: bool
    parameters: dict[str, Any]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_body(body: bytes, header_length: str | None, max_values: int) -> tuple[dict[str, Any], bytes]:
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
    arr = fast_rows(data) if fast else None
    if arr is not None:
        return arr
    problem = find_problem(data, f"input {name!r} data") if data else ""
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
        return v2.V2Input(name, arr), offset + expected  # checked (finite, float32) by the core
    data = spec.get("data")
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r} has no `data` list and no binary_data_size; expected one")
    values = _data_array(name, data, fast)
    if values.size != count:
        raise InvalidInputError(f"input {name!r} has {values.size} values; shape {shape} needs {count}")
    return v2.V2Input(name, values.reshape(shape)), offset


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


def parse_request(
    header: dict[str, Any], binary: bytes, body: bytes, model: OnnxModel, max_rows: int
) -> V2HttpRequest:
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
    fast = False
    if any("data" in s for s in specs):  # JSON tensors: may they take the one-pass conversion?
        rest = {**header, "inputs": [{**s, "data": 0} if "data" in s else s for s in specs]}
        fast = numbers_only(body[: len(body) - len(binary)], rest)
    inputs, used = [], 0
    for spec in specs:
        tensor, used = _tensor(spec, binary, used, model, max_rows, fast)
        inputs.append(tensor)
    if used != len(binary):
        raise BadRequestError(f"the body has {len(binary) - used} bytes of binary data that no input claims")
    outputs = _outputs(header.get("outputs"), binary_default, model)
    return V2HttpRequest(request_id, inputs, outputs, binary_default, parameters or {})


def answer(model: OnnxModel, parsed: V2HttpRequest, results: list[v2.V2Output]) -> Response:
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
