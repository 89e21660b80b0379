"""Prometheus metrics: requests by endpoint, model and status; latency; batch rows; inference time; models.

Each app gets its own `CollectorRegistry` (several apps in one process, as in tests, do not collide). When
`PROMETHEUS_MULTIPROC_DIR` is set (several server workers), /metrics aggregates every worker's files through
prometheus_client's multiprocess collector.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "MODEL_SCOPE_KEY", "ServiceMetrics"]

MODEL_SCOPE_KEY = "ae.model"
"""Routes put the model name under this scope key so the middleware can label the request with it."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServiceMetrics:
    """The service's metric families, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ae_requests_total", "HTTP requests", ["endpoint", "model", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "ae_request_duration_seconds",
            "HTTP request latency, from the first byte in to the last byte out",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "ae_batch_rows",
            "Rows per model call",
            ["endpoint", "model"],
            buckets=_ROW_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "ae_inference_duration_seconds",
            "ONNX Runtime time per model call",
            ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.models_loaded = Gauge(
            "ae_models_loaded",
            "Model versions loaded and ready",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.models_failed = Gauge(
            "ae_models_failed",
            "Model versions that failed to load",
            registry=self.registry,
            multiprocess_mode="max",
        )

        # labels() takes a lock and builds a key on every call; the label sets are few, so keep the children.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._call_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_request(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency."""
        key = (endpoint, model, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(endpoint, model, str(status)),
                self.latency.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_model_call(self, endpoint: str, model: str, rows: int, seconds: float) -> None:
        """Record one model run: its ONNX Runtime time and its rows."""
        key = (endpoint, model)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children[key] = (
                self.inference.labels(endpoint, model),
                self.batch_rows.labels(endpoint, model),
            )
        children[0].observe(seconds)
        children[1].observe(rows)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
