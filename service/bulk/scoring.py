"""Bulk scoring on Ray Data: `score_dataset(ds, model)` -> a Dataset of the answers, one row per input row.

Ray Data's pattern for batch inference: `map_batches` with a callable class, so that each actor of a pool
loads the model once and scores many batches. Each actor holds one `OnnxModel` (one ONNX Runtime thread, one
CPU) and runs every batch through the core's task (`Call.run_now`), exactly as the service does for one
request: the normalisation inside the graphs, the scores, the calibrated threshold. A series model is scored
per series: `groupby(series key).map_groups` hands each actor one whole series, which it sorts by time, cuts
into windows and answers per time step.

The model's files travel in the object store (`ModelFiles`), so the workers need the package installed but
no access to the model repository. Ray retries the tasks of a lost worker node (and restarts its actors);
the retried task scores its rows again, so each row is answered exactly once.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.context import ShuffleStrategy

from service.bulk.columns import (
    BULK_TASKS,
    BulkInputError,
    BulkTask,
    ColumnPlan,
    feature_matrix,
    plan_columns,
)
from service.contract import METADATA_FILE
from service.core.inputs import Samples, from_array, from_columns
from service.core.registry import ModelRegistry
from service.core.repository import parse_version
from service.core.runtime import OnnxModel
from service.core.tasks import Call, TaskOptions

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "MIN_CLUSTER_CPUS",
    "ModelFiles",
    "Scorer",
    "SeriesScorer",
    "load_model",
    "score_dataset",
]

DEFAULT_BATCH_ROWS = 16384
"""Rows per model run: large enough that Ray's per-batch cost is small beside ONNX Runtime's."""
MIN_CLUSTER_CPUS = 2
"""Below this a job cannot run: its actors would hold every CPU its read and write tasks wait for."""
_NO_ROW_LIMIT = sys.maxsize
"""The service caps rows per request (AE_MAX_BATCH_ROWS); a bulk batch is already bounded by its size."""


def load_model(models_dir: Path, spec: str) -> OnnxModel:
    """`NAME` or `NAME:VERSION` from a model repository (any layout the service reads), loaded and warmed."""
    name, _, version_text = spec.partition(":")
    version = parse_version(version_text) if version_text else None
    if not name or (version_text and version is None):
        raise BulkInputError(f"--model must be NAME or NAME:VERSION with a positive version, got {spec!r}")
    if not models_dir.is_dir():
        raise BulkInputError(f"the model repository {models_dir} is not a folder")
    registry = ModelRegistry(models_dir, providers=["CPUExecutionProvider"])
    return registry.load().get(name, version)


@dataclass(frozen=True)
class ModelFiles:
    """One model version's files (metadata and graphs), to load on a worker that cannot see the repository."""

    files: Mapping[str, bytes] = field(repr=False)
    label: str = ""

    @classmethod
    def of(cls, model: OnnxModel) -> ModelFiles:
        names = [METADATA_FILE, *(graph.path for graph in model.metadata.graphs.values())]
        meta = model.metadata
        return cls({n: (model.directory / n).read_bytes() for n in names}, f"{meta.name}/{meta.version}")

    def load(self) -> OnnxModel:
        """Write the files to a private folder and load them (the sha256 checks included), then forget them:
        ONNX Runtime holds the graphs in memory."""
        with self.opened() as model:
            return model

    @contextlib.contextmanager
    def opened(self) -> Iterator[OnnxModel]:
        """The model loaded from a private folder that holds its files until the block ends (for a caller that
        reads them again, as `score_dataset` does to ship them to its actors)."""
        with tempfile.TemporaryDirectory(prefix="ae-bulk-") as folder:
            for name, data in self.files.items():
                (Path(folder) / name).write_bytes(data)
            model = OnnxModel.load(Path(folder), providers=["CPUExecutionProvider"])
            model.warm_up()
            yield model


class Scorer:
    """Ray Data's callable class for rows models: one model per actor, one core call per batch."""

    def __init__(self, files: Any, task: str, options: TaskOptions, plan: ColumnPlan) -> None:
        # `files` is an ObjectRef to ModelFiles: small constructor arguments survive actor restarts.
        self.model = ray.get(files).load() if isinstance(files, ray.ObjectRef) else files.load()
        self.task: BulkTask = BULK_TASKS[task]
        self.options = options
        self.plan = plan

    def __call__(self, table: pa.Table) -> pa.Table:
        if table.num_rows == 0:
            return self.plan.answer_table(table, None)
        return self.plan.answer_table(table, self._answer(table))

    def _answer(self, table: pa.Table) -> Any:
        columns = feature_matrix(table, self.plan)
        samples = self._samples(columns)
        return Call(self.task.core, self.model, self.options, samples).run_now()

    def _samples(self, columns: dict[str, np.ndarray[Any, Any]]) -> Samples:
        """The core builds the graphs' batch, by the model's kind: named columns by name, else in order."""
        if self.model.metadata.feature_names is not None:
            return from_columns(self.model, columns, _NO_ROW_LIMIT)
        return from_array(self.model, np.stack(list(columns.values()), axis=1), "inputs", _NO_ROW_LIMIT)


class SeriesScorer(Scorer):
    """Ray Data's callable class for series models: called with one whole series, answers per time step."""

    def __call__(self, table: pa.Table) -> pa.Table:
        plan = self.plan
        assert plan.series_key is not None and plan.time_column is not None
        if table.num_rows == 0:
            return plan.answer_table(table, None)
        table = table.sort_by(plan.time_column)
        key = table.column(plan.series_key)[0].as_py()
        times = table.column(plan.time_column)
        if times.null_count:
            raise BulkInputError(f"series {plan.series_key}={key!r} has rows without a {plan.time_column!r}")
        steps = times.to_numpy(zero_copy_only=False)
        repeats = np.flatnonzero(steps[1:] == steps[:-1])
        if repeats.size:
            raise BulkInputError(
                f"series {plan.series_key}={key!r} has two steps at {plan.time_column}="
                f"{times[int(repeats[0])].as_py()!r}; expected one row per time"
            )
        spec = self.model.metadata.series
        assert spec is not None
        if table.num_rows < spec.window:
            raise BulkInputError(
                f"series {plan.series_key}={key!r} has {table.num_rows} steps; model "
                f"{self.model.metadata.name} needs at least its window of {spec.window}"
            )
        return plan.answer_table(table, self._answer(table))


def score_dataset(
    ds: ray.data.Dataset,
    model: OnnxModel,
    *,
    task: str = "reconstruction-error",
    options: TaskOptions | None = None,
    keep_columns: Sequence[str] = (),
    series_key: str | None = None,
    time_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_ROWS,
    concurrency: int | None = None,
) -> ray.data.Dataset:
    """The answers of `model` to every row of `ds`, lazily: the kept columns, then the answer's columns.

    `task` is one of `BULK_TASKS`; `options` its options (`ScoreOptions(per_feature=True)` for per-feature
    errors, a threshold or a false-alarm rate). A series model needs `series_key` (and `time_column` when its
    metadata has none). `concurrency` actors (default: one per CPU of the cluster) score in parallel.
    """
    if task not in BULK_TASKS:
        raise BulkInputError(f"unknown task {task!r}; expected one of {', '.join(BULK_TASKS)}")
    bulk_task = BULK_TASKS[task]
    chosen = bulk_task.options(options)
    schema = ds.schema()
    if schema is None:
        raise BulkInputError("the input has no schema (an empty dataset?); expected a table with columns")
    types = dict(zip(schema.names, schema.types, strict=True))
    plan = plan_columns(model, bulk_task, chosen, types, keep_columns, series_key, time_column)
    if batch_size < 1:
        raise BulkInputError(f"the batch size must be at least 1, got {batch_size}")
    cpus = float(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    if cpus < MIN_CLUSTER_CPUS:
        # Each actor holds a CPU for as long as the job runs, and the read and write tasks need one too: on a
        # single CPU the job would wait for ever.
        raise BulkInputError(
            f"the Ray cluster has {cpus:g} CPUs; bulk scoring needs at least {MIN_CLUSTER_CPUS} (one for the "
            "scoring actors, one for reading and writing)"
        )
    actors = concurrency or int(cpus)
    compute = ray.data.ActorPoolStrategy(min_size=1, max_size=actors)
    kwargs = {"files": ray.put(ModelFiles.of(model)), "task": task, "options": chosen, "plan": plan}
    if plan.series_key is not None:
        # The task-based sort shuffle: the default hash shuffle runs its aggregators as long-lived actors,
        # which can wait for ever for the CPUs that the scoring actors hold on a small cluster. Its tasks
        # release their CPU when done. As many partitions as actors: Ray's default (200) is for far bigger
        # clusters.
        ds.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        return ds.groupby(plan.series_key, num_partitions=actors).map_groups(
            SeriesScorer, compute=compute, batch_format="pyarrow", fn_constructor_kwargs=kwargs, num_cpus=1
        )
    return ds.map_batches(
        Scorer,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        fn_constructor_kwargs=kwargs,
        num_cpus=1,
    )
