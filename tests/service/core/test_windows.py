"""Series windows: cutting and per-step values, shared by training and serving."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.windows import cut_windows, to_steps, window_count

RULES = ["last", "window_mean", "covering_mean", "covering_max"]


def test_cut_windows_covers_each_step_in_order() -> None:
    series = np.arange(20, dtype=np.float32).reshape(10, 2)  # (T=10, channels=2)
    windows = cut_windows(series, 4)
    assert windows.shape == (7, 4, 2)
    for i in range(7):
        np.testing.assert_array_equal(windows[i], series[i : i + 4])
    assert cut_windows(series, 4, stride=3).shape == (3, 4, 2)
    assert window_count(10, 4, 3) == 3 and window_count(3, 4) == 0


def test_cut_windows_refuses_a_short_series() -> None:
    with pytest.raises(ValueError, match="shorter than the window"):
        cut_windows(np.zeros((3, 2)), 4)


@pytest.mark.parametrize("rule", RULES)
def test_to_steps_gives_one_value_per_step(rule: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((7, 4, 3))  # (windows, window, channels)
    steps = to_steps(values, rule)  # type: ignore[arg-type]
    assert steps.shape == (10, 3)


def test_last_rule_takes_the_window_ending_at_each_step() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4)  # 3 windows of 4
    np.testing.assert_array_equal(to_steps(values, "last"), [0, 1, 2, 3, 7, 11])


def test_covering_mean_averages_every_window_over_a_step() -> None:
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])  # windows of 2
    np.testing.assert_allclose(to_steps(values, "covering_mean"), [1.0, 2.5, 4.5, 6.0])


@pytest.mark.parametrize("rule", ["last", "window_mean"])
def test_causal_rules_do_not_change_when_the_series_grows(rule: str) -> None:
    rng = np.random.default_rng(1)
    values = rng.random((9, 5))
    whole = to_steps(values, rule)  # type: ignore[arg-type]
    shorter = to_steps(values[:6], rule)  # type: ignore[arg-type]
    np.testing.assert_array_equal(whole[: len(shorter)], shorter)


def test_covering_max_takes_the_worst_window_over_each_step() -> None:
    values = np.array([[1.0, 3.0], [0.0, 0.0], [5.0, 7.0], [1.0, 1.0]])  # 4 windows of 2, means 2, 0, 6, 1
    np.testing.assert_allclose(to_steps(values, "covering_max"), [2.0, 2.0, 6.0, 6.0, 1.0])


def test_covering_max_per_channel_values_average_to_the_step_score() -> None:
    rng = np.random.default_rng(2)
    per_value = rng.random((9, 4, 3))  # (windows, window, channels)
    scores = to_steps(per_value.mean(axis=2), "covering_max")
    per_channel = to_steps(per_value, "covering_max")  # (12, 3): the worst window's per-channel means
    np.testing.assert_allclose(per_channel.mean(axis=1), scores, rtol=1e-12)


def test_a_reconstruction_is_read_per_step_never_averaged_over_a_window() -> None:
    from service.core.windows import value_rule

    series = np.arange(10, dtype=np.float64).reshape(10, 1)
    windows = np.ascontiguousarray(cut_windows(series, 4))  # a perfect reconstruction of each window
    for rule in RULES:
        np.testing.assert_array_equal(to_steps(windows, value_rule(rule)), series)  # type: ignore[arg-type]
