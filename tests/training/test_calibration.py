from __future__ import annotations

import math

import numpy as np
import pytest

from service.contract import ScoreCalibration
from service.core.calibration import threshold_for_rate
from training.calibration import (
    CALIBRATED_LEVELS,
    CONFIDENCE,
    QUANTILE_LEVELS,
    calibrate,
    quantile_key,
    upper_quantile_bound,
)

TOLERANCE = 0.015


def test_calibrate_matches_analytic_exponential_quantiles() -> None:
    scores = np.random.default_rng(0).exponential(scale=2.0, size=200_000)
    calibration = calibrate(scores, false_alarm_rate=0.05)
    for level in (0.5, 0.9, 0.95, 0.99):
        analytic = -2.0 * math.log(1 - level)
        assert calibration.quantiles[str(level)] == pytest.approx(analytic, rel=0.02)
    # With this many rows the confidence margin is a few hundredths of a percent of rank.
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
    assert calibration.quantiles["0.99"] == pytest.approx(np.quantile(scores, 0.99))
    assert calibration.calibrated_quantiles is not None
    assert set(calibration.calibrated_quantiles) == {quantile_key(p) for p in CALIBRATED_LEVELS}
    assert calibration.confidence == CONFIDENCE


def test_calibrate_threshold_is_order_statistic_above_empirical_quantile_with_many_rows() -> None:
    scores = np.arange(1, 1001, dtype=float)
    calibration = calibrate(scores)
    # 1000 rows are enough for the distribution-free bound: one of the scores, above the 0.99 quantile
    # by about 1.28 binomial standard deviations (sqrt(1000 * 0.99 * 0.01) ~ 3.1 ranks).
    assert calibration.threshold in set(scores.tolist())
    assert np.quantile(scores, 0.99) + 2 <= calibration.threshold <= np.quantile(scores, 0.99) + 8


def test_calibrated_quantiles_are_non_decreasing_and_cover_empirical_ones() -> None:
    scores = np.random.default_rng(3).lognormal(0.0, 0.7, size=60)
    calibration = calibrate(scores)
    assert calibration.calibrated_quantiles is not None
    values = [
        calibration.calibrated_quantiles[k] for k in sorted(calibration.calibrated_quantiles, key=float)
    ]
    assert values == sorted(values)
    for key in ("0.5", "0.9", "0.99"):
        assert calibration.calibrated_quantiles[key] >= calibration.quantiles[key]


@pytest.mark.parametrize(("n", "trials"), [(20, 150), (300, 60), (5000, 12)])
@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_calibrate_keeps_false_alarm_rate_on_fresh_lognormal_draws(n: int, trials: int, rate: float) -> None:
    rng = np.random.default_rng(n)
    realised = []
    for _ in range(trials):
        calibration = calibrate(rng.lognormal(-4.0, 0.6, size=n), false_alarm_rate=0.01)
        threshold = calibration.threshold if rate == 0.01 else threshold_for_rate(calibration, rate)
        fresh = rng.lognormal(-4.0, 0.6, size=20_000)
        realised.append(float(np.mean(fresh > threshold)))
    # At most 1.5 points above the target on average (conservative is allowed, within reason: a 90%
    # bound from 20 rows sits well inside the tail), and above it in few trials (CONFIDENCE = 0.9 of
    # them should be at or below it; the fresh draw's own noise adds a little).
    assert rate / 4 <= np.mean(realised) <= rate + TOLERANCE
    assert np.mean(np.asarray(realised) > rate * 1.1) <= 1 - CONFIDENCE + 0.08


def test_calibrate_beats_empirical_quantile_on_twenty_rows() -> None:
    rng = np.random.default_rng(7)
    calibrated, empirical = [], []
    for _ in range(200):
        scores = rng.lognormal(0.0, 0.5, size=20)
        fresh = rng.lognormal(0.0, 0.5, size=5_000)
        calibrated.append(np.mean(fresh > calibrate(scores).threshold))
        empirical.append(np.mean(fresh > np.quantile(scores, 0.99)))
    # The empirical 0.99 quantile of 20 rows lets through about 5% of new normal rows.
    assert np.mean(empirical) > 0.03
    assert np.mean(calibrated) <= 0.01 + TOLERANCE


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2, 0.5])
def test_false_alarm_rate_maps_to_calibrated_grid(rate: float) -> None:
    calibration = calibrate(np.random.default_rng(4).lognormal(size=80))
    assert calibration.calibrated_quantiles is not None
    expected = calibration.calibrated_quantiles[quantile_key(1 - rate)]
    assert threshold_for_rate(calibration, rate) == pytest.approx(expected, rel=1e-12)
    assert calibration.threshold_for(rate) == pytest.approx(expected, rel=1e-12)
    # Order statistics can repeat across neighbouring levels; the inverse then reports the lowest rate
    # of that flat stretch, which maps back to the same threshold.
    reported = calibration.rate_for(expected)
    assert reported is not None and reported <= rate + 1e-9
    assert threshold_for_rate(calibration, reported) == pytest.approx(expected, rel=1e-12)


def test_false_alarm_rate_between_grid_levels_interpolates() -> None:
    calibration = calibrate(np.random.default_rng(5).lognormal(size=80))
    grid = calibration.calibrated_quantiles
    assert grid is not None
    # Level 0.975 is halfway between 0.97 and 0.98.
    assert threshold_for_rate(calibration, 0.025) == pytest.approx((grid["0.97"] + grid["0.98"]) / 2)


@pytest.mark.parametrize("rate", [0.01, 0.003, 0.02, 0.00001])
def test_default_threshold_equals_request_mapping_at_training_rate(rate: float) -> None:
    calibration = calibrate(np.random.default_rng(6).lognormal(size=40), false_alarm_rate=rate)
    assert threshold_for_rate(calibration, rate) == pytest.approx(calibration.threshold, rel=1e-12)
    assert math.isfinite(calibration.threshold)


def test_false_alarm_rate_maps_through_quantiles_without_calibrated_grid() -> None:
    legacy = ScoreCalibration(
        n=100,
        mean=1.0,
        std=1.0,
        quantiles={"0.5": 1.0, "0.9": 2.0, "0.99": 4.0},
        false_alarm_rate=0.01,
        threshold=4.0,
    )
    assert legacy.threshold_for(0.055) == pytest.approx(3.0)
    assert threshold_for_rate(legacy, 0.055) == pytest.approx(3.0)


def test_upper_quantile_bound_uses_lognormal_tolerance_with_few_rows() -> None:
    scores = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    logs = np.log(scores)
    bound = upper_quantile_bound(scores, 0.99)
    # Above the largest score, at more than the normal z_0.99 = 2.33 sample deviations in log space.
    assert bound > 16.0
    assert math.log(bound) > logs.mean() + 2.33 * logs.std(ddof=1)


def test_calibrate_handles_zero_and_constant_scores() -> None:
    assert calibrate(np.zeros(10)).threshold == 0.0
    assert calibrate(np.full(10, 0.5)).threshold == pytest.approx(0.5)
    with_zero = calibrate(np.array([0.0, 0.1, 0.2, 0.15, 0.12]))
    assert math.isfinite(with_zero.threshold)
    assert with_zero.threshold >= 0.2
    negative = calibrate(np.random.default_rng(8).normal(-5.0, 1.0, size=40))
    # A normal tolerance bound on the raw scores: above -5 + 2.33 (the 0.99 quantile).
    assert -2.67 < negative.threshold < 0


@pytest.mark.parametrize("scores", [np.array([]), np.array([1.0, np.nan])])
def test_calibrate_rejects_empty_or_non_finite_scores(scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match="finite"):
        calibrate(scores)
