"""Service settings, read from the environment (prefix `AE_`) when the app is created, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_MODELS_DIR", "PROVIDER_ALIASES", "Settings"]

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class Settings(BaseSettings):
    """Everything the service can be told; each field is also an `AE_<FIELD>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="AE_", extra="ignore", frozen=True)

    models_dir: Path = DEFAULT_MODELS_DIR
    """Model repository root: `<models_dir>/<name>/<version>/metadata.json`. Default: the repository's
    `models/` directory."""

    providers: Annotated[list[str] | None, NoDecode] = None
    """ONNX Runtime execution providers in order of preference, comma separated (`cuda,cpu` or full names
    such as `CUDAExecutionProvider`). Unset: CUDA when ONNX Runtime sees one, else CPU. When the list names a
    GPU provider and a session does not get it, that model fails to load and /readyz says so."""

    workers: int = Field(default=1, ge=1)
    """Server worker processes; the thread plan divides the CPUs among them."""

    intra_op_threads: int | None = Field(default=None, ge=1)
    """ONNX Runtime intra-op threads per session. Unset: 1 (small models run fastest on one thread per
    process; scale with workers). Clamped so that workers x threads never exceeds the available CPUs."""

    max_batch_rows: int = Field(default=1024, ge=1)
    """Largest batch (rows, or `n` for /sample) one request may carry; more is answered 413."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Largest request body in bytes; more is answered 413 (checked on Content-Length and while reading)."""

    inline_max_rows: int = Field(default=128, ge=0)
    """Batches up to this many rows run directly on the event loop (cheaper for sub-millisecond models);
    bigger ones run on a worker thread so they do not stall other requests."""

    warm_up: bool = True
    """Run each graph once at start-up, before /readyz reports ready."""

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [PROVIDER_ALIASES.get(str(p).lower(), str(p)) for p in value] or None
        return value
