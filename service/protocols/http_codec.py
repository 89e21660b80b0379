"""HTTP bodies in and out, for the REST routes and the Open Inference Protocol over HTTP alike.

Request bodies, chosen by Content-Type (a missing one is read as JSON, since some clients send none):
- ``application/json``: see `service.protocols.json_codec` (bounded before it is parsed, then fast).
- ``application/x-npy``: one array in NumPy's .npy format; its header is read first and must account for
  the body's bytes exactly (numpy's own reader would allocate what any header claims).
- ``application/octet-stream``: raw little-endian float32, row-major, shape in ``X-Tensor-Shape``.
- ``text/csv``, ``image/png`` and ``multipart/form-data`` (REST only), read by the core's input builders.

Answers, chosen by Accept (client's order; missing, ``*/*`` or ``application/json`` give JSON): JSON via
orjson with numpy arrays serialised natively, ``application/x-npy``, raw float32 with ``X-Tensor-Shape``, or
``image/png`` where the route offers images.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

import numpy as np
from starlette.requests import ClientDisconnect, Request

from service.errors import (
    BadRequestError,
    InvalidInputError,
    NotAcceptableError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    quote,
)
from service.ops.body import BODY_KEY
from service.ops.front import LARGE_BODY_BYTES

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
    "encode_tensor",
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


T = TypeVar("T")


async def decode_body(body: bytes, decode: Callable[[], T]) -> T:
    """`decode()` (parsing and checking `body`), inline for a small body, on a worker thread for a large one
    (over `LARGE_BODY_BYTES`), so that its Python-level checks and conversions interleave with the event
    loop instead of stalling every other connection, probes included (the C parsers hold the interpreter
    lock while they run). The front middleware's large-body slot bounds how many run at once."""
    if len(body) <= LARGE_BODY_BYTES:
        return decode()
    return await asyncio.to_thread(decode)


def query_fields(scope: Mapping[str, Any]) -> dict[str, str]:
    """The query string as a dict (the last value of a repeated name)."""
    return dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))


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
