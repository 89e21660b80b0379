"""What a request's input becomes, whatever its protocol: the arrays a model's graphs take.

Every protocol decodes its wire format into one of a few forms and hands it here, so that each kind of input
is built once: a numeric array (`from_array`), named records (`from_records`, a list of objects keyed by
column name, in any order), CSV text with a header (`from_csv`), one array per named column (`from_columns`,
as v2 clients send them), or image files (`service.core.images`). The model's `kind` says how to read them:

- rows:   (n, features); records and CSV matched to `feature_names` by name.
- image:  (n, features) flattened, (n, height, width) for one channel, or (n, channels, height, width).
- series: one series (T, channels) with T >= window, cut into its T - window + 1 windows (stride 1, as
  `service.core.windows` does for training), or windows (n, window, channels) as they are; records and CSV
  are time steps, with the model's time column if it has one (checked sorted and unique, then dropped).

The result, `Samples`, holds the batch in the graphs' layout and what is needed to answer in the request's
own layout (its per-sample shape, the series length, the column names when it came named).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from service.contract import ModelMetadata
from service.core.runtime import Float32Array, OnnxModel
from service.core.windows import cut_windows, to_steps, value_rule
from service.errors import InvalidInputError, PayloadTooLargeError, quote

__all__ = [
    "FLOAT32_MAX",
    "Samples",
    "check_rows",
    "checked_float32",
    "from_array",
    "from_columns",
    "from_csv",
    "from_records",
    "latents_from_array",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Samples:
    """A batch as the graphs take it, and how the request laid it out."""

    x: Float32Array
    """(n, *graph shape): samples in the model's `sample_shape`, or latents (n, latent_dim)."""
    shape: tuple[int, ...]
    """The request's own per-sample shape, to answer in (e.g. (8, 8) for images sent as 8 x 8)."""
    steps: int | None = None
    """Series: the length T of the series the windows were cut from; None when windows were sent."""
    names: tuple[str, ...] | None = None
    """The column names, when the request sent named records, CSV or columns (answers keyed by name)."""

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def as_sent(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(n, *graph shape) values (a reconstruction, per-value errors) in the request's per-sample shape."""
        return values.reshape(values.shape[0], *self.shape)


def check_rows(rows: int, field: str, max_rows: int) -> None:
    """422 for an empty batch, 413 for one over `max_rows` (AE_MAX_BATCH_ROWS)."""
    if rows == 0:
        raise InvalidInputError(f"{field} is an empty batch; expected at least one row")
    if rows > max_rows:
        raise PayloadTooLargeError(
            f"{field} has {rows} rows, over the limit of {max_rows} rows per request (AE_MAX_BATCH_ROWS)"
        )


def _at(index: Sequence[int]) -> str:
    return "".join(f"[{int(i)}]" for i in index)


def checked_float32(arr: np.ndarray[Any, Any], field: str) -> Float32Array:
    """A real array -> contiguous float32, every value finite; 422 saying which value is not."""
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{field} has values of type {arr.dtype}; expected real numbers")
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        x = arr  # raw float32 bodies: nothing to convert (np.errstate alone costs microseconds)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.ascontiguousarray(arr, dtype=np.float32)
    # One pass on the float32 array catches NaN and infinity and values that overflowed float32 alike.
    if not np.isfinite(x).all():
        index = tuple(np.argwhere(~np.isfinite(x))[0])
        value = arr[index]
        if arr.dtype.kind == "f" and not np.isfinite(value):
            raise InvalidInputError(
                f"{field}{_at(index)} is {value}; expected finite numbers (no NaN or infinity)"
            )
        raise InvalidInputError(
            f"{field}{_at(index)} = {value} is outside the float32 range (±{FLOAT32_MAX:.4g})"
        )
    return x


def _dims(shape: Sequence[int]) -> str:
    return "(batch, " + ", ".join(str(d) for d in shape) + ")"


def _image_samples(meta: ModelMetadata, arr: np.ndarray[Any, Any], field: str) -> tuple[int, ...]:
    """The per-sample shape an image model's request used; 422 when it is none of the accepted ones."""
    assert meta.image is not None
    c, h, w = meta.image.channels, meta.image.height, meta.image.width
    accepted = [(meta.input_dim,), (c, h, w)] + ([(h, w)] if c == 1 else [])
    shape = tuple(arr.shape[1:])
    if shape in accepted:
        return shape
    if arr.ndim == 2:
        raise InvalidInputError(
            f"each row of {field} must have {meta.input_dim} values, got {arr.shape[1]} (or send images of "
            f"shape {_dims(accepted[-1])})"
        )
    raise InvalidInputError(
        f"{field} is a {arr.ndim}-D array of shape {tuple(arr.shape)}; expected a 2-D array "
        f"{_dims(accepted[0])} or images " + " or ".join(_dims(s) for s in accepted[1:])
    )


def from_array(model: OnnxModel, arr: np.ndarray[Any, Any], field: str, max_rows: int) -> Samples:
    """A numeric array of samples -> the graphs' batch, by the model's kind (see the module docstring)."""
    meta = model.metadata
    if arr.ndim >= 1 and arr.shape[0] == 0:
        check_rows(0, field, max_rows)
    if meta.series is not None:
        return _series_array(model, arr, field, max_rows)
    if arr.ndim < 2:
        raise InvalidInputError(
            f"{field} must be a list of rows (a 2-D array), got a {arr.ndim}-D array of shape "
            f"{tuple(arr.shape)}; expected shape (batch, {meta.input_dim})"
        )
    if meta.image is not None:
        shape = _image_samples(meta, arr, field)
    elif arr.ndim != 2:
        raise InvalidInputError(
            f"{field} must be a list of rows (a 2-D array), got a {arr.ndim}-D array of shape "
            f"{tuple(arr.shape)}; expected shape (batch, {meta.input_dim})"
        )
    elif arr.shape[1] != meta.input_dim:
        raise InvalidInputError(f"each row of {field} must have {meta.input_dim} values, got {arr.shape[1]}")
    else:
        shape = (meta.input_dim,)
    check_rows(int(arr.shape[0]), field, max_rows)
    x = checked_float32(arr, field).reshape(arr.shape[0], *model.sample_shape)
    return Samples(x, shape)


def _series_array(model: OnnxModel, arr: np.ndarray[Any, Any], field: str, max_rows: int) -> Samples:
    spec = model.metadata.series
    assert spec is not None
    window, channels = spec.window, spec.channels
    if arr.ndim == 3 and arr.shape[1:] == (window, channels):
        check_rows(int(arr.shape[0]), field, max_rows)
        return Samples(checked_float32(arr, field), (window, channels))
    if arr.ndim != 2 or arr.shape[1] != channels:
        raise InvalidInputError(
            f"{field} has shape {tuple(arr.shape)}; expected one series (steps, {channels}) with at least "
            f"{window} steps, or windows (batch, {window}, {channels})"
        )
    steps = int(arr.shape[0])
    if steps < window:
        raise InvalidInputError(
            f"{field} has {steps} time steps; the model's window is {window} steps, so send at least {window}"
        )
    windows = steps - window + 1
    if windows > max_rows:
        raise PayloadTooLargeError(
            f"{field} has {steps} steps, {windows} windows, over the limit of {max_rows} per request "
            f"(AE_MAX_BATCH_ROWS); send at most {max_rows + window - 1} steps at a time"
        )
    series = checked_float32(arr, field)
    return Samples(np.ascontiguousarray(cut_windows(series, window)), (channels,), steps)


def latents_from_array(model: OnnxModel, arr: np.ndarray[Any, Any], field: str, max_rows: int) -> Samples:
    """Latent vectors (n, latent_dim) for the decoder."""
    width = model.latent_dim
    if arr.ndim >= 1 and arr.shape[0] == 0:
        check_rows(0, field, max_rows)
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{field} must be a list of rows (a 2-D array), got a {arr.ndim}-D array of shape "
            f"{tuple(arr.shape)}; expected shape (batch, {width})"
        )
    if arr.shape[1] != width:
        raise InvalidInputError(f"each row of {field} must have {width} values, got {arr.shape[1]}")
    check_rows(int(arr.shape[0]), field, max_rows)
    return Samples(checked_float32(arr, field), (width,))


# --- named columns ----------------------------------------------------------------------------------------


def _columns_of(meta: ModelMetadata) -> tuple[list[str], str | None]:
    """(feature or channel names, time column or None); 422 for a model that has no names."""
    if meta.image is not None:
        raise InvalidInputError(
            f"model {meta.name} takes images; send `inputs` arrays or image files, not named records"
        )
    if meta.feature_names is None:
        raise InvalidInputError(
            f"model {meta.name} version {meta.version} has no column names; send `inputs` as rows of "
            f"{meta.series.channels if meta.series else meta.input_dim} numbers in order"
        )
    return list(meta.feature_names), meta.series.time_column if meta.series else None


def _list(names: Sequence[str]) -> str:
    shown = ", ".join(quote(n) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _match_columns(given: Sequence[str], names: list[str], time: str | None, where: str) -> None:
    expected = set(names)
    allowed = expected | ({time} if time else set())
    missing = [n for n in names if n not in given]
    unknown = [g for g in given if g not in allowed]
    if missing or unknown:
        parts = ([f"lacks {_list(missing)}"] if missing else []) + (
            [f"has unknown columns {_list(unknown)}"] if unknown else []
        )
        raise InvalidInputError(
            f"{where} " + " and ".join(parts) + f"; the model's columns are {_list(names)}"
        )


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{where} is {quote(value)}; expected a number")
    return float(value)


def _time_values(values: list[object], column: str) -> None:
    """422 unless the time column's values are all numbers or all ISO 8601 times, strictly increasing."""
    parsed: list[float] = []
    for i, value in enumerate(values):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            parsed.append(float(value))
            continue
        if isinstance(value, str):
            try:
                parsed.append(datetime.fromisoformat(value).timestamp())
                continue
            except ValueError:
                pass
        raise InvalidInputError(
            f"time column {column!r} step {i} is {quote(value)}; expected a number or an ISO time"
        )
    for i in range(1, len(parsed)):
        if parsed[i] == parsed[i - 1]:
            raise InvalidInputError(
                f"time column {column!r} repeats a time at steps {i - 1} and {i}; expected unique times"
            )
        if parsed[i] < parsed[i - 1]:
            raise InvalidInputError(
                f"time column {column!r} goes back in time at step {i} ({quote(values[i])} after "
                f"{quote(values[i - 1])}); expected the steps sorted by time"
            )


def _from_table(
    model: OnnxModel, columns: list[str], table: list[list[object]], field: str, max_rows: int
) -> Samples:
    """Rows of values under `columns` (already matched to the model's names) -> Samples, named."""
    names, time = _columns_of(model.metadata)
    position = {c: i for i, c in enumerate(columns)}
    if time is not None and time in position:
        _time_values([row[position[time]] for row in table], time)
    order = [position[n] for n in names]
    values = [[_number(row[j], f"{field}[{i}].{columns[j]}") for j in order] for i, row in enumerate(table)]
    arr = np.asarray(values, dtype=np.float64).reshape(len(values), len(names))
    samples = from_array(model, arr, field, max_rows)
    return Samples(samples.x, samples.shape, samples.steps, tuple(names))


def from_records(model: OnnxModel, records: object, field: str, max_rows: int) -> Samples:
    """A list of objects keyed by column name (any order) -> Samples; 422 naming missing or unknown keys."""
    names, time = _columns_of(model.metadata)
    if not isinstance(records, list) or not records:
        raise InvalidInputError(f"{field} must be a non-empty list of objects keyed by column name")
    if model.metadata.series is None:
        check_rows(len(records), field, max_rows)
    columns = names + ([time] if time and isinstance(records[0], dict) and time in records[0] else [])
    table: list[list[object]] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInputError(
                f"{field}[{i}] is {quote(record)}; expected an object keyed by column name"
            )
        if len(record) != len(columns) or any(c not in record for c in columns):
            _match_columns(list(record), names, time, f"{field}[{i}]")
            raise InvalidInputError(
                f"{field}[{i}] has other columns than {field}[0]; expected the same in each"
            )
        table.append([record[c] for c in columns])
    return _from_table(model, columns, table, field, max_rows)


def from_columns(model: OnnxModel, columns: Mapping[str, np.ndarray[Any, Any]], max_rows: int) -> Samples:
    """One 1-D array per column name (v2's one input per column) -> Samples."""
    names, time = _columns_of(model.metadata)
    _match_columns(list(columns), names, time, "the request")
    lengths = {name: int(a.shape[0]) if a.ndim else 0 for name, a in columns.items()}
    if len(set(lengths.values())) != 1 or any(a.ndim != 1 for a in columns.values()):
        raise InvalidInputError(f"each column must be a 1-D tensor, all of one length; got shapes {lengths}")
    arr = np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)
    samples = from_array(model, arr, "inputs", max_rows)
    return Samples(samples.x, samples.shape, samples.steps, tuple(names))


def from_csv(model: OnnxModel, text: str, max_rows: int) -> Samples:
    """CSV text whose header row names the model's columns (any order; `,`, `;` or tab) -> Samples."""
    names, time = _columns_of(model.metadata)
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or not lines[0].strip():
        raise InvalidInputError("the CSV body is empty; expected a header row of column names, then rows")
    try:
        dialect: Any = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO("\n".join(lines)), dialect)
    header = [h.strip() for h in next(reader)]
    _match_columns(header, names, time, "the CSV header")
    table: list[list[object]] = []
    for number, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InvalidInputError(f"CSV line {number} has {len(row)} fields; the header has {len(header)}")
        table.append([_csv_cell(cell, header[j], number, header[j] == time) for j, cell in enumerate(row)])
        if len(table) > max_rows + (model.metadata.series.window if model.metadata.series else 0):
            raise PayloadTooLargeError(f"the CSV body has over {max_rows} rows (AE_MAX_BATCH_ROWS)")
    if not table:
        raise InvalidInputError("the CSV body has a header but no rows")
    return _from_table(model, header, table, "csv", max_rows)


def _csv_cell(cell: str, column: str, line: int, is_time: bool) -> object:
    text = cell.strip()
    try:
        return float(text)
    except ValueError:
        if is_time:
            return text
        raise InvalidInputError(
            f"CSV line {line} column {column!r} is {quote(text)}; expected a number"
        ) from None


# --- answers in the request's layout ------------------------------------------------------------------------


def step_values(
    model: OnnxModel, samples: Samples, per_position: np.ndarray[Any, Any], scores: bool = True
) -> np.ndarray[Any, Any]:
    """(n, window, ...) per-window, per-position values of a cut series -> (T, ...): scores by the model's
    rule, other values (a reconstruction) by the value rule that goes with it (`windows.value_rule`)."""
    spec = model.metadata.series
    assert spec is not None and samples.steps is not None
    return to_steps(per_position, spec.step_score if scores else value_rule(spec.step_score))
