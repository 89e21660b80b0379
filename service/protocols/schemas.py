"""HTTP request and response models. They document the API (OpenAPI) and validate the non-tensor fields.

The tensor fields (`inputs`, `latents`) are not validated by pydantic at request time: the codec parses them
straight into numpy (see `service.protocols.http_codec`). Each `<Verb>Params` model holds a request's other
fields and is what the routes validate; `<Verb>Request` adds the tensor field and is what the OpenAPI schema
shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from service.contract import DataSummary, ImageSpec, ScoreCalibration, ScoreName, SeriesSpec
from service.core.tasks import NoOptions, SampleOptions, ScoreOptions

__all__ = [
    "DecodeParams",
    "DecodeRequest",
    "DecodeResponse",
    "DenoiseParams",
    "DenoiseRequest",
    "DenoiseResponse",
    "EncodeParams",
    "EncodeRequest",
    "EncodeResponse",
    "ErrorResponse",
    "HealthResponse",
    "InfoResponse",
    "ModelInfo",
    "ModelListResponse",
    "ModelRef",
    "ModelVersionsResponse",
    "ReadinessResponse",
    "ReconstructionErrorParams",
    "ReconstructionErrorRequest",
    "ReconstructionErrorResponse",
    "SampleParams",
    "SampleRequest",
    "SampleResponse",
]

Rows = list[list[float]]
Tensor = list[Any]
"""Nested lists of numbers: rows (batch, features), images (batch, height, width) or (batch, channels,
height, width), one series (steps, channels), or windows (batch, window, channels)."""
Records = list[dict[str, Any]]
_EXAMPLE_ROWS: list[JsonValue] = [[0.0, 1.5, 3.0, 4.5], [0.5, 1.0, 2.0, 4.0]]
_INPUTS = (
    "Raw samples: rows (batch, features); for an image model also (batch, height, width) or (batch, "
    "channels, height, width); for a series model one series (steps, channels), cut into windows by the "
    "service, or windows (batch, window, channels). Answers come back in the same layout."
)
_RECORDS = (
    "Instead of `inputs`, for a model with column names: one object per row (or per time step), keyed by "
    "column name in any order; a missing or unknown name is refused, naming it."
)


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model name, as listed by GET /models.", examples=["digits-plain"])
    version: int | None = Field(
        default=None, ge=1, description="Model version; default the latest loaded version.", examples=[1]
    )


class EncodeParams(ModelRef, NoOptions):
    pass


class EncodeRequest(EncodeParams):
    """Encode a batch of samples into the latent space."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS}]}
    )

    inputs: Tensor | None = Field(default=None, description=_INPUTS)
    records: Records | None = Field(default=None, description=_RECORDS)


class EncodeResponse(BaseModel):
    model: str
    version: int
    latents: Rows = Field(description="(batch, latent_dim), one per window for a series; for a vae the mean.")
    log_var: Rows | None = Field(
        default=None, description="(batch, latent_dim) posterior log-variance; present for a vae only."
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "version": 1, "latents": [[0.1, -0.3]]}]}
    )


class DecodeParams(ModelRef, NoOptions):
    pass


class DecodeRequest(DecodeParams):
    """Decode a batch of latent vectors into samples."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "latents": [[0.1, -0.3]]}]}
    )

    latents: Rows = Field(description="A batch of latent vectors, each of the model's latent_dim numbers.")


class DecodeResponse(BaseModel):
    model: str
    version: int
    outputs: Tensor = Field(description="(batch, *sample shape) in raw units.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "version": 1, "outputs": _EXAMPLE_ROWS}]}
    )


class DenoiseParams(ModelRef, NoOptions):
    pass


class DenoiseRequest(DenoiseParams):
    """Reconstruct a batch (for a denoising model, its clean estimate)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS}]}
    )

    inputs: Tensor | None = Field(default=None, description=_INPUTS)
    records: Records | None = Field(default=None, description=_RECORDS)


class DenoiseResponse(BaseModel):
    model: str
    version: int
    outputs: Tensor | Records = Field(
        description="The reconstruction in the request's layout (the series itself for a series; records "
        "when the request sent records)."
    )


class ReconstructionErrorParams(ModelRef, ScoreOptions):
    pass


class ReconstructionErrorRequest(ReconstructionErrorParams):
    """Score a batch by reconstruction error and flag anomalies."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS, "false_alarm_rate": 0.01}]
        }
    )

    inputs: Tensor | None = Field(default=None, description=_INPUTS)
    records: Records | None = Field(default=None, description=_RECORDS)


class ReconstructionErrorResponse(BaseModel):
    model: str
    version: int
    score: str = Field(description="The score in `errors`.")
    errors: list[float] = Field(
        description="Per sample (per time step for a series): for `mse`, the mean squared error in the "
        "model's normalised space ((x - offset) / scale), consistent with /denoise's outputs; another "
        "score as the model defines it (e.g. `neg_elbo`, the negative evidence lower bound)."
    )
    threshold: float | None = Field(description="The threshold used; null when none is known.")
    threshold_source: str | None = Field(
        description="Where the threshold came from: `request`, `false_alarm_rate` (mapped through the "
        "calibration), `model_default`; null without a threshold."
    )
    false_alarm_rate: float | None = Field(description="The false-alarm rate the threshold corresponds to.")
    anomalies: list[bool] = Field(
        description="Per sample (or step): error > threshold (all false without one)."
    )
    feature_errors: Tensor | Records | None = Field(
        default=None,
        description="With per_feature: each value's squared error in the normalised space, in the "
        "request's layout (rows; images; steps x channels for a series; records when it sent records).",
    )
    window_errors: list[float] | None = Field(
        default=None, description="Series models: the mean error of each window (stride 1)."
    )
    top_features: list[list[list[Any]] | None] | None = Field(
        default=None,
        description="Models with column names: for each flagged row its largest per-feature errors as "
        "[name, error], largest first; null for rows not flagged.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "digits-plain",
                    "version": 1,
                    "score": "mse",
                    "errors": [0.12, 2.5],
                    "threshold": 0.8,
                    "threshold_source": "false_alarm_rate",
                    "false_alarm_rate": 0.01,
                    "anomalies": [False, True],
                }
            ]
        }
    )


class SampleParams(ModelRef, SampleOptions):
    pass


class SampleRequest(SampleParams):
    """Generate new samples by decoding z ~ N(0, I) (generative models only)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "digits-vae", "n": 4, "seed": 0}]})


class SampleResponse(DecodeResponse):
    pass


class ModelInfo(BaseModel):
    """One model version as the service sees it."""

    name: str
    version: int | None
    status: Literal["ready", "failed"]
    error: str | None = Field(default=None, description="Why the version failed to load.")
    variant: str | None = None
    input_dim: int | None = None
    latent_dim: int | None = None
    kind: str | None = None
    architecture: str | None = None
    input_shape: list[int] | None = None
    feature_names: list[str] | None = None
    series: SeriesSpec | None = None
    image: ImageSpec | None = None
    generative: bool | None = None
    providers: list[str] = Field(default=[], description="Execution providers the sessions really got.")
    metrics: dict[str, float] = {}
    scores: list[ScoreName] = []
    default_score: ScoreName | None = None
    calibration: dict[ScoreName, ScoreCalibration] = {}
    data: DataSummary | None = None
    created_at: datetime | None = None


class ModelListResponse(BaseModel):
    models: list[ModelInfo]


class ModelVersionsResponse(BaseModel):
    name: str
    latest: int | None = Field(description="The version used when a request names none; null if none loaded.")
    versions: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadinessResponse(BaseModel):
    status: Literal["ready"]
    models: int = Field(description="Model versions loaded and warmed.")


class InfoResponse(BaseModel):
    """Service metadata: version, repository, providers, the thread plan and the request limits."""

    version: str
    models_dir: str
    available_providers: list[str]
    requested_providers: list[str] | None
    thread_plan: dict[str, Any]
    limits: dict[str, int]


class ErrorResponse(BaseModel):
    """Every error: what was wrong and what was expected."""

    detail: str

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "unknown model 'x'; available models: digits-plain"}]}
    )
