"""Service settings, read from the environment (prefix `AE_`) when the app is created, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_MODELS_DIR", "PROVIDER_ALIASES", "Settings", "settings_reference"]

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class Settings(BaseSettings):
    """Everything the service can be told; each field is also an `AE_<FIELD>` environment variable."""

    model_config = SettingsConfigDict(
        env_prefix="AE_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

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

    api_keys: Annotated[list[SecretStr] | None, NoDecode] = None
    """API keys, comma separated. Once this or `api_keys_file` is set, every endpoint except the liveness and
    readiness probes, the UI page and the API docs needs `Authorization: Bearer <key>` (401 without one, 403
    with a wrong one), and a key source that holds no usable key (set but empty, say) refuses every request
    with 503 rather than opening up. Neither set: every endpoint is open, but for the admin routes."""

    api_keys_file: Path | None = None
    """A file of API keys, one per line (blank lines and `#` comments skipped), read at start-up and again
    on every reload (POST /admin/reload or SIGHUP), so keys can be rotated without a restart. An unreadable
    or empty file refuses every request (but the probes) until a reload finds keys in it."""

    admin_open: bool = False
    """Serve the admin routes (POST /admin/reload) without API keys. Off: with no keys configured they answer
    403, so that no one on the network can make the server reload."""

    public_metrics: bool = False
    """Serve /metrics without a key even when API keys are set (for a scraper inside a trusted network)."""

    opentelemetry: bool = False
    """FastAPI's native OpenTelemetry spans, metrics and logs per request, sent to the providers that the
    process configures (`opentelemetry-instrument`, or FASTAPI_OTEL_AUTO_CONFIGURE=true). Off: the check
    for configured providers is skipped on every request (about 14 µs of CPU each, `python -m bench.asgi`);
    /metrics (Prometheus) is kept either way."""

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the API from a browser, comma separated (`*` for any). Empty: CORS off."""

    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Largest request line plus headers in bytes; more is answered 431 before any other check."""

    max_headers: int = Field(default=100, ge=8)
    """Most header fields in one request; more is answered 431."""

    header_timeout_s: float = Field(default=10.0, gt=0)
    """A connection must send a complete request line and headers within this many seconds of opening (or
    of its request's first byte); otherwise it is answered 408 and closed (slow or idle clients hold no
    socket)."""

    keep_alive_timeout_s: float = Field(default=5.0, gt=0)
    """An idle keep-alive connection is closed after this many seconds without a new request."""

    max_connections: int | None = Field(default=None, ge=1)
    """Open HTTP connections per worker; one more is closed at once. Unset: the open-files limit (`ulimit
    -n`) less a reserve of 128, so that the process never runs out of file descriptors."""

    body_timeout_s: float = Field(default=5.0, gt=0)
    """A request body must arrive within this many seconds plus one second per `min_body_rate` bytes;
    otherwise it is answered 408 and the connection closed. Bodies are read before a request takes an
    admission slot, so a slow sender holds no slot meanwhile."""

    min_body_rate: int = Field(default=1024 * 1024, ge=1024)
    """Bytes per second a client is expected to send its body at, at least (see `body_timeout_s`)."""

    max_buffered_bytes: int = Field(default=32 * 1024 * 1024, ge=1024 * 1024)
    """Request bodies held in memory at once per worker (each counted by its Content-Length, or
    AE_MAX_BODY_BYTES when it has none). A body that does not fit waits, unread, for up to
    `queue_timeout_s`, then is answered 503. With `max_json_values` it bounds request memory: see
    docs/reliability.md."""

    max_json_values: int = Field(default=1024 * 1024, ge=1024)
    """Most numbers and lists a JSON body may hold, counted on its bytes before it is parsed; more is
    answered 413 (a body of a million empty lists would otherwise cost far more memory than its size)."""

    max_concurrency: int = Field(default=64, ge=1)
    """Requests one worker process works on at once; more wait in a queue. Health, readiness and metrics
    are not counted, so probes answer under overload."""

    max_queue: int = Field(default=256, ge=0)
    """Requests that may wait for a free slot; one more is answered 503 with Retry-After at once."""

    queue_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait for a free slot before a queued request is answered 503 with Retry-After; newcomers are
    refused at once while the oldest waiter has waited half of it (the queue is standing), so an accepted
    request waits at most this long."""

    request_timeout_s: float | None = Field(default=30.0, gt=0)
    """Longest time one admitted request may take (reading its body included) before it is answered 504;
    unset: no limit. A model call already running on the event loop finishes first (it cannot be cut)."""

    retry_after_s: int = Field(default=1, ge=0)
    """The Retry-After value (seconds) sent with 503 overload answers."""

    reload_min_interval_s: float = Field(default=1.0, ge=0)
    """Reloads run at most once per this many seconds; reload requests in between wait for the next run and
    share its answer (so hammering POST /admin/reload costs one rescan per interval)."""

    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`); unset or 0: off.
    `python -m service` sets it from --grpc-port (default 8081)."""

    grpc_host: str = "127.0.0.1"
    """Interface the gRPC server binds; `python -m service` sets it from --host."""

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

    @property
    def keys_configured(self) -> bool:
        """Whether any API key source is set (then requests need a key, and no usable key means refusal)."""
        return self.api_keys is not None or self.api_keys_file is not None


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        value: object = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if name == "models_dir":
        return "the repository's `models/`"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "empty"
    return f"`{value}`"


def settings_reference() -> str:
    """docs/settings.md: every setting, its environment variable, default and description."""
    lines = [
        "# Settings",
        "",
        "Every setting is an environment variable (read when the app is created). This page is generated "
        "from `service/settings.py` (`python -m service --write-settings-doc docs/settings.md`); a test "
        "keeps it current.",
        "",
        "| variable | default | what it does |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        text = " ".join((field.description or "").split()).replace("|", "\\|")
        lines.append(f"| `AE_{name.upper()}` | {_default(name)} | {text} |")
    return "\n".join(lines) + "\n"
