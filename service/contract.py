"""The model repository's contract: what training writes into `models/<name>/<version>/metadata.json`.

Training builds a `ModelMetadata` and writes it; the service reads and validates it. This module is the one
place the contract is defined. It depends on pydantic and the standard library only, so the training side can
import it without pulling in FastAPI or ONNX Runtime, and the service can import it without torch.

A model has an input `kind` (what one sample is) and an `architecture` (the network body that reads it):

- ``rows``   : a sample is a vector of `input_dim` named or numbered features (a table row).
- ``series`` : a sample is a window of `series.window` consecutive time steps of `series.channels` channels;
  the service cuts a longer series into windows itself (stride 1) and scores every time step.
- ``image``  : a sample is a `image.channels` x `image.height` x `image.width` image (channels first).

`input_shape` is one sample's shape as the graphs take it, after the batch axis: ``[input_dim]`` for rows and
for an MLP over flattened images, ``[window, channels]`` for series, ``[channels, height, width]`` for a
convolutional image body. The ONNX graphs all take raw values (normalisation is baked in) and answer in raw
units:

- ``encoder`` : ``x`` (batch, *input_shape) -> ``latent`` (batch, latent_dim) [+ ``log_var`` for the VAE]
- ``decoder`` : ``latent`` (batch, latent_dim) -> ``reconstruction`` (batch, *input_shape)
- ``model``   : ``x`` -> ``latent`` [+ ``log_var``], ``reconstruction`` (batch, *input_shape),
  ``feature_errors`` (batch, *input_shape), ``error`` (batch,) [+ further scores, e.g. ``neg_elbo``]

``feature_errors`` is the squared error of each value in the normalised space ((x - offset) / scale) and
``error`` is their mean: the per-sample reconstruction error. `score_outputs` names the fused graph's output
that carries each anomaly score (``mse`` -> ``error`` always).
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "METADATA_FILE",
    "SCHEMA_VERSION",
    "SCORE_OUTPUTS",
    "DataSummary",
    "GraphFile",
    "ImageSpec",
    "InputKind",
    "ModelMetadata",
    "Normalisation",
    "ScoreCalibration",
    "ScoreName",
    "SeriesSpec",
    "StepScore",
    "is_valid_name",
]

SCHEMA_VERSION: Literal[2] = 2
METADATA_FILE = "metadata.json"

# Model names become URL path segments and directory names: keep them boring.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)

GraphRole = Literal["encoder", "decoder", "model", "core"]
"""`core`, written only beside a memory bank: the fused graph without the bank's scores (`knn`, `combined`),
which every request that asks for none of them runs instead (ONNX Runtime runs all of a graph's nodes,
whatever outputs are fetched)."""
InputKind = Literal["rows", "series", "image"]
ScoreName = str
"""An anomaly score's name, e.g. `mse` or `neg_elbo`: letters, digits and `_`."""
SCORE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
StepScore = Literal["last", "window_mean", "covering_mean", "covering_max"]
"""How a series model makes one time step's score from its windows' per-step errors (see `SeriesSpec`)."""

SCORE_OUTPUTS: dict[ScoreName, str] = {"mse": "error", "neg_elbo": "neg_elbo"}
"""Default fused-graph outputs of the well-known scores, for metadata that does not list `score_outputs`."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraphFile(_Strict):
    """One ONNX file of a model version."""

    path: str
    """File name relative to the version directory."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex sha256 of the file; the service refuses a file that does not match."""
    inputs: list[str]
    """Graph input names, in order."""
    outputs: list[str]
    """Graph output names, in order."""

    @field_validator("path")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in {"", ".", ".."}:
            raise ValueError(
                f"graph path must be a plain file name inside the version directory, got {value!r}"
            )
        return value


class Normalisation(_Strict):
    """Per-feature affine normalisation baked into the graphs: normalised = (raw - offset) / scale."""

    kind: Literal["standard", "minmax", "robust", "identity"]
    """How offset and scale were fitted on the training rows."""
    offset: list[float]
    scale: list[float]
    """Strictly positive; a constant feature gets a scale of 1 rather than 0."""
    clip: float | None = Field(default=None, gt=0)
    """When set, normalised values are clipped to [-clip, clip] before the network (baked into the graphs)."""
    centred: list[int] = Field(default_factory=list)
    """Series: the channels (indices) read level-free. After the affine map each window's mean on such a
    channel is replaced by `level` (the channel's training mean, normalised), and the fused graph adds the
    window's own mean back to the reconstruction, so the network and the error see the channel's shape
    within the window and not its level: a slow drift (a temperature) raises no error. The decoder graph,
    given only a code, answers such channels at their training level."""
    level: list[float] = Field(default_factory=list)
    """The normalised training mean of each `centred` channel, in the same order."""

    @model_validator(mode="after")
    def _check(self) -> Normalisation:
        if len(self.offset) != len(self.scale):
            raise ValueError("normalisation offset and scale must have the same length")
        if any(not s > 0 for s in self.scale):
            raise ValueError("normalisation scale must be strictly positive")
        if len(self.level) != len(self.centred):
            raise ValueError("normalisation level must have one entry per centred channel")
        channels = len(self.offset)
        if any(not 0 <= c < channels for c in self.centred) or len(set(self.centred)) < len(self.centred):
            raise ValueError("normalisation centred channels must be distinct channel indices")
        return self


class ScoreCalibration(_Strict):
    """Distribution of an anomaly score on held-out normal rows, and the thresholds they support.

    The held-out rows are a validation split (`method` "held_out") or every training row scored by a model
    trained without it (`method` "cross_fit", out-of-fold scores of `folds` models). A false-alarm rate maps
    to a threshold only where the rows support it (`min_false_alarm_rate` to 0.99); below, there is no
    threshold that keeps the promise, and the mapping refuses, naming the supported range."""

    n: int = Field(ge=1)
    """How many held-out rows the figures come from."""
    mean: float
    std: float
    quantiles: dict[str, float]
    """Empirical quantiles of the held-out scores (descriptive): level as a decimal string (e.g. "0.99")
    -> score at that level. Includes at least 0.5, 0.9, 0.95, 0.99, 0.999, min ("0.0") and max ("1.0").
    False-alarm rates map through `calibrated_quantiles` when it is present, else through these."""
    false_alarm_rate: float = Field(gt=0, lt=1)
    """The false-alarm rate the default threshold keeps: the training target, or the lowest supported rate
    when the held-out rows do not support the target."""
    threshold: float
    """Default threshold: `calibrated_quantiles` at level 1 - false_alarm_rate (in metadata written
    without that field, the empirical (1 - false_alarm_rate) quantile of the held-out scores)."""
    calibrated_quantiles: dict[str, float] | None = None
    """Level p (decimal string) -> the threshold for false-alarm rate 1 - p: a held-out score chosen so
    that, with probability `confidence`, at most a fraction (1 - p) * (1 + tolerance) of new normal rows
    score above it, and never below the empirical p quantile. Non-decreasing in p; only the levels the rows
    support (from 0.01 to 1 - min_false_alarm_rate). Absent in metadata written before calibrated
    thresholds."""
    confidence: float | None = Field(default=None, gt=0, lt=1)
    """Probability, over the held-out draw, that a `calibrated_quantiles` threshold keeps its promise
    (given exchangeable normal data)."""
    tolerance: float | None = Field(default=None, ge=0)
    """Relative tolerance of the promise: a threshold for rate r lets through at most r * (1 + tolerance)
    of new normal rows (with probability `confidence`). None in metadata written before it was stated: there
    the promise was at most r itself."""
    method: Literal["held_out", "cross_fit"] | None = None
    """How the held-out scores were made: a validation split, or out-of-fold scores of every training row."""
    folds: int | None = Field(default=None, ge=2)
    """The number of cross-fitted models (method "cross_fit")."""
    min_false_alarm_rate: float | None = Field(default=None, gt=0, lt=1)
    """The lowest false-alarm rate the held-out rows support; None in metadata written before it was
    recorded (the grid's own lowest level then bounds the mapping)."""

    def grid(self) -> tuple[list[float], list[float]]:
        """(levels ascending, thresholds) that false-alarm rates map through: `calibrated_quantiles` where
        recorded, else `quantiles`; thresholds made non-decreasing against rounding noise."""
        pairs = sorted(
            (float(level), value) for level, value in (self.calibrated_quantiles or self.quantiles).items()
        )
        return [p for p, _ in pairs], list(itertools.accumulate((v for _, v in pairs), max))

    def supported_rates(self) -> tuple[float, float]:
        """(lowest, highest) false-alarm rate that maps to a threshold."""
        levels, _ = self.grid()
        return round(1.0 - levels[-1], 12), round(1.0 - levels[0], 12)

    def threshold_for(self, false_alarm_rate: float) -> float:
        """The threshold for a false-alarm rate r: the grid at level 1 - r, linear between recorded levels.

        Outside the supported rates there is no threshold that keeps the promise (extrapolating a tail is
        guesswork): ValueError, naming the supported range and how many held-out rows it rests on."""
        levels, values = self.grid()
        level = 1.0 - false_alarm_rate
        if not levels[0] - 1e-12 <= level <= levels[-1] + 1e-12:
            low, high = self.supported_rates()
            how = {"cross_fit": f"cross-fitted over {self.folds} folds", "held_out": "a validation split"}
            rows = f"{self.n} held-out normal rows" + (f" ({how[self.method]})" if self.method else "")
            raise ValueError(
                f"false_alarm_rate {false_alarm_rate:.6g} is not supported by this model's calibration: "
                f"{rows} support false-alarm rates from {low:.6g} to {high:.6g}; expected a "
                f"false_alarm_rate in that range, or an explicit threshold"
            )
        return _interpolate(min(max(level, levels[0]), levels[-1]), levels, values, last=False)

    def rate_for(self, threshold: float) -> float | None:
        """The false-alarm rate a threshold corresponds to (the inverse mapping); None outside the supported
        thresholds (below the rate-0.99 one, or above the lowest supported rate's)."""
        levels, values = self.grid()
        if not values[0] <= threshold <= values[-1] or values[-1] == values[0]:
            return None
        # On a flat stretch the highest level with that threshold is the rate it really keeps.
        return round(1.0 - _interpolate(threshold, values, levels, last=True), 12)


def _interpolate(x: float, xs: list[float], ys: list[float], last: bool) -> float:
    """Piecewise-linear y(x) through (xs, ys), xs non-decreasing and xs[0] <= x <= xs[-1]; where xs repeats
    x, the last (or first) matching point's y."""
    i = bisect.bisect_right(xs, x) if last else bisect.bisect_left(xs, x)
    if last and i > 0 and xs[i - 1] == x:
        return ys[i - 1]
    if not last and i < len(xs) and xs[i] == x:
        return ys[i]
    i = min(max(i, 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)


class SeriesSpec(_Strict):
    """How a series model reads time: windows of `window` steps of `channels` channels.

    The service cuts a series of T >= window steps into the T - window + 1 windows at stride 1 (the same
    function as training, `service.core.windows`), runs them, and gives every step a score from the windows'
    per-step errors (mean over channels of `feature_errors`):

    - ``last``: step t's score is its error in the window that ends at t (for the first window - 1 steps,
      their errors in the first window). Causal: a step's score never changes when later steps arrive, so a
      client that sends the last `window` points gets the newest step's final score.
    - ``window_mean``: the mean error of the window that ends at t (first steps: the first window's mean).
      Causal too, smoother, later to react.
    - ``covering_mean``: the mean of t's errors over every window that covers it (not causal: the last
      window - 1 steps of a series change as more arrive).
    - ``covering_max``: the largest mean error of the windows that cover t: a step is as anomalous as the
      worst window it is part of, so a flagged stretch covers every step of an anomalous window (not
      causal; a step's score only rises as more steps arrive, and is final window - 1 steps later).

    A reconstruction (`/denoise`) is answered per step by the value the step has in the window ending at it
    under the causal rules, and by its mean over the windows covering it under the others.
    """

    window: int = Field(ge=2)
    channels: int = Field(ge=1)
    stride: int = Field(default=1, ge=1)
    """The stride training cut its windows at (serving always uses 1)."""
    time_column: str | None = None
    """The training file's time column, dropped from the features; requests may send it (checked sorted and
    unique, then dropped)."""
    step_score: StepScore = "last"


class ImageSpec(_Strict):
    """One sample is an image of `channels` x `height` x `width`, channels first."""

    channels: int = Field(ge=1, le=4)
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    pixel_range: tuple[float, float] = (0.0, 255.0)
    """The raw values an 8-bit image's 0 and 255 stand for (digits: 0 and 16); PNG bodies map linearly."""


class DataSummary(_Strict):
    """Where the training rows came from and how they were split."""

    source: str
    """`digits`, another scikit-learn data set name, or the file name of the user's .npy/.csv."""
    n_features: int
    n_train: int
    n_validation: int
    n_test: int
    """Rows held out from training and validation (0 when none); the reported metrics use them if any."""
    feature_min: list[float]
    feature_max: list[float]
    """Per-feature range of the training rows, in raw units (useful to clients and the explorer page)."""


class ModelMetadata(_Strict):
    """Everything the service needs to know about one model version, and everything a person wants to."""

    schema_version: Literal[1, 2] = SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    variant: str
    """The objective: a key of `training.objectives.OBJECTIVES` (plain, linear, sparse_l1, sparse_l2,
    sparse_kl, denoising, contractive, vae)."""
    kind: InputKind = "rows"
    """What one sample is: a table row, a window of a time series, or an image."""
    architecture: str = "mlp"
    """The network body (a key of `training.bodies.BODIES`: mlp, conv1d, conv2d)."""
    input_dim: int = Field(ge=1)
    """Values in one sample: the product of `input_shape`."""
    input_shape: list[int] | None = None
    """One sample's shape as the graphs take it (after the batch axis); None means `[input_dim]`."""
    latent_dim: int = Field(ge=1)
    feature_names: list[str] | None = None
    """Rows: the name of each feature (e.g. a CSV header); series: of each channel. Requests may then send
    named records or CSV with a header, matched by name in any order."""
    series: SeriesSpec | None = None
    """Set exactly when `kind` is series."""
    image: ImageSpec | None = None
    """Set exactly when `kind` is image."""
    generative: bool = False
    """True when decoding z ~ N(0, I) gives meaningful new samples (the VAE)."""
    graphs: dict[GraphRole, GraphFile]
    """The encoder, decoder and fused model graphs (see the module docstring for their tensors)."""
    opset: int = Field(ge=17)
    normalisation: Normalisation
    scores: list[ScoreName] = ["mse"]
    """Anomaly scores the fused graph outputs, each in the output `score_outputs[score]`."""
    score_outputs: dict[ScoreName, str] = {}
    """Score -> the fused graph's output that carries it; well-known scores default to `SCORE_OUTPUTS`."""
    default_score: ScoreName = "mse"
    calibration: dict[ScoreName, ScoreCalibration] = {}
    """Per score, its held-out distribution and default threshold. Empty when the model was not calibrated."""
    metrics: dict[str, float] = {}
    """Held-out metrics (e.g. `test_mse`, `pca_mse`, `denoise_mse_ratio`)."""
    training: dict[str, Any] = {}
    """The training configuration, as given (hyper-parameters, seed)."""
    seed: int = 0
    data: DataSummary
    libraries: dict[str, str] = {}
    """Versions of the libraries that produced the files (torch, onnx, onnxruntime, ...)."""
    created_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Schema 1 wrote `image_shape` (height, width) for flattened images; it reads as an image model."""
        if isinstance(data, dict) and "image_shape" in data:
            data = dict(data)
            shape = data.pop("image_shape")
            if shape is not None:
                data.setdefault("kind", "image")
                data.setdefault("image", {"channels": 1, "height": shape[0], "width": shape[1]})
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelMetadata:
        missing = {"encoder", "decoder", "model"} - set(self.graphs)
        if missing:
            raise ValueError(f"graphs must include encoder, decoder and model; missing {sorted(missing)}")
        shape = self.sample_shape
        if any(d < 1 for d in shape) or _product(shape) != self.input_dim:
            raise ValueError(f"input_shape {shape} does not hold input_dim {self.input_dim} values")
        self._check_layout(shape)
        if self.feature_names is not None:
            width = self.series.channels if self.series else self.input_dim
            if len(self.feature_names) != width or len(set(self.feature_names)) != width:
                raise ValueError(f"feature_names must be {width} distinct names, got {self.feature_names}")
        for score in self.scores:
            if not re.match(SCORE_NAME_PATTERN, score):
                raise ValueError(f"score name {score!r} must match {SCORE_NAME_PATTERN}")
        unknown = [s for s in self.scores if s not in self.score_outputs and s not in SCORE_OUTPUTS]
        if unknown:
            raise ValueError(f"scores {unknown} need an entry in score_outputs")
        if self.default_score not in self.scores:
            raise ValueError(f"default_score {self.default_score!r} is not among scores {self.scores}")
        return self

    def _check_layout(self, shape: list[int]) -> None:
        if (self.kind == "series") != (self.series is not None):
            raise ValueError("series must be given exactly when kind is 'series'")
        if (self.kind == "image") != (self.image is not None):
            raise ValueError("image must be given exactly when kind is 'image'")
        if self.series is not None and shape != [self.series.window, self.series.channels]:
            raise ValueError(f"a series model's input_shape must be [window, channels], got {shape}")
        if self.image is not None:
            image = self.image
            if _product([image.channels, image.height, image.width]) != self.input_dim:
                raise ValueError(
                    f"image {image.channels}x{image.height}x{image.width} is not {self.input_dim} values"
                )
        width = len(self.normalisation.offset)
        allowed = {self.input_dim, shape[-1], 1} | ({self.image.channels} if self.image else set())
        if width not in allowed:
            raise ValueError(f"normalisation has {width} entries; expected one of {sorted(allowed)}")

    @property
    def sample_shape(self) -> list[int]:
        """One sample's shape as the graphs take it (`input_shape`, or `[input_dim]`)."""
        return list(self.input_shape) if self.input_shape is not None else [self.input_dim]

    def score_output(self, score: ScoreName) -> str:
        """The fused graph's output that carries `score`."""
        return self.score_outputs.get(score) or SCORE_OUTPUTS[score]

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        """Read and validate `directory/metadata.json`."""
        return cls.model_validate_json((directory / METADATA_FILE).read_bytes())

    def write(self, directory: Path) -> Path:
        """Write `directory/metadata.json` (pretty, stable key order) and return its path."""
        path = directory / METADATA_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


def _product(values: list[int]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def is_valid_name(name: str) -> bool:
    """Whether `name` may be a model name (and so a directory and a URL path segment)."""
    return bool(_NAME_RE.match(name))
