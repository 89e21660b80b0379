"""Per model version counters for the statistics extension (`/v2/models/{name}/stats`, gRPC
ModelStatistics): requests that succeeded or failed and their time, samples inferred, model runs and their
time. Kept by the executor for every protocol alike; plain integers, no locks (one event loop per worker)."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["ModelStats", "StatsBook"]


@dataclass
class ModelStats:
    name: str
    version: int
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    inference_count: int = 0
    """Samples (rows) inferred."""
    execution_count: int = 0
    """Model runs; fewer than requests when micro-batching coalesces them."""
    compute_ns: int = 0
    """Time inside ONNX Runtime."""
    last_inference_ms: int = 0
    """Wall-clock time of the last success, in milliseconds since the epoch."""

    @property
    def queue_ns(self) -> int:
        """Request time outside ONNX Runtime: waiting for a batch, parsing, answering."""
        return max(0, self.success_ns - self.compute_ns)


class StatsBook:
    def __init__(self) -> None:
        self._stats: dict[tuple[str, int], ModelStats] = {}

    def of(self, name: str, version: int) -> ModelStats:
        key = (name, version)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = ModelStats(name, version)
        return stats

    def request(self, name: str, version: int, rows: int, seconds: float, ok: bool) -> None:
        stats = self.of(name, version)
        ns = int(seconds * 1e9)
        if ok:
            stats.success_count += 1
            stats.success_ns += ns
            stats.inference_count += rows
            stats.last_inference_ms = int(time.time() * 1000)
        else:
            stats.fail_count += 1
            stats.fail_ns += ns

    def run(self, name: str, version: int, seconds: float) -> None:
        stats = self.of(name, version)
        stats.execution_count += 1
        stats.compute_ns += int(seconds * 1e9)

    def all(self) -> list[ModelStats]:
        return [self._stats[k] for k in sorted(self._stats)]
