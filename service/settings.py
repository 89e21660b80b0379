"""Service settings, read from the environment (prefix `AE_`) when the app is created, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
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

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """API keys, comma separated. When this or `api_keys_file` names any key, every endpoint except the
    liveness and readiness probes, the UI page and the API docs needs `Authorization: Bearer <key>`
    (401 without one, 403 with a wrong one). None: every endpoint is open."""

    api_keys_file: Path | None = None
    """A file of API keys, one per line (blank lines and `#` comments skipped), read at start-up and again
    on every reload (POST /admin/reload or SIGHUP), so keys can be rotated without a restart."""

    public_metrics: bool = False
    """Serve /metrics without a key even when API keys are set (for a scraper inside a trusted network)."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser, comma separated (`*` for any). Empty: CORS off."""

    max_concurrency: int = Field(default=64, ge=1)
    """Requests one worker process works on at once; more wait in a queue. Health, readiness and metrics
    are not counted, so probes answer under overload."""

    max_queue: int = Field(default=256, ge=0)
    """Requests that may wait for a free slot; one more is answered 503 with Retry-After at once."""

    queue_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait for a free slot before a queued request is answered 503 with Retry-After."""

    request_timeout_s: float | None = Field(default=30.0, gt=0)
    """Longest time one admitted request may take (reading its body included) before it is answered 504;
    unset: no limit. A model call already running on the event loop finishes first (it cannot be cut)."""

    retry_after_s: int = Field(default=1, ge=0)
    """The Retry-After value (seconds) sent with 503 overload answers."""

    drain_timeout_s: float = Field(default=30.0, gt=0)
    """On SIGTERM: how long to wait for requests in flight to finish before closing them anyway."""

    batching: bool = True
    """Micro-batching: concurrent requests to the same model and operation coalesce into one ONNX Runtime
    run (/encode, /decode, /denoise, /reconstruction-error), with no added wait. On by default: at batch 1
    under concurrency it raised throughput and cut p99 in the benchmark, and a lone request is not delayed."""

    batch_max_rows: int = Field(default=64, ge=1)
    """Most rows in one coalesced run; a request with at least this many rows runs on its own (coalescing
    big requests gained nothing and pushed runs onto worker threads)."""

    batch_max_wait_ms: float = Field(default=0.0, ge=0)
    """Added wait before a run, to collect more rows. 0 (recommended): no added wait; a run takes whatever
    queued while the model was busy."""

    batch_queue_rows: int = Field(default=4096, ge=1)
    """Rows that may wait for a run per model and operation; a request that would exceed it is answered 503
    with Retry-After at once."""

    batch_timeout_s: float | None = Field(default=5.0, gt=0)
    """Longest a request may wait in the batching queue before it is answered 503 with Retry-After instead
    of being run; unset: no limit."""

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [PROVIDER_ALIASES.get(str(p).lower(), str(p)) for p in value] or None
        return value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
