from __future__ import annotations

import math

import numpy as np
import pytest

from training.calibration import QUANTILE_LEVELS, calibrate, threshold_for


def test_calibrate_matches_analytic_exponential_quantiles() -> None:
    scores = np.random.default_rng(0).exponential(scale=2.0, size=200_000)
    calibration = calibrate(scores, false_alarm_rate=0.05)
    for level in (0.5, 0.9, 0.95, 0.99):
        analytic = -2.0 * math.log(1 - level)
        assert calibration.quantiles[str(level)] == pytest.approx(analytic, rel=0.02)
    assert calibration.threshold == pytest.approx(-2.0 * math.log(0.05), rel=0.02)
    assert calibration.mean == pytest.approx(2.0, rel=0.02)
    assert calibration.std == pytest.approx(2.0, rel=0.02)
    assert calibration.n == 200_000


def test_calibrate_records_dense_grid_with_min_and_max() -> None:
    scores = np.arange(1, 1001, dtype=float)
    calibration = calibrate(scores)
    assert set(calibration.quantiles) >= {
        "0.0",
        "0.01",
        "0.5",
        "0.9",
        "0.95",
        "0.99",
        "0.995",
        "0.999",
        "1.0",
    }
    assert len(calibration.quantiles) == len(QUANTILE_LEVELS) == 103
    assert calibration.quantiles["0.0"] == 1.0
    assert calibration.quantiles["1.0"] == 1000.0
    assert calibration.threshold == pytest.approx(np.quantile(scores, 0.99))


def test_threshold_for_maps_false_alarm_rate_through_quantiles() -> None:
    scores = np.random.default_rng(1).normal(size=100_000)
    calibration = calibrate(scores)
    assert threshold_for(calibration, 0.01) == pytest.approx(calibration.threshold)
    # 0.025 lies between grid levels 0.97 and 0.98: interpolated, close to the normal's 1.96.
    assert threshold_for(calibration, 0.025) == pytest.approx(1.96, abs=0.03)
    held_out = np.random.default_rng(2).normal(size=100_000)
    assert np.mean(held_out > threshold_for(calibration, 0.05)) == pytest.approx(0.05, abs=0.005)


@pytest.mark.parametrize("scores", [np.array([]), np.array([1.0, np.nan])])
def test_calibrate_rejects_empty_or_non_finite_scores(scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match="finite"):
        calibrate(scores)
