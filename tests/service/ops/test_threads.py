"""The thread plan reads cgroup quotas and never oversubscribes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.ops.threads import available_cpus, cgroup_cpu_limit, plan_threads
from service.settings import Settings


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 2.0


def test_available_cpus_takes_the_quota_when_smaller(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == (1, "cgroup quota")


def test_plan_threads_defaults_to_one_per_worker() -> None:
    plan = plan_threads(workers=2, cpus=(8, "test"))
    assert (plan.intra_op_threads, plan.inter_op_threads) == (1, 1)


@pytest.mark.parametrize(("workers", "asked", "cpus", "expected"), [(1, 4, 8, 4), (2, 4, 4, 2), (4, 2, 2, 1)])
def test_plan_threads_never_oversubscribes(workers: int, asked: int, cpus: int, expected: int) -> None:
    plan = plan_threads(workers=workers, intra_op_threads=asked, cpus=(cpus, "test"))
    assert plan.intra_op_threads == expected
    assert plan.workers * plan.intra_op_threads <= max(cpus, workers)


def test_settings_split_provider_list() -> None:
    assert Settings(providers="cuda, CPUExecutionProvider").providers == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AE_MAX_BATCH_ROWS", "7")
    monkeypatch.setenv("AE_PROVIDERS", "cpu")
    settings = Settings()
    assert settings.max_batch_rows == 7
    assert settings.providers == ["CPUExecutionProvider"]
