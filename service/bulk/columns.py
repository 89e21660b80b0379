"""How a table's columns become a model's input, and how an answer becomes columns again (no Ray here).

A bulk job's table has three kinds of columns: the `keep` columns (carried through as they came), for a series
model the series key and the time column, and the features: every other column. Features are matched to
the model's `feature_names` by name (any order) when it has them, and may then be kept as well; else they
are taken in table order. `plan_columns`
checks all of that once per table schema, before anything is scored, and `BULK_TASKS` says, per task, which
columns the answer gives:

    reconstruction-error   error, anomaly [, error_<feature> for each feature with per_feature]
    encode                 latent_0 .. latent_<k-1> [, log_var_0 .. for a vae]   (rows models only)
    denoise                <feature> for each feature: the reconstruction, in raw units

Values are checked here before the core sees them, so that a bad value is reported with the row it is in
(by its keep columns, or its feature values); the core checks them again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from service.core.inputs import FLOAT32_MAX
from service.core.runtime import OnnxModel
from service.core.tasks import TASKS, Answer, NoOptions, ScoreOptions, Task, TaskOptions
from service.errors import quote

__all__ = [
    "BULK_TASKS",
    "BulkInputError",
    "BulkTask",
    "ColumnPlan",
    "OutputColumn",
    "feature_matrix",
    "plan_columns",
]

SHOWN_VALUES = 6
"""How many of a row's values an error message quotes to say which row it means."""


class BulkInputError(Exception):
    """The table does not fit the model or the job's options; the message says which column or row, and
    what was expected."""


@dataclass(frozen=True)
class OutputColumn:
    """One column of the answer: taken from `tensor` of the core's `Answer` (column `index` of a 2-D one)."""

    name: str
    tensor: str
    index: int | None
    type: pa.DataType


Outputs = Callable[[OnnxModel, tuple[str, ...], Any], list[OutputColumn]]


@dataclass(frozen=True)
class BulkTask:
    """A task a bulk job can run: the core's task, and the columns its answer gives."""

    name: str
    core: Task[Any]
    outputs: Outputs
    """(model, feature labels, options) -> the answer's columns, in order."""
    series: bool
    """Whether a series model answers it per time step (so per input row)."""

    def options(self, given: TaskOptions | None) -> TaskOptions:
        """`given`, or the task's defaults; BulkInputError for options of another task."""
        kind: type[TaskOptions] = self.core.options
        if given is None:
            return kind()
        if not isinstance(given, kind):
            raise BulkInputError(f"task {self.name} takes {kind.__name__}, got {type(given).__name__}")
        return given


def _score_columns(model: OnnxModel, labels: tuple[str, ...], options: ScoreOptions) -> list[OutputColumn]:
    columns = [
        OutputColumn("error", "errors", None, pa.float32()),
        OutputColumn("anomaly", "anomalies", None, pa.bool_()),
    ]
    if options.per_feature:
        columns += [
            OutputColumn(f"error_{label}", "feature_errors", j, pa.float32())
            for j, label in enumerate(labels)
        ]
    return columns


def _encode_columns(model: OnnxModel, labels: tuple[str, ...], options: NoOptions) -> list[OutputColumn]:
    columns = [OutputColumn(f"latent_{i}", "latents", i, pa.float32()) for i in range(model.latent_dim)]
    if "log_var" in model.encoder_outputs:
        columns += [OutputColumn(f"log_var_{i}", "log_var", i, pa.float32()) for i in range(model.latent_dim)]
    return columns


def _denoise_columns(model: OnnxModel, labels: tuple[str, ...], options: NoOptions) -> list[OutputColumn]:
    return [OutputColumn(label, "outputs", j, pa.float32()) for j, label in enumerate(labels)]


BULK_TASKS: dict[str, BulkTask] = {
    task.name: task
    for task in [
        BulkTask("reconstruction-error", TASKS["reconstruction_error"], _score_columns, series=True),
        # A series model encodes windows, one code per window rather than per step: nothing to put in a row.
        BulkTask("encode", TASKS["encode"], _encode_columns, series=False),
        BulkTask("denoise", TASKS["denoise"], _denoise_columns, series=True),
    ]
}


@dataclass(frozen=True)
class ColumnPlan:
    """Which columns of a table are what, for one model and task."""

    keep: tuple[str, ...]
    """Carried through as they came, first in the answer (for a series: the key and time column first)."""
    features: tuple[str, ...]
    """The table's feature columns, in the order the model takes them."""
    labels: tuple[str, ...]
    """What the answer calls each feature: the model's names, else the table's column names."""
    outputs: tuple[OutputColumn, ...]
    series_key: str | None = None
    time_column: str | None = None

    def output_schema(self, table: pa.Schema) -> pa.Schema:
        kept = [table.field(name) for name in self.keep]
        return pa.schema(kept + [pa.field(c.name, c.type) for c in self.outputs])

    def answer_table(self, kept: pa.Table, answer: Answer | None) -> pa.Table:
        """The kept columns beside the answer's columns (empty ones when `answer` is None: no rows)."""
        arrays: list[Any] = [kept.column(name) for name in self.keep]
        for column in self.outputs:
            if answer is None:
                arrays.append(pa.array([], type=column.type))
                continue
            values = answer.tensors[column.tensor]
            values = values if column.index is None else values[:, column.index]
            arrays.append(pa.array(np.ascontiguousarray(values), type=column.type))
        return pa.table(arrays, names=[*self.keep, *(c.name for c in self.outputs)])


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def plan_columns(
    model: OnnxModel,
    task: BulkTask,
    options: TaskOptions,
    schema: Mapping[str, pa.DataType],
    keep: Sequence[str] = (),
    series_key: str | None = None,
    time_column: str | None = None,
) -> ColumnPlan:
    """Check a table's columns (name -> type, in table order) against the model and the job; BulkInputError
    naming the column and what was expected."""
    meta = model.metadata
    columns = list(schema)
    missing = [c for c in [*keep, *([series_key] if series_key else [])] if c not in schema]
    if missing:
        raise BulkInputError(f"the input has no column {_names(missing)}; its columns are {_names(columns)}")
    if len(set(keep)) != len(keep):
        raise BulkInputError(f"--keep-columns names a column twice: {', '.join(keep)}")
    ordered: list[str] = []
    if meta.series is not None:
        if not task.series:
            raise BulkInputError(
                f"model {meta.name} is a series model: {task.name} gives one answer per window, not per time "
                "step; bulk jobs answer per row, so use reconstruction-error or denoise"
            )
        if series_key is None:
            raise BulkInputError(
                f"model {meta.name} is a series model: give --series-key, the column that says which series "
                "each row belongs to"
            )
        time_column = time_column or meta.series.time_column
        if time_column is None:
            raise BulkInputError(
                f"model {meta.name} has no time column in its metadata: give --time-column, the column that "
                "orders each series' steps"
            )
        if time_column not in schema:
            raise BulkInputError(
                f"the input has no time column {time_column!r}; its columns are {_names(columns)}"
            )
        ordered = [series_key, time_column]
    elif series_key is not None or time_column is not None:
        raise BulkInputError(
            f"model {meta.name} takes {meta.kind}, not series; --series-key and --time-column are for "
            "series models"
        )
    kept = tuple(dict.fromkeys([*ordered, *keep]))
    if meta.feature_names is not None:
        # Named features are found by name, so a kept column may be one of them too.
        names = list(meta.feature_names)
        lacking = [n for n in names if n not in schema or n in ordered]
        unknown = [c for c in columns if c not in names and c not in kept]
        if lacking or unknown:
            parts = ([f"lacks the model's columns {_names(lacking)}"] if lacking else []) + (
                [f"has columns {_names(unknown)} that are neither the model's nor in --keep-columns"]
                if unknown
                else []
            )
            raise BulkInputError(
                "the input " + " and ".join(parts) + f"; model {meta.name} takes {_names(names)}"
            )
        features, labels = names, tuple(names)
    else:
        features = [c for c in columns if c not in kept]
        width = meta.series.channels if meta.series else meta.input_dim
        if len(features) != width:
            raise BulkInputError(
                f"model {meta.name} takes {width} unnamed features, taken in column order, but the input has "
                f"{len(features)} columns besides the kept ones ({_names(features)}); list the others in "
                "--keep-columns"
            )
        labels = tuple(features)
    for name in features:
        if not _numeric(schema[name]):
            raise BulkInputError(
                f"feature column {name!r} holds {schema[name]}; expected numbers (a column to carry through "
                "belongs in --keep-columns)"
            )
    outputs = tuple(task.outputs(model, labels, options))
    clashes = [c.name for c in outputs if c.name in kept]
    if clashes:
        raise BulkInputError(
            f"kept column {_names(clashes)} would clash with the answer's column of that name; rename it "
            "first"
        )
    return ColumnPlan(kept, tuple(features), labels, outputs, series_key, time_column)


def _row(table: pa.Table, plan: ColumnPlan, i: int) -> str:
    """Which row `i` of `table` is, for a message: its kept values, else its feature values."""
    shown = plan.keep or plan.features
    values = ", ".join(f"{name}={quote(table.column(name)[i].as_py())}" for name in shown[:SHOWN_VALUES])
    return f"the row with {values}" + (", ..." if len(shown) > SHOWN_VALUES else "")


def feature_matrix(table: pa.Table, plan: ColumnPlan) -> dict[str, np.ndarray[Any, Any]]:
    """The feature columns as float64 arrays by name (model order); BulkInputError for an empty value, NaN,
    infinity or a number outside float32, naming the row."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for name in plan.features:
        column = table.column(name)
        if column.null_count:
            i = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise BulkInputError(f"feature {name!r} is empty in {_row(table, plan, i)}; expected a number")
        values = column.cast(pa.float64()).to_numpy()
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "outside the float32 range" if np.isfinite(values[i]) else "not finite"
            raise BulkInputError(
                f"feature {name!r} is {values[i]} ({what}) in {_row(table, plan, i)}; expected finite numbers"
            )
        arrays[name] = values
    return arrays
