"""The model repository's contract: what training writes into `models/<name>/<version>/metadata.json`.

Training builds a `ModelMetadata` and writes it; the service reads and validates it. This module is the one
place the contract is defined. It depends on pydantic and the standard library only, so the training side can
import it without pulling in FastAPI or ONNX Runtime, and the service can import it without torch.

The ONNX graphs all take raw feature values (normalisation is baked in) and answer in raw units:

- ``encoder`` : ``x`` (batch, input_dim) -> ``latent`` (batch, latent_dim) [+ ``log_var`` for the VAE]
- ``decoder`` : ``latent`` (batch, latent_dim) -> ``reconstruction`` (batch, input_dim)
- ``model``   : ``x`` -> ``latent`` [+ ``log_var``], ``reconstruction``,
  ``feature_errors`` (batch, input_dim), ``error`` (batch,) [+ ``neg_elbo`` (batch,) for the VAE]

``feature_errors`` is the squared error of each feature in the normalised space ((x - mean) / scale) and
``error`` is their mean over features: the per-sample reconstruction error the service scores anomalies by.
`SCORE_OUTPUTS` names the fused graph's output that carries each anomaly score.
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
    "ModelMetadata",
    "Normalisation",
    "ScoreCalibration",
    "is_valid_name",
]

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"

# Model names become URL path segments and directory names: keep them boring.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)

GraphRole = Literal["encoder", "decoder", "model"]
ScoreName = Literal["mse", "neg_elbo"]

SCORE_OUTPUTS: dict[ScoreName, str] = {"mse": "error", "neg_elbo": "neg_elbo"}
"""The fused graph's output tensor that carries each anomaly score (`mse` is the per-sample `error`)."""


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

    kind: Literal["standard", "minmax", "identity"]
    """How offset and scale were fitted on the training rows."""
    offset: list[float]
    scale: list[float]
    """Strictly positive; a constant feature gets a scale of 1 rather than 0."""

    @model_validator(mode="after")
    def _check(self) -> Normalisation:
        if len(self.offset) != len(self.scale):
            raise ValueError("normalisation offset and scale must have the same length")
        if any(not s > 0 for s in self.scale):
            raise ValueError("normalisation scale must be strictly positive")
        return self


class ScoreCalibration(_Strict):
    """Distribution of an anomaly score on held-out normal rows (the validation split)."""

    n: int = Field(ge=1)
    """How many held-out rows the figures come from."""
    mean: float
    std: float
    quantiles: dict[str, float]
    """Empirical quantiles of the held-out scores (descriptive): level as a decimal string (e.g. "0.99")
    -> score at that level. Includes at least 0.5, 0.9, 0.95, 0.99, 0.999, min ("0.0") and max ("1.0").
    False-alarm rates map through `calibrated_quantiles` when it is present, else through these."""
    false_alarm_rate: float = Field(gt=0, lt=1)
    """Target false-alarm rate the default threshold was set for."""
    threshold: float
    """Default threshold: `calibrated_quantiles` at level 1 - false_alarm_rate (in metadata written
    without that field, the empirical (1 - false_alarm_rate) quantile of the held-out scores)."""
    calibrated_quantiles: dict[str, float] | None = None
    """Level p (decimal string) -> the threshold for false-alarm rate 1 - p: an upper `confidence` bound
    on the p quantile of normal scores, so that a threshold read here keeps its rate on new normal data
    even when few rows were held out. Non-decreasing in p; covers 0.01 to 0.999 and 1 - false_alarm_rate.
    Absent in metadata written before calibrated thresholds."""
    confidence: float | None = Field(default=None, gt=0, lt=1)
    """Probability that the realised false-alarm rate of a `calibrated_quantiles` threshold is at most
    its target (given exchangeable normal data): the order-statistic bound where the held-out rows are
    enough, else a log-normal tolerance bound."""

    def grid(self) -> tuple[list[float], list[float]]:
        """(levels ascending, thresholds) that false-alarm rates map through: `calibrated_quantiles` where
        recorded, else `quantiles`; thresholds made non-decreasing against rounding noise."""
        pairs = sorted(
            (float(level), value) for level, value in (self.calibrated_quantiles or self.quantiles).items()
        )
        return [p for p, _ in pairs], list(itertools.accumulate((v for _, v in pairs), max))

    def threshold_for(self, false_alarm_rate: float) -> float:
        """The threshold for a false-alarm rate r: the grid at level 1 - r, linear between recorded levels.

        Outside the recorded levels there is nothing to interpolate from (extrapolating a tail is guesswork):
        ValueError, saying which rates are possible."""
        levels, values = self.grid()
        level = 1.0 - false_alarm_rate
        if not levels[0] - 1e-12 <= level <= levels[-1] + 1e-12:
            raise ValueError(
                f"false_alarm_rate {false_alarm_rate} needs the {level:.6g} quantile, outside the recorded "
                f"levels [{levels[0]}, {levels[-1]}]; expected a false_alarm_rate between "
                f"{1 - levels[-1]:.6g} and {1 - levels[0]:.6g}"
            )
        return _interpolate(min(max(level, levels[0]), levels[-1]), levels, values, last=False)

    def rate_for(self, threshold: float) -> float | None:
        """The false-alarm rate a threshold corresponds to (the inverse mapping); None outside the grid."""
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

    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    variant: str
    """Key in `training.variants.VARIANTS` (plain, linear, sparse_l1, sparse_l2, sparse_kl, denoising,
    contractive, vae)."""
    input_dim: int = Field(ge=1)
    latent_dim: int = Field(ge=1)
    image_shape: tuple[int, int] | None = None
    """(height, width) when a sample is a flattened image, e.g. (8, 8) for digits."""
    generative: bool = False
    """True when decoding z ~ N(0, I) gives meaningful new samples (the VAE)."""
    graphs: dict[GraphRole, GraphFile]
    """The encoder, decoder and fused model graphs (see the module docstring for their tensors)."""
    opset: int = Field(ge=17)
    normalisation: Normalisation
    scores: list[ScoreName] = ["mse"]
    """Anomaly scores the fused graph outputs, each in the output `SCORE_OUTPUTS[score]` (`mse` -> `error`,
    `neg_elbo` -> `neg_elbo`)."""
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

    @model_validator(mode="after")
    def _check(self) -> ModelMetadata:
        missing = {"encoder", "decoder", "model"} - set(self.graphs)
        if missing:
            raise ValueError(f"graphs must include encoder, decoder and model; missing {sorted(missing)}")
        if len(self.normalisation.offset) != self.input_dim:
            raise ValueError(
                f"normalisation has {len(self.normalisation.offset)} features, input_dim is {self.input_dim}"
            )
        if self.image_shape is not None and self.image_shape[0] * self.image_shape[1] != self.input_dim:
            raise ValueError(f"image_shape {self.image_shape} does not flatten to input_dim {self.input_dim}")
        if self.default_score not in self.scores:
            raise ValueError(f"default_score {self.default_score!r} is not among scores {self.scores}")
        return self

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        """Read and validate `directory/metadata.json`."""
        return cls.model_validate_json((directory / METADATA_FILE).read_bytes())

    def write(self, directory: Path) -> Path:
        """Write `directory/metadata.json` (pretty, stable key order) and return its path."""
        path = directory / METADATA_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


def is_valid_name(name: str) -> bool:
    """Whether `name` may be a model name (and so a directory and a URL path segment)."""
    return bool(_NAME_RE.match(name))
