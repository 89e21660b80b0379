"""HTTP request and response models. They document the API (OpenAPI) and validate the non-tensor fields.

The tensor fields (`inputs`, `latents`) are not validated by pydantic at request time: the codec parses them
straight into numpy (see `service.protocols.rest_codec`). Each `<Verb>Params` model holds a request's other
fields and is what the routes validate; `<Verb>Request` adds the tensor field and is what the OpenAPI schema
shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from service.contract import DataSummary, ImageSpec, ScoreCalibration, ScoreName, SeriesSpec

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
_EXAMPLE_ROWS: list[JsonValue] = [[0.0, 1.5, 3.0, 4.5], [0.5, 1.0, 2.0, 4.0]]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Model name, as listed by GET /models.", examples=["digits-plain"])
    version: int | None = Field(
        default=None, ge=1, description="Model version; default the latest loaded version.", examples=[1]
    )


class EncodeParams(_Params):
    pass


class EncodeRequest(EncodeParams):
    """Encode a batch of feature vectors into the latent space."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS}]}
    )

    inputs: Rows = Field(description="A batch of raw feature vectors, each of the model's input_dim numbers.")


class EncodeResponse(BaseModel):
    model: str
    version: int
    latents: Rows = Field(description="(batch, latent_dim); for a vae, the posterior mean.")
    log_var: Rows | None = Field(
        default=None, description="(batch, latent_dim) posterior log-variance; present for a vae only."
    )

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "version": 1, "latents": [[0.1, -0.3]]}]}
    )


class DecodeParams(_Params):
    pass


class DecodeRequest(DecodeParams):
    """Decode a batch of latent vectors into feature space."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "latents": [[0.1, -0.3]]}]}
    )

    latents: Rows = Field(description="A batch of latent vectors, each of the model's latent_dim numbers.")


class DecodeResponse(BaseModel):
    model: str
    version: int
    outputs: Rows = Field(description="(batch, input_dim) in raw feature units.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "version": 1, "outputs": _EXAMPLE_ROWS}]}
    )


class DenoiseParams(_Params):
    pass


class DenoiseRequest(DenoiseParams):
    """Reconstruct a batch (for a denoising model, its clean estimate)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS}]}
    )

    inputs: Rows = Field(description="A batch of raw feature vectors, each of the model's input_dim numbers.")


class DenoiseResponse(DecodeResponse):
    pass


class ReconstructionErrorParams(_Params):
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
    score: ScoreName | None = Field(
        default=None, description="`mse` or `neg_elbo` (where the model lists it); default the model's."
    )
    per_feature: bool = Field(default=False, description="Also answer each feature's squared error.")

    @model_validator(mode="after")
    def _one_threshold_source(self) -> ReconstructionErrorParams:
        if self.threshold is not None and self.false_alarm_rate is not None:
            raise ValueError("give either threshold or false_alarm_rate, not both")
        return self


class ReconstructionErrorRequest(ReconstructionErrorParams):
    """Score a batch by reconstruction error and flag anomalies."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "digits-plain", "inputs": _EXAMPLE_ROWS, "false_alarm_rate": 0.01}]
        }
    )

    inputs: Rows = Field(description="A batch of raw feature vectors, each of the model's input_dim numbers.")


class ReconstructionErrorResponse(BaseModel):
    model: str
    version: int
    score: ScoreName = Field(description="The score in `errors`.")
    errors: list[float] = Field(
        description="Per sample: for `mse`, the mean squared error over features in the model's normalised "
        "feature space ((x - offset) / scale), consistent with /denoise's outputs; for `neg_elbo`, the "
        "negative evidence lower bound."
    )
    threshold: float | None = Field(description="The threshold used; null when none is known.")
    threshold_source: Literal["request", "false_alarm_rate", "model_default"] | None
    false_alarm_rate: float | None = Field(description="The false-alarm rate the threshold corresponds to.")
    anomalies: list[bool] = Field(
        description="Per sample: error > threshold (all false without a threshold)."
    )
    feature_errors: Rows | None = Field(
        default=None,
        description="(batch, input_dim) squared error per feature in the normalised space, when per_feature; "
        "each row's mean is the sample's mse.",
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


class SampleParams(_Params):
    n: int = Field(default=1, ge=1, description="How many samples; at most AE_MAX_BATCH_ROWS.")
    seed: int | None = Field(
        default=None, ge=0, description="Random seed (>= 0); the same seed gives the same samples."
    )


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
