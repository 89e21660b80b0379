"""Anomaly-score calibration on held-out normal rows: quantiles, moments, a default threshold (numpy only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.metadata import ScoreCalibration

__all__ = ["QUANTILE_LEVELS", "calibrate", "quantile_key", "threshold_for"]

# 0 and 1 record min and max; every 0.01 between, plus the tail levels anomaly thresholds live at.
QUANTILE_LEVELS: tuple[float, ...] = (
    0.0,
    *(round(0.01 * i, 2) for i in range(1, 100)),
    0.995,
    0.999,
    1.0,
)


def quantile_key(level: float) -> str:
    """The decimal-string key of a quantile level, e.g. 0.99 -> "0.99", 1 -> "1.0"."""
    return str(round(float(level), 4))


def calibrate(scores: npt.NDArray[np.floating], false_alarm_rate: float = 0.01) -> ScoreCalibration:
    """Summarise held-out normal scores; the threshold is their (1 - false_alarm_rate) quantile."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("calibration needs at least one score, all finite")
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    levels = np.asarray(QUANTILE_LEVELS)
    quantiles = np.quantile(values, levels)
    return ScoreCalibration(
        n=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        quantiles={quantile_key(q): float(v) for q, v in zip(levels, quantiles, strict=True)},
        false_alarm_rate=false_alarm_rate,
        threshold=float(np.quantile(values, 1 - false_alarm_rate)),
    )


def threshold_for(calibration: ScoreCalibration, false_alarm_rate: float) -> float:
    """The score at level 1 - false_alarm_rate, linearly interpolated between the recorded quantiles."""
    if not 0 <= false_alarm_rate <= 1:
        raise ValueError(f"false_alarm_rate must be in [0, 1], got {false_alarm_rate}")
    points = sorted((float(k), v) for k, v in calibration.quantiles.items())
    levels = np.array([p[0] for p in points])
    values = np.array([p[1] for p in points])
    return float(np.interp(1 - false_alarm_rate, levels, values))
