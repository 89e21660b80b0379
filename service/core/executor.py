"""The executor: the one place a call runs, for every protocol.

A `Call` (task, model version, options, input) is run by its task's plan: through the micro-batcher keyed by
(model version, plan key) when batching is on and the plan allows it, so that concurrent REST, v2 and gRPC
calls of one model and operation share a run; otherwise directly, on the event loop for batches of up to
AE_INLINE_MAX_ROWS rows (sub-millisecond models run faster there than through a thread) and on a worker
thread above that. Every run is metered (Prometheus, per task and model) and every call counted in the
per-version statistics. Admission and deadlines are the protocols' front doors' (they differ in how a
request arrives); what a request does once admitted is decided here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from service.core.batching import BatcherPool, BatchLimits, Rows
from service.core.runtime import OnnxModel
from service.core.stats import StatsBook
from service.core.tasks import Answer, Call, RunPlan
from service.ops.metrics import ServiceMetrics
from service.settings import Settings

__all__ = ["Executor"]


class Executor:
    def __init__(self, settings: Settings, metrics: ServiceMetrics, stats: StatsBook | None = None) -> None:
        self.metrics = metrics
        self.stats = stats or StatsBook()
        self.max_batch_rows = settings.max_batch_rows
        self.inline_max_rows = settings.inline_max_rows
        self.batchers: BatcherPool | None = None
        if settings.batching:
            self.batchers = BatcherPool(
                BatchLimits(
                    max_rows=settings.batch_max_rows,
                    max_wait_s=settings.batch_max_wait_ms / 1000,
                    queue_rows=settings.batch_queue_rows,
                    timeout_s=settings.batch_timeout_s,
                    inline_max_rows=settings.inline_max_rows,
                    retry_after_s=settings.retry_after_s,
                )
            )
        self._observers: dict[tuple[str, str, int], Callable[[int, float], None]] = {}

    async def run(self, call: Call[Any]) -> Answer:
        """Run `call` and answer it; a ServiceError (bad options, overload) propagates to the protocol."""
        meta = call.model.metadata
        start = time.perf_counter()
        rows = 0
        try:
            plan = call.task.plan(call.model, call.options)
            rows = call.samples.rows if call.samples is not None else plan.rows or 0
            out = await self._rows(call, plan)
            answer = call.task.answer(call, out)
        except BaseException:
            self.stats.request(meta.name, meta.version, rows, time.perf_counter() - start, ok=False)
            raise
        self.stats.request(meta.name, meta.version, rows, time.perf_counter() - start, ok=True)
        return answer

    def _observer(self, task: str, model: OnnxModel) -> Callable[[int, float], None]:
        meta = model.metadata
        key = (task, meta.name, meta.version)
        observe = self._observers.get(key)
        if observe is None:
            metrics, stats, name, version = self.metrics, self.stats, meta.name, meta.version

            def observe(rows: int, seconds: float) -> None:
                metrics.observe_model_call(task, name, rows, seconds)
                stats.run(name, version, seconds)

            self._observers[key] = observe
        return observe

    async def _rows(self, call: Call[Any], plan: RunPlan) -> Rows:
        model = call.model
        observe = self._observer(call.task.name, model)
        x = call.samples.x if call.samples is not None else None
        if self.batchers is not None and plan.key is not None and x is not None:
            return await self.batchers.get(model, plan.key, plan.fn, observe).submit(x)
        rows = int(x.shape[0]) if x is not None else plan.rows or 0
        start = time.perf_counter()
        if rows <= self.inline_max_rows:
            result = plan.fn(model, x)  # type: ignore[arg-type]
        else:
            result = await run_in_threadpool(plan.fn, model, x)  # type: ignore[arg-type]
        observe(rows, time.perf_counter() - start)
        return result
