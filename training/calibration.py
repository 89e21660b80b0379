"""Anomaly-score calibration on held-out normal rows: quantiles, moments and calibrated thresholds.

The held-out rows are either a validation split (`method="held_out"`) or every training row scored
out of fold (`method="cross_fit"`, see `training.crossfit`): K models each trained without one fold score
that fold, and their scores calibrate the final model trained on all rows.

The promise. For a false-alarm rate a, the threshold t(a) is the r(a)-th smallest of the n held-out scores,

    r(a) = max(ceil(n (1 - a)), R(a)),  R(a) = 1 + the CONFIDENCE quantile of Binom(n, 1 - a (1 + TOLERANCE)),

so that (for exchangeable normal rows, distribution-free) with probability at least CONFIDENCE over the
held-out draw, at most a fraction a * (1 + TOLERANCE) of new normal rows score above t(a): the realised
rate of the order statistic is Beta(n - r + 1, r) distributed. The first term keeps t(a) at or above the
empirical (1 - a) quantile, so with many rows the realised rate is near a itself, not far below it.

A level is supported when r(a) <= n, that is a >= a_min = (1 - (1 - CONFIDENCE)^(1/n)) / (1 + TOLERANCE):
57 rows support rates down to 2.6%, 357 rows down to 0.43%, 1,534 rows down to 0.1%. Only supported levels
are recorded in `calibrated_quantiles` (from rate 0.99 down to a_min, a_min itself included), so a request
for a lower rate is refused with the supported range (`service.core.calibration`), never clamped. When the
training target itself is below a_min, the default threshold is the one at a_min, and its
`false_alarm_rate` says so (training prints a note).

The bounds are taken non-decreasing over levels, and the default threshold is read from the same grid that
request-time false-alarm rates map through, so both keep the same promise.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from service.contract import ScoreCalibration

__all__ = [
    "CALIBRATED_LEVELS",
    "CONFIDENCE",
    "QUANTILE_LEVELS",
    "TOLERANCE",
    "CalibrationMethod",
    "calibrate",
    "lowest_supported_rate",
    "quantile_key",
    "threshold_rank",
]

CalibrationMethod = Literal["held_out", "cross_fit"]

# 0 and 1 record min and max; every 0.01 between, plus the tail levels anomaly thresholds live at.
QUANTILE_LEVELS: tuple[float, ...] = (
    0.0,
    *(round(0.01 * i, 2) for i in range(1, 100)),
    0.995,
    0.999,
    1.0,
)
# Levels of the calibrated thresholds: false-alarm rates from 0.99 down to 0.001 (a bound on the maximum
# does not exist, so no level 1), those the rows support.
CALIBRATED_LEVELS: tuple[float, ...] = QUANTILE_LEVELS[1:-1]
CONFIDENCE = 0.9
"""Probability, over the held-out draw, that a calibrated threshold's false-alarm rate is within target."""
TOLERANCE = 0.5
"""Relative tolerance of the promise: the realised rate of target a is at most a * (1 + TOLERANCE)."""


def quantile_key(level: float) -> str:
    """The decimal-string key of a quantile level, e.g. 0.99 -> "0.99", 1 -> "1.0"."""
    return str(round(float(level), 10))


def lowest_supported_rate(n: int, confidence: float = CONFIDENCE, tolerance: float = TOLERANCE) -> float:
    """The smallest false-alarm rate n held-out rows support: (1 - (1 - confidence)^(1/n)) / (1 + tolerance),
    where the threshold reaches the largest held-out score."""
    return -math.expm1(math.log1p(-confidence) / n) / (1 + tolerance)


def threshold_rank(n: int, rate: float, confidence: float = CONFIDENCE, tolerance: float = TOLERANCE) -> int:
    """r(rate): the 1-based rank among n ascending held-out scores of the threshold for `rate`; > n when the
    rows do not support the rate."""
    empirical = math.ceil(round(n * (1 - rate), 9))
    bounded = int(stats.binom.ppf(confidence, n, max(0.0, 1 - rate * (1 + tolerance)))) + 1
    return max(empirical, bounded, 1)


def calibrate(
    scores: npt.NDArray[np.floating],
    false_alarm_rate: float = 0.01,
    method: CalibrationMethod = "held_out",
    folds: int | None = None,
) -> ScoreCalibration:
    """Summarise held-out normal scores; the threshold is the calibrated one at `false_alarm_rate` (or at the
    lowest supported rate, when the rows do not support that)."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("calibration needs at least one score, all finite")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    n = int(values.size)
    ordered = np.sort(values)
    levels = np.asarray(QUANTILE_LEVELS)
    quantiles = np.quantile(values, levels)
    # Rounded as its grid key will be, so that the default rate maps back onto the grid exactly.
    lowest = round(1 - float(quantile_key(1 - lowest_supported_rate(n))), 12)
    # Rates as levels: the standard grid, the lowest supported rate, and the target, those supported.
    wanted = {*CALIBRATED_LEVELS, float(quantile_key(1 - false_alarm_rate)), 1 - lowest}
    grid = sorted(p for p in wanted if p <= 1 - lowest + 1e-12 and p < 1)
    ranks = [min(threshold_rank(n, 1 - p), n) for p in grid]
    bounds = np.maximum.accumulate([ordered[r - 1] for r in ranks])
    calibrated = {quantile_key(p): float(b) for p, b in zip(grid, bounds, strict=True)}
    default_rate = max(false_alarm_rate, lowest)
    default_key = quantile_key(1 - false_alarm_rate) if false_alarm_rate >= lowest else quantile_key(grid[-1])
    return ScoreCalibration(
        n=n,
        mean=float(values.mean()),
        std=float(values.std()),
        quantiles={quantile_key(q): float(v) for q, v in zip(levels, quantiles, strict=True)},
        false_alarm_rate=round(default_rate, 12),
        threshold=calibrated[default_key],
        calibrated_quantiles=calibrated,
        confidence=CONFIDENCE,
        tolerance=TOLERANCE,
        method=method,
        folds=folds,
        min_false_alarm_rate=round(1 - float(grid[-1]), 12),
    )
