"""JSON bodies for the REST routes and the Open Inference Protocol over HTTP: bounded, then fast.

A body's bytes are counted before it is parsed: at most AE_MAX_JSON_VALUES numbers and lists, so that a body
of a million empty lists is refused rather than materialised (a Python object costs tens of bytes for each
byte of such text). orjson then parses it, and a tensor field becomes a float32 array in one pass when the
body's text shows it can hold only numbers (`numbers_only`), else on a careful path that says what is wrong
(`json_tensor`). NaN and infinities are refused as values, not as malformed JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np
import orjson

from service.core.inputs import FLOAT32_MAX
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError

__all__ = ["dump_json", "fast_rows", "find_problem", "json_tensor", "numbers_only", "parse_json_object"]


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


def find_problem(rows: list[Any], field: str) -> str:
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


def fast_rows(rows: list[Any]) -> np.ndarray[Any, Any] | None:
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
        arr = fast_rows(value)
        if arr is not None:
            return arr
    problem = find_problem(value, field)
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
