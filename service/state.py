"""`AppState`: what the lifespan builds and every protocol reads (HTTP routes through the request's lifespan
state, `request.scope["state"]["ae"]`; the gRPC servicer holds it directly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.core.executor import Executor
from service.core.registry import ModelRegistry
from service.ops.auth import ApiKeys
from service.ops.metrics import ServiceMetrics
from service.ops.threads import ThreadPlan
from service.settings import Settings

if TYPE_CHECKING:
    from service.ops.reload import Reloader

__all__ = ["STATE_KEY", "AppState"]

STATE_KEY = "ae"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    registry: ModelRegistry
    executor: Executor
    metrics: ServiceMetrics
    thread_plan: ThreadPlan
    keys: ApiKeys
    reloader: Reloader
