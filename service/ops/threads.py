"""The thread plan: how many CPUs this process may really use, and how ONNX Runtime threads are set from it.

CPUs really available = min(scheduler affinity, cgroup v2 `cpu.max` or v1 `cfs_quota/cfs_period` quota),
rounded up. Workers share them; the plan never lets workers x intra-op threads exceed them.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ThreadPlan", "available_cpus", "cgroup_cpu_limit", "plan_threads"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPU quota in CPUs from cgroup v2 or v1, or None when unlimited or unreadable."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        v1_quota = root / "cpu" / "cpu.cfs_quota_us"
        v1_period = root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text().strip())
            if quota_us <= 0:
                return None
            return quota_us / int(v1_period.read_text().strip())
    except (OSError, ValueError):
        return None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """(CPUs this process may use, where the figure came from)."""
    if hasattr(os, "sched_getaffinity"):
        cpus, source = len(os.sched_getaffinity(0)), "sched_getaffinity"
    else:
        cpus, source = os.cpu_count() or 1, "os.cpu_count"
    quota = cgroup_cpu_limit(root)
    if quota is not None and math.ceil(quota) < cpus:
        cpus, source = max(1, math.ceil(quota)), "cgroup quota"
    return cpus, source


@dataclass(frozen=True)
class ThreadPlan:
    """The threads each worker gives ONNX Runtime, and why."""

    cpus_available: int
    cpus_source: str
    workers: int
    intra_op_threads: int
    inter_op_threads: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_threads(
    workers: int, intra_op_threads: int | None = None, cpus: tuple[int, str] | None = None
) -> ThreadPlan:
    """One intra-op thread per worker unless asked for more, and never more than the CPUs allow."""
    cpus_available, source = cpus if cpus is not None else available_cpus()
    per_worker = max(1, cpus_available // max(1, workers))
    requested = 1 if intra_op_threads is None else intra_op_threads
    threads = min(requested, per_worker)
    if workers > cpus_available:
        note = f"{workers} workers exceed the {cpus_available} available CPUs; each keeps 1 thread"
    elif threads < requested:
        note = (
            f"asked for {requested} intra-op threads, clamped to {threads} "
            f"({cpus_available} CPUs / {workers} workers)"
        )
    elif intra_op_threads is None:
        note = "default: one intra-op thread per worker; scale with workers"
    else:
        note = "as configured"
    return ThreadPlan(cpus_available, source, workers, threads, 1, note)
