"""The tasks a request can ask of a model, whatever its protocol: one entry each in `TASKS`.

A task declares what it takes (samples, latents or nothing), its options (a pydantic model every protocol
validates its own fields into), how it runs (`plan`: a row-wise function of the graphs and the key that says
which calls may share one micro-batched run) and how the run's rows become an `Answer` (named tensors and
facts, in the request's own layout: per time step for a series, image-shaped for images). Adding a task is
one entry here and one route per protocol.

    encode                samples -> latents [, log_var]       (one code per window for a series)
    decode                latents -> outputs
    denoise               samples -> outputs                   (the reconstructed series for a series)
    reconstruction_error  samples -> errors, anomalies, ...    (per time step for a series)
    sample                nothing -> outputs                   (generative models)
    outputs               samples -> the fused graph's outputs by name (the Open Inference Protocol's view)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.batching import Rows
from service.core.calibration import choose_threshold
from service.core.inputs import Samples, step_values
from service.core.runtime import Float32Array, OnnxModel
from service.core.windows import WHOLE_WINDOW_RULES
from service.errors import InvalidInputError

__all__ = [
    "TASKS",
    "Answer",
    "Call",
    "NoOptions",
    "OutputsOptions",
    "RunPlan",
    "SampleOptions",
    "ScoreOptions",
    "Task",
    "TaskOptions",
]

TOP_FEATURES = 3
"""How many of a flagged row's largest per-feature errors `reconstruction_error` names."""


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(TaskOptions):
    pass


class ScoreOptions(TaskOptions):
    threshold: float | None = Field(
        default=None, allow_inf_nan=False, description="Explicit anomaly threshold on the chosen score."
    )
    false_alarm_rate: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Target false-alarm rate on normal data; mapped to the model's calibrated threshold "
        "for that rate (an upper confidence bound set at training). Mutually exclusive with threshold.",
    )
    score: str | None = Field(
        default=None, description="One of the model's scores (`mse`, `neg_elbo`, ...); default the model's."
    )
    per_feature: bool = Field(
        default=False,
        description="Also answer each value's squared error (per feature, per pixel, or per step and "
        "channel for a series), keyed by column name when the request was.",
    )

    @model_validator(mode="after")
    def _one_threshold_source(self) -> ScoreOptions:
        if self.threshold is not None and self.false_alarm_rate is not None:
            raise ValueError("give either threshold or false_alarm_rate, not both")
        return self


class SampleOptions(TaskOptions):
    n: int = Field(default=1, ge=1, description="How many samples; at most AE_MAX_BATCH_ROWS.")
    seed: int | None = Field(
        default=None, ge=0, description="Random seed (>= 0); the same seed gives the same samples."
    )


class OutputsOptions(TaskOptions):
    outputs: tuple[str, ...] = ()
    """The fused graph's outputs to run; empty for all of them."""


O_co = TypeVar("O_co", bound=TaskOptions)
RowFn = Callable[[OnnxModel, Float32Array], Rows]


@dataclass(frozen=True)
class RunPlan:
    """How a call runs: a row-wise function of (model, batch), and the key of calls that may share a run
    (None: never batched, e.g. random samples)."""

    fn: RowFn
    key: str | None
    rows: int | None = None
    """Rows the run gives when it takes no input (sample)."""


@dataclass(frozen=True)
class Call(Generic[O_co]):
    """A request as the core sees it: a task on a model version, its options and its input."""

    task: Task[O_co]
    model: OnnxModel
    options: O_co
    samples: Samples | None = None

    def run_now(self) -> Answer:
        """Run this call here and now, on the calling thread: no batching, no metrics (for bulk scoring and
        scripts; the service runs calls through its executor)."""
        plan = self.task.plan(self.model, self.options)
        x = self.samples.x if self.samples is not None else None
        return self.task.answer(self, plan.fn(self.model, x))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Answer:
    """What a task answers: named tensors (the first is what a binary answer carries) and facts."""

    model: str
    version: int
    tensors: dict[str, np.ndarray[Any, Any]]
    facts: dict[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] | None = None
    """Column names of the per-value tensors, when the request came named (answer them keyed)."""

    @property
    def primary(self) -> str:
        return next(iter(self.tensors))


@dataclass(frozen=True)
class Task(Generic[O_co]):
    name: str
    takes: Literal["samples", "latents", "nothing"]
    options: type[O_co]
    plan: Callable[[OnnxModel, O_co], RunPlan]
    answer: Callable[[Call[O_co], Rows], Answer]
    doc: str = ""


def _answer(call: Call[Any], tensors: dict[str, Any], facts: dict[str, Any] | None = None) -> Answer:
    meta = call.model.metadata
    names = call.samples.names if call.samples is not None else None
    return Answer(meta.name, meta.version, tensors, facts or {}, names)


# --- encode / decode / denoise / sample -------------------------------------------------------------------


def _encode_rows(model: OnnxModel, x: Float32Array) -> Rows:
    encoded = model.encode(x)
    return encoded.latent, encoded.log_var


_ENCODE_PLAN = RunPlan(_encode_rows, "encode")
"""/encode's run, shared by the Open Inference Protocol's requests for codes alone (`_outputs_plan`)."""


def _encode_answer(call: Call[NoOptions], rows: Rows) -> Answer:
    latent, log_var = rows
    tensors: dict[str, Any] = {"latents": latent}
    if log_var is not None:
        tensors["log_var"] = log_var
    return _answer(call, tensors)


def _decode_rows(model: OnnxModel, z: Float32Array) -> Rows:
    return (model.decode(z),)


def _denoise_rows(model: OnnxModel, x: Float32Array) -> Rows:
    return (model.denoise(x),)


def _outputs_as_sent(call: Call[Any], rows: Rows) -> Answer:
    (outputs,) = rows
    assert outputs is not None and call.samples is not None
    samples = call.samples
    if samples.steps is not None:
        return _answer(call, {"outputs": step_values(call.model, samples, outputs, scores=False)})
    return _answer(call, {"outputs": samples.as_sent(outputs)})


def _decoded(call: Call[Any], rows: Rows) -> Answer:
    (outputs,) = rows
    return _answer(call, {"outputs": outputs})


def _sample_plan(model: OnnxModel, options: SampleOptions) -> RunPlan:
    def run(m: OnnxModel, _: Float32Array) -> Rows:
        return (m.sample(options.n, options.seed),)

    return RunPlan(run, None, options.n)


# --- reconstruction_error ---------------------------------------------------------------------------------


def _score_name(model: OnnxModel, options: ScoreOptions) -> str:
    meta = model.metadata
    score = options.score or meta.default_score
    if score not in meta.scores:
        raise InvalidInputError(
            f"model {meta.name} version {meta.version} has no score {score!r}; expected one of {meta.scores}"
        )
    return score


def _score_plan(model: OnnxModel, options: ScoreOptions) -> RunPlan:
    output = model.metadata.score_output(_score_name(model, options))
    # A series scores each time step from its windows' per-step errors, so it always needs them.
    per_value = options.per_feature or model.metadata.series is not None
    wanted = [output, "feature_errors"] if per_value else [output]

    def run(m: OnnxModel, x: Float32Array) -> Rows:
        out = m.run_model(x, wanted)
        return out[output], out.get("feature_errors")

    return RunPlan(run, "score:" + ",".join(wanted))


def _series_scores(call: Call[ScoreOptions], score: str, values: Any, per_value: Any) -> dict[str, Any]:
    """Per-step errors of a cut series (or each window's newest step, for windows sent as they are)."""
    model, samples = call.model, call.samples
    assert samples is not None and per_value is not None
    spec = model.metadata.series
    assert spec is not None
    # (n, window): for mse, each position's error over channels; another score is the window's own.
    per_step = per_value.mean(axis=2) if score == "mse" else np.repeat(values[:, None], spec.window, axis=1)
    out: dict[str, Any] = {}
    if samples.steps is not None:
        out["errors"] = step_values(model, samples, per_step).astype(np.float32)
        if call.options.per_feature:
            out["feature_errors"] = step_values(model, samples, per_value)
    else:
        # A window sent alone is the only one covering its newest step, whose score it answers: the window's
        # mean under the rules that score whole windows, else the step's own error. Its per-channel errors
        # (n, channels) are those the score averages.
        whole = spec.step_score in WHOLE_WINDOW_RULES
        newest = per_step.mean(axis=1) if whole else per_step[:, -1]
        out["errors"] = newest.astype(np.float32)
        if call.options.per_feature:
            out["feature_errors"] = np.ascontiguousarray(
                per_value.mean(axis=1) if whole else per_value[:, -1]
            )
    out["window_errors"] = values
    return out


def _top_features(names: tuple[str, ...], errors: Any, flagged: Any) -> list[Any]:
    """For each row: its TOP_FEATURES largest per-feature errors as [name, error] when flagged, else None."""
    top = np.argsort(-errors, axis=1)[:, :TOP_FEATURES]
    return [
        [[names[j], float(errors[i, j])] for j in top[i]] if flagged[i] else None for i in range(len(errors))
    ]


def _score_answer(call: Call[ScoreOptions], rows: Rows) -> Answer:
    values, per_value = rows
    assert values is not None
    model, options, samples = call.model, call.options, call.samples
    assert samples is not None
    meta = model.metadata
    score = _score_name(model, options)
    choice = choose_threshold(meta, score, options.threshold, options.false_alarm_rate)
    if meta.series is not None:
        tensors = _series_scores(call, score, values, per_value)
    else:
        tensors = {"errors": values}
        if options.per_feature:
            assert per_value is not None
            tensors["feature_errors"] = samples.as_sent(per_value)
    errors = tensors["errors"]
    anomalies = np.zeros(errors.shape, dtype=bool) if choice.threshold is None else errors > choice.threshold
    tensors = {"errors": errors, "anomalies": anomalies} | {k: v for k, v in tensors.items() if k != "errors"}
    facts: dict[str, Any] = {
        "score": score,
        "threshold": choice.threshold,
        "threshold_source": choice.source,
        "false_alarm_rate": choice.false_alarm_rate,
    }
    if meta.feature_names is not None and meta.series is None and per_value is not None:
        facts["top_features"] = _top_features(tuple(meta.feature_names), per_value, anomalies)
    return _answer(call, tensors, facts)


# --- outputs (the Open Inference Protocol's view: graph outputs by name) ------------------------------------


def _codes_only(model: OnnxModel, names: list[str]) -> bool:
    return set(names) <= set(model.encoder_outputs)


def _outputs_plan(model: OnnxModel, options: OutputsOptions) -> RunPlan:
    available = model.model_outputs
    names = list(options.outputs) or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidInputError(f"unknown outputs {unknown}; expected some of {available}")
    if _codes_only(model, names):
        # Codes alone need only the encoder graph, about half the fused graph's work: /encode's own run, so
        # that concurrent requests for codes share a micro-batch whichever protocol they came by.
        return _ENCODE_PLAN

    def run(m: OnnxModel, x: Float32Array) -> Rows:
        out = m.run_model(x, names)
        return tuple(out[n] for n in names)

    return RunPlan(run, "outputs:" + ",".join(names))


def _outputs_answer(call: Call[OutputsOptions], rows: Rows) -> Answer:
    names = list(call.options.outputs) or call.model.model_outputs
    if _codes_only(call.model, names):
        latent, log_var = rows
        by_name = {"latent": latent, "log_var": log_var}
        return _answer(call, {n: by_name[n] for n in names})
    return _answer(call, {n: r for n, r in zip(names, rows, strict=True)})


def _fixed(fn: RowFn, key: str) -> Callable[[OnnxModel, Any], RunPlan]:
    plan = RunPlan(fn, key)
    return lambda model, options: plan


_TASK_LIST: list[Task[Any]] = [
    Task(
        "encode",
        "samples",
        NoOptions,
        lambda model, options: _ENCODE_PLAN,
        _encode_answer,
        "Encode samples into latents (for a vae: the mean, plus log_var).",
    ),
    Task(
        "decode",
        "latents",
        NoOptions,
        _fixed(_decode_rows, "decode"),
        _decoded,
        "Decode latents into samples (raw units).",
    ),
    Task(
        "denoise",
        "samples",
        NoOptions,
        _fixed(_denoise_rows, "denoise"),
        _outputs_as_sent,
        "Reconstruct samples (denoising model: the clean estimate; vae: the decoded mean).",
    ),
    Task(
        "reconstruction_error",
        "samples",
        ScoreOptions,
        _score_plan,
        _score_answer,
        "Score samples by reconstruction error and flag those above the threshold as anomalies.",
    ),
    Task(
        "sample",
        "nothing",
        SampleOptions,
        _sample_plan,
        _decoded,
        "Generate samples by decoding z ~ N(0, I) (generative models only; `seed` makes them reproducible).",
    ),
    Task("outputs", "samples", OutputsOptions, _outputs_plan, _outputs_answer, "Run the fused graph."),
]
TASKS: dict[str, Task[Any]] = {task.name: task for task in _TASK_LIST}
