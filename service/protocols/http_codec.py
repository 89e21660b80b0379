"""HTTP bodies in and out, for the REST routes and the Open Inference Protocol over HTTP alike.

Request bodies, chosen by Content-Type (a missing one is read as JSON, since some clients send none):
- ``application/json``: parsed by orjson once its bytes show it holds at most AE_MAX_JSON_VALUES numbers and
  lists (counted before parsing, so that a body of a million empty lists is refused, not materialised); a
  tensor field becomes a float32 array in one pass when its text can hold only numbers (`json_tensor`).
- ``application/x-npy``: one array in NumPy's .npy format; its header is read first and must account for
  the body's bytes exactly (numpy's own reader would allocate what any header claims).
- ``application/octet-stream``: raw little-endian float32, row-major, shape in ``X-Tensor-Shape``.
- ``text/csv``, ``image/png`` and ``multipart/form-data`` (REST only), read by the core's input builders.

Answers, chosen by Accept (client's order; missing, ``*/*`` or ``application/json`` give JSON): JSON via
orjson with numpy arrays serialised natively, ``application/x-npy``, raw float32 with ``X-Tensor-Shape``, or
``image/png`` where the route offers images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from itertools import chain
from typing import Any, Literal
from urllib.parse import parse_qsl

import numpy as np
import orjson
from starlette.requests import ClientDisconnect, Request

from service.core.inputs import FLOAT32_MAX
from service.errors import (
    BadRequestError,
    InvalidInputError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    quote,
)
from service.ops.body import BODY_KEY

__all__ = [
    "CSV",
    "JSON",
    "MULTIPART",
    "NPY",
    "PNG",
    "RAW",
    "SHAPE_HEADER",
    "AnswerFormat",
    "BodyFormat",
    "answer_format",
    "body_format",
    "decode_tensor",
    "dump_json",
    "encode_tensor",
    "json_tensor",
    "numbers_only",
    "parse_json_object",
    "query_fields",
    "read_body",
]

JSON = "application/json"
NPY = "application/x-npy"
RAW = "application/octet-stream"
CSV = "text/csv"
PNG = "image/png"
MULTIPART = "multipart/form-data"
SHAPE_HEADER = "X-Tensor-Shape"
BodyFormat = Literal["json", "npy", "raw", "csv", "png", "multipart"]
AnswerFormat = Literal["json", "npy", "raw", "png"]

MAX_TENSOR_RANK = 4
"""Samples are at most (batch, channels, height, width)."""
_MAX_DIM = 2**31 - 1

_BODY_TYPES: dict[str, BodyFormat] = {
    JSON: "json",
    NPY: "npy",
    RAW: "raw",
    CSV: "csv",
    PNG: "png",
    MULTIPART: "multipart",
}
_ANSWER_TYPES: dict[str, AnswerFormat] = {
    JSON: "json",
    "*/*": "json",
    "application/*": "json",
    NPY: "npy",
    RAW: "raw",
    PNG: "png",
    "image/*": "png",
}


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def body_format(content_type: str | None, allowed: tuple[BodyFormat, ...]) -> BodyFormat:
    """The body format named by Content-Type, among `allowed`; a missing or empty one means JSON."""
    media = _media(content_type) if content_type else ""
    if not media:
        return "json"
    fmt = _BODY_TYPES.get(media)
    if fmt is None or fmt not in allowed:
        if allowed == ("json",):
            raise UnsupportedMediaTypeError(
                f"unsupported Content-Type {quote(media)}; this route takes a JSON body ({JSON})"
            )
        others = [t for t, f in _BODY_TYPES.items() if f in allowed and f not in ("json", "npy", "raw")]
        expected = f"{JSON}, {NPY} or {RAW}" + (f" (or {', '.join(others)})" if others else "")
        raise UnsupportedMediaTypeError(f"unsupported Content-Type {quote(media)}; expected {expected}")
    return fmt


def answer_format(
    accept: str | None, allowed: tuple[AnswerFormat, ...] = ("json", "npy", "raw")
) -> AnswerFormat:
    """The answer format Accept asks for: the first type, in the client's order, among `allowed`."""
    if not accept:
        return "json"
    for part in accept.split(","):
        fmt = _ANSWER_TYPES.get(_media(part))
        if fmt is not None and fmt in allowed:
            return fmt
    expected = ", ".join(t for t, f in _ANSWER_TYPES.items() if f in allowed and "*" not in t)
    raise NotAcceptableError(f"cannot answer with any of Accept: {quote(accept)}; expected {expected}")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body the front middleware read (`BODY_KEY`), or, without it, the body read here with the limit."""
    body = request.scope.get(BODY_KEY)
    if body is not None:
        return bytes(body)
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLargeError(
                f"request body is over the limit of {max_bytes} bytes (AE_MAX_BODY_BYTES)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def query_fields(scope: Mapping[str, Any]) -> dict[str, str]:
    """The query string as a dict (the last value of a repeated name)."""
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))


# --- JSON -------------------------------------------------------------------------------------------------


def _non_finite(exc: orjson.JSONDecodeError) -> bool:
    """Whether orjson stopped at NaN, Infinity or a number beyond the double range (bad values, not bad
    JSON: Python's json writes NaN and Infinity bare)."""
    if "infinity" in exc.msg:  # "number is infinity when parsed as double"
        return True
    doc, at = exc.doc, exc.pos  # a str, and a character offset into it
    if doc[at - 1 : at] == "-":  # "-Infinity" fails just after the sign
        at -= 1
    return doc.startswith(("NaN", "Infinity", "-NaN", "-Infinity"), at)


def _check_structure(body: bytes, max_values: int) -> None:
    """413 when the JSON text holds more numbers and lists than `max_values`.

    Every number or list but the last in a list is followed by a comma, and every list opens with `[`, so
    commas plus brackets bound them; no body shorter than twice the limit can exceed it, so small bodies are
    not even counted."""
    if len(body) <= 2 * max_values:
        return
    items = body.count(b",") + body.count(b"[")
    if items > max_values:
        raise PayloadTooLargeError(
            f"the JSON body holds about {items} numbers and lists, over the limit of {max_values} "
            "(AE_MAX_JSON_VALUES); send fewer rows per request, or a binary tensor"
        )


def parse_json_object(
    body: bytes, max_values: int, what: str = "request body", expected: str = "a JSON object"
) -> dict[str, Any]:
    """Parse a JSON request body that must be an object; `what` names the body and `expected` its shape in
    the error messages."""
    if not body.strip():
        raise BadRequestError(f"empty {what}; expected {expected}")
    _check_structure(body, max_values)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _non_finite(exc):
            raise InvalidInputError(
                f"the {what} contains NaN, Infinity or a number beyond the float range; expected finite "
                "numbers"
            ) from None
        raise BadRequestError(f"malformed JSON {what}: {exc}; expected {expected}") from None
    if not isinstance(value, dict):
        raise BadRequestError(f"the {what} is a JSON {type(value).__name__}; expected {expected}")
    return value


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"a string ({value[:20]!r})"
    if isinstance(value, list | dict):
        return "a nested " + ("list" if isinstance(value, list) else "object")
    return repr(value)


def _find_problem(rows: list[Any], field: str) -> str:
    """The first reason `rows` is not a rectangular nest of lists of numbers (slow path, errors only).

    The first element at each depth sets the expected shape; everything else must match it."""
    shape: list[int] = []
    first: list[str] = []
    probe: Any = rows
    where = field
    while isinstance(probe, list):
        shape.append(len(probe))
        first.append(where)
        if not probe:
            break
        probe, where = probe[0], f"{where}[0]"
    stack: list[tuple[Any, str, int]] = [(rows, field, 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth < len(shape):
            if not isinstance(value, list):
                if depth == 1 and len(shape) == 2:
                    return f"{where} is {_describe(value)}; expected a list of rows, each a list of numbers"
                if depth == len(shape) - 1 and isinstance(value, int | float) and not isinstance(value, bool):
                    return f"{first[depth]} is a nested list; expected a number"
                what = _describe(value)
                return f"ragged rows: {where} is {what} where {first[depth]} is a list; expected equal"
            if len(value) != shape[depth]:
                return (
                    f"ragged rows: {first[depth]} has {shape[depth]} values, {where} has {len(value)}; "
                    "expected equal"
                )
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return f"{where} is {_describe(value)}; expected a number"
        elif abs(value) > FLOAT32_MAX:
            return f"{where} = {value} is outside the float32 range (±{FLOAT32_MAX:.4g})"
    return ""


def _count_at_most(data: bytes, char: bytes, limit: int) -> int:
    """Occurrences of the byte `char` in `data`, counting no further than `limit + 1` (memchr speed)."""
    found = 0
    at = data.find(char)
    while at >= 0 and found <= limit:
        found += 1
        at = data.find(char, at + 1)
    return found


def numbers_only(body: bytes, rest: Mapping[str, Any]) -> bool:
    """Whether the parts of `body` that are not in `rest` (the parsed body with its tensors replaced by 0)
    can hold nothing but numbers (no true, false, null or strings).

    Each of those brings a `u` (true, null), an `a` (false) or a `"` (strings) that `rest` re-serialised does
    not account for. A client's own escapes can only add such characters (every \\u escape has a `u`), so a
    surplus is never missed; a false alarm only costs the careful path."""
    text = orjson.dumps(rest)
    for char in (b"u", b"a", b'"'):
        allowed = text.count(char)
        if _count_at_most(body, char, allowed) > allowed:
            return False
    return True


def _fast_rows(rows: list[Any]) -> np.ndarray[Any, Any] | None:
    """Rows known to hold only numbers -> float32 in one pass, for a flat list or a list of equal lists;
    None for anything else (the careful path then converts it or says what is wrong)."""
    if not rows:
        return None
    try:
        if type(rows[0]) is not list:
            with np.errstate(over="ignore"):
                flat = np.fromiter(rows, dtype=np.float32, count=len(rows))
            shape: tuple[int, ...] = (len(rows),)
        else:
            width = len(rows[0])
            if not all(type(r) is list and len(r) == width for r in rows):
                return None
            with np.errstate(over="ignore"):
                flat = np.fromiter(chain.from_iterable(rows), dtype=np.float32, count=len(rows) * width)
            shape = (len(rows), width)
    except (ValueError, TypeError, OverflowError):
        return None  # nested deeper, or integers beyond the float range
    # The text holds no NaN or Infinity (orjson refuses them), so a non-finite value overflowed float32.
    if not np.isfinite(flat).all():
        return None
    return flat.reshape(shape)


def json_tensor(value: Any, field: str, fast: bool) -> np.ndarray[Any, Any]:
    """A JSON tensor (nested lists of numbers, any rank) -> a real array, with 422 errors saying what was
    wrong. `fast` (the body's text shows only numbers in it) takes the one-pass conversion."""
    if value is None:
        raise InvalidInputError(f"missing field {field!r}; expected a list of rows of numbers")
    if not isinstance(value, list):
        raise InvalidInputError(f"{field} is {_describe(value)}; expected a list of rows of numbers")
    if fast:
        arr = _fast_rows(value)
        if arr is not None:
            return arr
    problem = _find_problem(value, field)
    if problem:
        raise InvalidInputError(problem)
    try:
        arr = np.array(value)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is None or arr.dtype.kind not in "fiu":
        # Integers beyond int64 give an object array; as numbers they are fine.
        arr = np.array(value, dtype=np.float64)
    return arr


def dump_json(payload: Mapping[str, Any]) -> bytes:
    """orjson with numpy arrays serialised natively (no lists in between)."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


# --- binary tensors ---------------------------------------------------------------------------------------


def _shape(header: str) -> tuple[int, ...]:
    """`X-Tensor-Shape` as dimensions: at most MAX_TENSOR_RANK comma-separated ASCII integers."""
    parts = header.split(",")
    if len(header) > 64 or len(parts) > MAX_TENSOR_RANK:
        raise BadRequestError(
            f"{SHAPE_HEADER} {quote(header)} has too many dimensions; expected at most {MAX_TENSOR_RANK}, "
            "e.g. 4,64"
        )
    dims = [p.strip() for p in parts]
    if not all(d.isascii() and d.isdigit() and len(d) <= 10 for d in dims):
        raise BadRequestError(
            f"{SHAPE_HEADER} {quote(header)} is not comma-separated integers; expected e.g. 4,64"
        )
    shape = tuple(int(d) for d in dims)
    if any(d > _MAX_DIM for d in shape):
        raise BadRequestError(f"{SHAPE_HEADER} {quote(header)} has a dimension over {_MAX_DIM}")
    return shape


def _npy(body: bytes) -> np.ndarray[Any, Any]:
    """A .npy body as an array, refusing any header whose shape does not match the bytes that follow."""
    buffer = io.BytesIO(body)
    try:
        major, _ = np.lib.format.read_magic(buffer)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(buffer)
    except Exception as exc:  # numpy raises ValueError, EOFError, SyntaxError... for a bad header
        raise BadRequestError(f"the body is not a readable .npy array ({exc}); expected {NPY}") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise InvalidInputError(
            f"the .npy array has dtype {dtype}; expected real numbers (float32 preferred)"
        )
    if len(shape) > MAX_TENSOR_RANK:
        raise InvalidInputError(
            f"the .npy array has {len(shape)} dimensions; expected at most {MAX_TENSOR_RANK}"
        )
    count = math.prod(shape)
    data = body[buffer.tell() :]
    if len(data) != count * dtype.itemsize:
        raise BadRequestError(
            f"the body is not a readable .npy array (its header says shape {shape} of {dtype}, "
            f"{count * dtype.itemsize} bytes, but {len(data)} follow); expected {NPY}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def decode_tensor(
    body: bytes, fmt: Literal["npy", "raw"], shape_header: str | None, field: str
) -> np.ndarray[Any, Any]:
    """A binary body (npy or raw float32) -> a real array, checked for framing; the core checks its shape."""
    if fmt == "npy":
        arr = _npy(body)
        if arr.dtype.kind == "b":
            raise InvalidInputError(
                f"the .npy array has dtype {arr.dtype}; expected real numbers (float32 preferred)"
            )
        return arr
    if not shape_header:
        raise BadRequestError(f"a {RAW} body needs the {SHAPE_HEADER} header, e.g. '{SHAPE_HEADER}: 4,64'")
    shape = _shape(shape_header)
    expected = 4 * math.prod(shape)
    if len(body) != expected:
        raise BadRequestError(
            f"the body has {len(body)} bytes but {SHAPE_HEADER} {quote(shape_header)} needs {expected} "
            "(little-endian float32, row-major)"
        )
    return np.frombuffer(body, dtype="<f4").reshape(shape)


def encode_tensor(
    arr: np.ndarray[Any, Any], fmt: Literal["npy", "raw"]
) -> tuple[bytes | memoryview, dict[str, str]]:
    """A binary answer body and its headers; raw answers share the array's memory (no copy of what can be
    megabytes)."""
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, arr, allow_pickle=False)
        return buffer.getvalue(), {}
    data = np.ascontiguousarray(arr, dtype="<f4")
    return data.data.cast("B"), {SHAPE_HEADER: ",".join(str(d) for d in data.shape)}
