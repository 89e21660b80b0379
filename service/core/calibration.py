"""Request-time calibration: turning a false-alarm rate into a threshold through the recorded calibration.

Training records, per score, thresholds t(p) at the levels p its held-out rows support
(`calibrated_quantiles`): a held-out score such that, with the recorded `confidence`, at most a fraction
(1 - p) * (1 + tolerance) of new normal rows score above t(p) (see `training.calibration`; the held-out
scores come from a validation split or from cross-fitting, `method`). Metadata written before calibrated
thresholds has only the held-out scores' empirical quantiles q(p) (`quantiles`), and those serve as t(p)
there. A false-alarm rate r asks for t(1 - r); the default threshold is read from the same grid at the
training rate. Between two recorded levels p_i <= 1 - r <= p_{i+1} t is taken as linear:
t = t(p_i) + (t(p_{i+1}) - t(p_i)) * ((1 - r) - p_i) / (p_{i+1} - p_i).

Outside the recorded levels there is nothing to interpolate from, and below the lowest supported rate no
threshold keeps the promise, so such rates are refused (422) with the supported range, never clamped.
`threshold_source` in the answer says which threshold was used: "request" (the request's own threshold;
`false_alarm_rate` is then the rate it corresponds to, null outside the supported range),
"false_alarm_rate" (mapped from the request's rate, which the rows support), or "model_default" (the
calibrated default; its `false_alarm_rate` is the rate it keeps, which is the training target unless the
training rows could not support that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.contract import ModelMetadata, ScoreCalibration, ScoreName
from service.errors import InvalidInputError

__all__ = ["ThresholdChoice", "choose_threshold", "threshold_for_rate"]

ThresholdSource = Literal["request", "false_alarm_rate", "model_default"]


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float | None
    source: ThresholdSource | None
    false_alarm_rate: float | None


def threshold_for_rate(calibration: ScoreCalibration, false_alarm_rate: float) -> float:
    """The threshold at quantile level 1 - rate (`ScoreCalibration.threshold_for`); 422 outside the grid."""
    try:
        return calibration.threshold_for(false_alarm_rate)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def choose_threshold(
    metadata: ModelMetadata, score: ScoreName, threshold: float | None, false_alarm_rate: float | None
) -> ThresholdChoice:
    """The request's threshold, else one mapped from its false_alarm_rate, else the model's default."""
    calibration = metadata.calibration.get(score)
    if threshold is not None:
        rate = calibration.rate_for(threshold) if calibration else None
        return ThresholdChoice(threshold, "request", rate)
    if false_alarm_rate is not None:
        if calibration is None:
            raise InvalidInputError(
                f"model {metadata.name} version {metadata.version} has no calibration for score {score!r}, "
                "so a false_alarm_rate cannot be mapped; pass an explicit threshold instead"
            )
        return ThresholdChoice(
            threshold_for_rate(calibration, false_alarm_rate), "false_alarm_rate", false_alarm_rate
        )
    if calibration is None:
        return ThresholdChoice(None, None, None)
    return ThresholdChoice(calibration.threshold, "model_default", calibration.false_alarm_rate)
