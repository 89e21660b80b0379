"""The Open Inference Protocol's HTTP bodies as types: what the OpenAPI schema documents for the v2 routes.

The handlers read and write these bodies themselves (`service.protocols.v2_http`), for speed; these models
are their documentation, and what generated clients are built from.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "V2ErrorResponse",
    "V2InferenceRequest",
    "V2InferenceResponse",
    "V2LiveResponse",
    "V2ModelConfigResponse",
    "V2ModelMetadataResponse",
    "V2ModelReadyResponse",
    "V2ReadyResponse",
    "V2ServerMetadataResponse",
    "V2StatisticsResponse",
]


class V2ErrorResponse(BaseModel):
    error: str = Field(description="What was wrong and what was expected.")


class V2ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2LiveResponse(BaseModel):
    live: bool


class V2ReadyResponse(BaseModel):
    ready: bool


class V2ModelReadyResponse(BaseModel):
    name: str
    version: str
    ready: bool


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch).")


class V2ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ModelConfigResponse(BaseModel):
    """Triton's model configuration extension (what perf_analyzer reads), dims without the batch."""

    model_config = ConfigDict(extra="allow")

    name: str
    platform: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]


class V2ModelStatistics(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    inference_count: int
    execution_count: int
    inference_stats: dict[str, dict[str, int]]


class V2StatisticsResponse(BaseModel):
    model_stats: list[V2ModelStatistics]


class V2RequestInput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["x"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(examples=[[1, 64]])
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size`: bytes of this tensor in the binary part of the body."
    )
    data: list[Any] | None = Field(
        default=None,
        description="The tensor's values, flat in row-major order or nested; absent when binary.",
    )


class V2RequestOutput(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(examples=["latent"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data`: answer this output in the binary part of the body."
    )


_EXAMPLE_DATA: list[JsonValue] = [*([0.0] * 32), *([8.0] * 32)]  # a digits image of 8 x 8 pixels


class V2InferenceRequest(BaseModel):
    """A v2 inference request: the input `x` (or one input per column), optionally the outputs wanted."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": _EXAMPLE_DATA}],
                    "outputs": [{"name": "latent"}, {"name": "error"}],
                }
            ]
        },
    )

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data_output`: answer every output in binary unless it says otherwise; "
        "`threshold` / `false_alarm_rate` / `score` for a series model's step outputs.",
    )
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class V2InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2ResponseOutput]
