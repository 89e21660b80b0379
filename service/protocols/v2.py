"""The Open Inference Protocol (KServe v2) as the core sees it, shared by its HTTP and gRPC bindings.

A model version offers one input `x`, shaped like the core takes samples (`[-1, *sample shape]`; an image
model also takes `[-1, height, width]` or `[-1, channels, height, width]`, a series model one series
`[steps, channels]`), or, for a model with column names, one 1-D input per column. Its outputs are the fused
graph's (`latent`, `reconstruction`, `feature_errors`, `error`, scores such as `neg_elbo`), and for a series
model `step_error` and `step_anomaly` (one per time step, with the default threshold or the request's
`threshold` / `false_alarm_rate` parameters): the numbers /reconstruction-error gives. A request without
`outputs` gets every graph output. The bindings decode their wire formats into `V2Input`s, call `infer`, and
encode what it answers; errors are the service's, the bindings map them to the protocol's statuses.
Also here: model metadata, the model configuration Triton clients read (`config`) and the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import service
from service.core.inputs import Samples, from_array, from_columns
from service.core.registry import parse_version
from service.core.runtime import OnnxModel
from service.core.stats import ModelStats
from service.core.tasks import TASKS, Call, OutputsOptions, ScoreOptions
from service.errors import BadRequestError, InvalidInputError, ServiceError, quote
from service.state import AppState

__all__ = [
    "DATATYPES",
    "EXTENSIONS",
    "SERVER_NAME",
    "V2Input",
    "V2Output",
    "check_inputs",
    "check_shape",
    "infer",
    "input_dtype",
    "model_config",
    "model_metadata",
    "output_shapes",
    "protocol_status",
    "server_metadata",
    "statistics",
    "version_of",
]

SERVER_NAME = "autoencoder-serving"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
INPUT = "x"

# numpy dtype of each v2 datatype that can carry real numbers; BOOL, BYTES and BF16 are refused as inputs.
DATATYPES: dict[str, np.dtype[Any]] = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
_STEP_OUTPUTS = {"step_error": "FP32", "step_anomaly": "BOOL"}


@dataclass(frozen=True)
class V2Input:
    name: str
    array: np.ndarray[Any, Any]


@dataclass(frozen=True)
class V2Output:
    name: str
    datatype: str
    array: np.ndarray[Any, Any]


def protocol_status(exc: ServiceError) -> int:
    """The protocol answers request errors with 400; the rest keep the service's status (404, 413, 503...)."""
    return 400 if isinstance(exc, InvalidInputError) else exc.status_code


def version_of(text: str | None) -> int | None:
    """A version path segment or field: ASCII digits without a leading zero; 400 otherwise."""
    if text is None or text == "":
        return None
    version = parse_version(text)
    if version is None:
        raise BadRequestError(f"model version {quote(text)} is not a positive integer (ASCII digits, e.g. 1)")
    return version


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": service.__version__, "extensions": EXTENSIONS}


# --- model description ------------------------------------------------------------------------------------


def _input_shape(model: OnnxModel) -> list[int]:
    return [-1, *model.sample_shape]


def output_shapes(model: OnnxModel) -> dict[str, tuple[str, list[int]]]:
    """Every output: (datatype, shape) with -1 for a variable dimension."""
    sample = list(model.sample_shape)
    per_name = {
        "latent": [-1, model.latent_dim],
        "log_var": [-1, model.latent_dim],
        "reconstruction": [-1, *sample],
        "feature_errors": [-1, *sample],
    }
    shapes = {n: ("FP32", per_name.get(n, [-1])) for n in model.model_outputs}
    if model.metadata.series is not None:
        shapes |= {n: (t, [-1]) for n, t in _STEP_OUTPUTS.items()}
    return shapes


def _accepted(model: OnnxModel) -> list[list[int]]:
    """The input shapes `x` may have, -1 for the batch (or the steps of a series)."""
    meta = model.metadata
    if meta.series is not None:
        return [[-1, meta.series.window, meta.series.channels], [-1, meta.series.channels]]
    shapes = [_input_shape(model)]
    if meta.image is not None:
        c, h, w = meta.image.channels, meta.image.height, meta.image.width
        shapes += [s for s in ([-1, meta.input_dim], [-1, h, w], [-1, c, h, w]) if s not in shapes]
        if c != 1:
            shapes.remove([-1, h, w])
    return shapes


def model_metadata(model: OnnxModel, versions: Sequence[int]) -> dict[str, Any]:
    meta = model.metadata
    inputs = [{"name": INPUT, "datatype": "FP32", "shape": _input_shape(model)}]
    if meta.feature_names is not None and meta.series is None:
        inputs += [{"name": n, "datatype": "FP32", "shape": [-1]} for n in meta.feature_names]
    return {
        "name": meta.name,
        "versions": [str(v) for v in versions],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": [{"name": n, "datatype": t, "shape": s} for n, (t, s) in output_shapes(model).items()],
    }


def model_config(model: OnnxModel, max_batch_rows: int) -> dict[str, Any]:
    """Triton's model configuration (what perf_analyzer and Triton clients read): dims without the batch."""
    meta = model.metadata
    return {
        "name": meta.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch_rows,
        "input": [{"name": INPUT, "data_type": "TYPE_FP32", "dims": list(model.sample_shape)}],
        "output": [
            {"name": n, "data_type": f"TYPE_{t}", "dims": s[1:]} for n, (t, s) in output_shapes(model).items()
        ],
        "dynamic_batching": {},
        "parameters": {"kind": {"string_value": meta.kind}, "variant": {"string_value": meta.variant}},
    }


def _duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def statistics(stats: ModelStats) -> dict[str, Any]:
    """One version's counters in the statistics extension's shape."""
    return {
        "name": stats.name,
        "version": str(stats.version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success_count, stats.success_ns),
            "fail": _duration(stats.fail_count, stats.fail_ns),
            "queue": _duration(stats.success_count, stats.queue_ns),
            "compute_input": _duration(0, 0),
            "compute_infer": _duration(stats.execution_count, stats.compute_ns),
            "compute_output": _duration(0, 0),
            "cache_hit": _duration(0, 0),
            "cache_miss": _duration(0, 0),
        },
        "batch_stats": [],
    }


# --- inference --------------------------------------------------------------------------------------------


def input_dtype(name: str, datatype: object) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise InvalidInputError(
            f"input {name!r} has datatype {quote(datatype)}; expected FP32 (or another numeric type: "
            + ", ".join(DATATYPES)
            + ")"
        )
    return dtype


def check_shape(model: OnnxModel, name: str, shape: list[int], max_rows: int) -> None:
    """400 for an input shape the model cannot take, before any data is read."""
    meta = model.metadata
    if name != INPUT:
        if meta.feature_names is None or name not in meta.feature_names or meta.series is not None:
            raise BadRequestError(f"unknown input {name!r} for model {meta.name}; expected {INPUT!r}")
        if len(shape) != 1 and not (len(shape) == 2 and shape[1] == 1):
            raise InvalidInputError(f"input {name!r} has shape {shape}; expected [batch] (one column)")
        return
    accepted = _accepted(model)
    if not any(
        len(a) == len(shape) and all(x in (-1, y) for x, y in zip(a, shape, strict=True)) for a in accepted
    ):
        options = " or ".join(
            "[" + ", ".join("batch" if d == -1 else str(d) for d in a) + "]" for a in accepted
        )
        raise InvalidInputError(f"input {name!r} has shape {shape}; expected {options}")


def check_inputs(model: OnnxModel, names: Sequence[str]) -> None:
    """400 unless the inputs are `x` alone, or (for a model with column names) one per column."""
    meta = model.metadata
    if len(names) == 1 and names[0] == INPUT:
        return
    if meta.feature_names is None or meta.series is not None or INPUT in names or len(names) < 2:
        if len(names) == 1:
            raise BadRequestError(f"unknown input {names[0]!r} for model {meta.name}; expected {INPUT!r}")
        raise BadRequestError(
            f"`inputs` must be a list of exactly one tensor; expected "
            f'[{{"name": "{INPUT}", "datatype": "FP32", "shape": {_input_shape(model)}, "data": [...]}}]'
        )


def _samples(model: OnnxModel, inputs: Sequence[V2Input], max_rows: int) -> Samples:
    check_inputs(model, [i.name for i in inputs])
    if len(inputs) == 1 and inputs[0].name == INPUT:
        return from_array(model, inputs[0].array, f"input {INPUT!r}", max_rows)
    return from_columns(model, {i.name: i.array.reshape(-1) for i in inputs}, max_rows)


async def infer(
    state: AppState,
    model: OnnxModel,
    inputs: Sequence[V2Input],
    outputs: Sequence[str] | None,
    parameters: dict[str, Any],
) -> list[V2Output]:
    """Run a v2 request through the core: the graph outputs asked for, and per-step ones for a series."""
    max_rows = state.settings.max_batch_rows
    samples = _samples(model, inputs, max_rows)
    available = output_shapes(model)
    wanted = list(outputs) if outputs else list(model.model_outputs)
    for name in wanted:
        if name not in available:
            raise BadRequestError(
                f"unknown output {name!r} for model {model.metadata.name}; expected one of {list(available)}"
            )
    graph = [n for n in wanted if n not in _STEP_OUTPUTS]
    results: dict[str, np.ndarray[Any, Any]] = {}
    if graph:
        answer = await state.executor.run(
            Call(TASKS["outputs"], model, OutputsOptions(outputs=tuple(graph)), samples)
        )
        results |= answer.tensors
    if len(graph) < len(wanted):
        # Per step of a series sent whole; for windows sent as they are, each window's newest step.
        score = ScoreOptions.model_validate(
            {k: parameters[k] for k in ("threshold", "false_alarm_rate", "score") if k in parameters}
        )
        answer = await state.executor.run(Call(TASKS["reconstruction_error"], model, score, samples))
        results |= {"step_error": answer.tensors["errors"], "step_anomaly": answer.tensors["anomalies"]}
    return [V2Output(n, available[n][0], results[n]) for n in wanted]
