"""Anomaly-score calibration on held-out normal rows: quantiles, moments and calibrated thresholds.

The empirical (1 - a) quantile of n held-out scores breaks its promise when n is small: with 20 rows the 0.99
quantile sits at or below their maximum, so about 1 new normal row in 20 lands above it, not 1 in 100. And the
validation rows also chose the early-stopping checkpoint, so their scores run lower than new rows' do.

The threshold for a false-alarm rate a is therefore an upper `CONFIDENCE` bound on the (1 - a) quantile of
normal scores (a tolerance limit): with probability `CONFIDENCE` over the held-out draw, at most a fraction a
of new normal rows score above it.

- Enough rows (n with P(Binom(n, 1 - a) <= n - 1) >= CONFIDENCE, e.g. n >= 230 for a = 0.01): the r-th
  smallest score, r - 1 the CONFIDENCE quantile of Binom(n, 1 - a). Distribution-free for exchangeable rows.
- Fewer rows: reconstruction errors are positive with roughly normal logs, so
  exp(mean_log + k * std_log) with the one-sided normal tolerance factor
  k = t'_{n-1, z_{1-a} sqrt(n)}(CONFIDENCE) / sqrt(n) (t' the noncentral t); on the scores themselves
  (mean + k * std) when any is zero or negative.

The bounds are taken non-decreasing over levels, and the default threshold is read from the same grid that
request-time false-alarm rates map through (`service.core.calibration`), so both keep the same promise.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import stats

from service.contract import ScoreCalibration

__all__ = [
    "CALIBRATED_LEVELS",
    "CONFIDENCE",
    "QUANTILE_LEVELS",
    "calibrate",
    "quantile_key",
    "upper_quantile_bound",
]

# 0 and 1 record min and max; every 0.01 between, plus the tail levels anomaly thresholds live at.
QUANTILE_LEVELS: tuple[float, ...] = (
    0.0,
    *(round(0.01 * i, 2) for i in range(1, 100)),
    0.995,
    0.999,
    1.0,
)
# Levels of the calibrated thresholds: false-alarm rates from 0.99 down to 0.001 (a bound on the maximum
# does not exist, so no level 1).
CALIBRATED_LEVELS: tuple[float, ...] = QUANTILE_LEVELS[1:-1]
CONFIDENCE = 0.9
"""Probability, over the held-out draw, that a calibrated threshold's false-alarm rate is within target."""


def quantile_key(level: float) -> str:
    """The decimal-string key of a quantile level, e.g. 0.99 -> "0.99", 1 -> "1.0"."""
    return str(round(float(level), 10))


def _tolerance_bound(ordered: npt.NDArray[np.float64], level: float, confidence: float) -> float:
    """Upper `confidence` tolerance bound on the `level` quantile, taking log-scores as normal (the scores
    themselves where any is zero or negative, which a log cannot take)."""
    values = np.log(ordered) if ordered[0] > 0 else ordered
    spread = float(values.std(ddof=1))
    if spread == 0.0:
        return float(ordered[-1])
    root_n = math.sqrt(values.size)
    factor = float(stats.nct.ppf(confidence, values.size - 1, stats.norm.ppf(level) * root_n)) / root_n
    bound = float(values.mean()) + factor * spread
    return float(np.exp(bound)) if ordered[0] > 0 else bound


def upper_quantile_bound(
    scores: npt.NDArray[np.floating], level: float, confidence: float = CONFIDENCE
) -> float:
    """An upper `confidence` bound on the `level` quantile of the distribution `scores` (n >= 1) came from.

    The order statistic when the rows are enough for a distribution-free bound, else the normal tolerance
    bound on the log-scores (needs n >= 2; one row gives itself).
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = ordered.size
    # P(X_(r) >= q_level) = P(Binom(n, level) <= r - 1): the smallest r that reaches `confidence`.
    rank = int(stats.binom.ppf(confidence, n, level)) + 1
    if rank <= n:
        return float(ordered[rank - 1])
    if n < 2:
        return float(ordered[-1])
    return _tolerance_bound(ordered, level, confidence)


def calibrate(scores: npt.NDArray[np.floating], false_alarm_rate: float = 0.01) -> ScoreCalibration:
    """Summarise held-out normal scores; the threshold is the calibrated bound at 1 - false_alarm_rate."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("calibration needs at least one score, all finite")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    levels = np.asarray(QUANTILE_LEVELS)
    quantiles = np.quantile(values, levels)
    default_key = quantile_key(1 - false_alarm_rate)
    calibrated_levels = sorted({*CALIBRATED_LEVELS, float(default_key)})
    bounds = np.maximum.accumulate([upper_quantile_bound(values, p) for p in calibrated_levels])
    calibrated = {quantile_key(p): float(b) for p, b in zip(calibrated_levels, bounds, strict=True)}
    return ScoreCalibration(
        n=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        quantiles={quantile_key(q): float(v) for q, v in zip(levels, quantiles, strict=True)},
        false_alarm_rate=false_alarm_rate,
        threshold=calibrated[default_key],
        calibrated_quantiles=calibrated,
        confidence=CONFIDENCE,
    )
