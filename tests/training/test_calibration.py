from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from service.contract import ModelMetadata, ScoreCalibration
from service.core.calibration import choose_threshold, threshold_for_rate
from service.errors import InvalidInputError
from tests.fixtures.make_models import FIXTURE_MODELS
from training.calibration import (
    CONFIDENCE,
    QUANTILE_LEVELS,
    TOLERANCE,
    calibrate,
    lowest_supported_rate,
    quantile_key,
    threshold_rank,
)
from training.crossfit import cross_fit, fold_plan

# The promise: with probability CONFIDENCE the realised rate is at most target * (1 + TOLERANCE). Over many
# trials the share of trials above that may exceed 1 - CONFIDENCE by the trials' own binomial noise only.
SLACK = 0.08


def test_calibrate_matches_analytic_exponential_quantiles() -> None:
    scores = np.random.default_rng(0).exponential(scale=2.0, size=200_000)
    calibration = calibrate(scores, false_alarm_rate=0.05)
    for level in (0.5, 0.9, 0.95, 0.99):
        analytic = -2.0 * math.log(1 - level)
        assert calibration.quantiles[str(level)] == pytest.approx(analytic, rel=0.02)
    # With this many rows the threshold is the empirical quantile: the realised rate is the target itself.
    assert calibration.threshold == pytest.approx(-2.0 * math.log(0.05), rel=0.02)
    assert calibration.mean == pytest.approx(2.0, rel=0.02)
    assert calibration.n == 200_000 and calibration.method == "held_out"


def test_calibrate_records_dense_grid_with_min_and_max() -> None:
    scores = np.arange(1, 5001, dtype=float)
    calibration = calibrate(scores)
    assert len(calibration.quantiles) == len(QUANTILE_LEVELS) == 103
    assert calibration.quantiles["0.0"] == 1.0 and calibration.quantiles["1.0"] == 5000.0
    assert calibration.calibrated_quantiles is not None
    # 5000 rows support every grid level down to 0.1%.
    assert {"0.01", "0.5", "0.99", "0.995", "0.999"} <= set(calibration.calibrated_quantiles)
    assert (calibration.confidence, calibration.tolerance) == (CONFIDENCE, TOLERANCE)


def test_threshold_is_the_empirical_quantile_or_the_tolerance_bound_whichever_is_higher() -> None:
    # 3000 rows at 1%: the empirical 0.99 quantile (rank 2970) already keeps the promise at 1.5%.
    assert threshold_rank(3000, 0.01) == 2970
    # 357 rows at 1%: the tolerance bound (rank 355) is above the empirical quantile (rank 354).
    assert threshold_rank(357, 0.01) == 355
    calibration = calibrate(np.arange(1, 358, dtype=float))
    assert calibration.threshold == 355.0


@pytest.mark.parametrize("n", [57, 150, 357, 2000])
def test_lowest_supported_rate_is_where_the_threshold_reaches_the_largest_score(n: int) -> None:
    lowest = lowest_supported_rate(n)
    assert threshold_rank(n, lowest * 1.001) <= n < threshold_rank(n, lowest * 0.95)
    calibration = calibrate(np.random.default_rng(n).lognormal(size=n), false_alarm_rate=0.5)
    assert calibration.min_false_alarm_rate == pytest.approx(lowest, rel=1e-6)
    assert calibration.supported_rates() == pytest.approx((lowest, 0.99), rel=1e-6)


def test_thresholds_for_one_two_and_five_percent_are_distinct_with_357_rows() -> None:
    calibration = calibrate(np.random.default_rng(1).lognormal(size=357), method="cross_fit", folds=5)
    t1, t2, t5 = (calibration.threshold_for(r) for r in (0.01, 0.02, 0.05))
    assert t1 > t2 > t5


@pytest.mark.parametrize(("n", "trials"), [(60, 300), (357, 200), (3000, 60)])
@pytest.mark.parametrize("rate", [0.01, 0.05])
def test_calibrate_keeps_its_promise_on_fresh_lognormal_draws(n: int, trials: int, rate: float) -> None:
    rng = np.random.default_rng(n)
    realised = []
    for _ in range(trials):
        calibration = calibrate(rng.lognormal(-4.0, 0.6, size=n), false_alarm_rate=0.01)
        low, _ = calibration.supported_rates()
        if rate < low:
            with pytest.raises(ValueError, match="not supported"):
                calibration.threshold_for(rate)
            return
        fresh = rng.lognormal(-4.0, 0.6, size=20_000)
        realised.append(float(np.mean(fresh > calibration.threshold_for(rate))))
    bound = rate * (1 + TOLERANCE)
    assert np.mean(np.asarray(realised) > bound) <= 1 - CONFIDENCE + SLACK
    # Near the target rather than far below it.
    assert rate / 3 <= np.mean(realised) <= rate * (1 + TOLERANCE / 2)


@pytest.mark.parametrize("n", [120, 400])
def test_cross_fitted_calibration_keeps_its_promise_on_generated_data(n: int) -> None:
    """Out-of-fold scores of K models calibrate the model trained on every row: over many seeds, the
    realised rate on new rows exceeds target * (1 + TOLERANCE) in at most 1 - CONFIDENCE of them."""
    rate, trials = 0.05, 150
    realised = []
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        x = rng.standard_t(df=5, size=(n, 4))

        def fit_and_score(
            train: npt.NDArray[np.int64],
            scored: npt.NDArray[np.int64],
            x: npt.NDArray[np.float64] = x,
        ) -> dict[str, npt.NDArray[np.float64]]:
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            return {"d": np.sqrt((((x[scored] - mean) / std) ** 2).sum(axis=1))}

        out_of_fold = cross_fit(fit_and_score, fold_plan(n, 5, seed=seed))["d"]
        threshold = calibrate(out_of_fold, rate, "cross_fit", 5).threshold
        mean, std = x.mean(axis=0), x.std(axis=0)  # the final model, trained on every row
        fresh = rng.standard_t(df=5, size=(20_000, 4))
        realised.append(float(np.mean(np.sqrt((((fresh - mean) / std) ** 2).sum(axis=1)) > threshold)))
    assert np.mean(np.asarray(realised) > rate * (1 + TOLERANCE)) <= 1 - CONFIDENCE + SLACK
    assert rate / 3 <= np.mean(realised) <= rate * (1 + TOLERANCE)


def test_fold_plans_cover_every_row_once_and_contiguous_ones_leave_a_gap() -> None:
    shuffled = fold_plan(103, 5, seed=2)
    assert np.array_equal(np.sort(np.concatenate(shuffled.folds)), np.arange(103))
    assert {len(f) for f in shuffled.folds} <= {20, 21}
    blocks = fold_plan(100, 4, contiguous=True, gap=3)
    assert np.array_equal(blocks.folds[1], np.arange(25, 50))
    assert np.array_equal(blocks.training_rows(1), np.r_[np.arange(0, 22), np.arange(53, 100)])
    with pytest.raises(ValueError, match="folds"):
        fold_plan(3, 5)


def test_cross_fit_scores_each_row_by_the_model_trained_without_it() -> None:
    seen: list[tuple[set[int], set[int]]] = []

    def fit_and_score(
        train: npt.NDArray[np.int64], scored: npt.NDArray[np.int64]
    ) -> dict[str, npt.NDArray[np.float64]]:
        seen.append((set(train.tolist()), set(scored.tolist())))
        return {"index": scored.astype(float)}

    out = cross_fit(fit_and_score, fold_plan(30, 3, seed=0))
    assert np.array_equal(out["index"], np.arange(30))
    assert all(not (train & scored) and len(train | scored) == 30 for train, scored in seen)


def test_unsupported_rates_are_refused_with_the_supported_range_never_clamped() -> None:
    calibration = calibrate(np.random.default_rng(3).lognormal(size=57), method="cross_fit", folds=5)
    low, high = calibration.supported_rates()
    assert low == pytest.approx(lowest_supported_rate(57)) and high == pytest.approx(0.99)
    with pytest.raises(ValueError, match=r"57 held-out normal rows \(cross-fitted over 5 folds\) support "):
        calibration.threshold_for(0.01)
    with pytest.raises(InvalidInputError, match=f"from {low:.6g} to 0.99"):
        threshold_for_rate(calibration, 0.01)
    assert calibration.threshold_for(0.05) < calibration.threshold_for(low)


def test_default_threshold_sits_at_the_lowest_supported_rate_when_the_target_is_not_supported() -> None:
    calibration = calibrate(np.random.default_rng(4).lognormal(size=57), false_alarm_rate=0.01)
    assert calibration.false_alarm_rate == pytest.approx(lowest_supported_rate(57))
    assert calibration.threshold == pytest.approx(
        threshold_for_rate(calibration, calibration.false_alarm_rate)
    )


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.2, 0.5])
def test_false_alarm_rate_maps_to_calibrated_grid(rate: float) -> None:
    calibration = calibrate(np.random.default_rng(4).lognormal(size=800))
    assert calibration.calibrated_quantiles is not None
    expected = calibration.calibrated_quantiles[quantile_key(1 - rate)]
    assert threshold_for_rate(calibration, rate) == pytest.approx(expected, rel=1e-12)
    reported = calibration.rate_for(expected)
    assert reported is not None and reported <= rate + 1e-9
    assert threshold_for_rate(calibration, reported) == pytest.approx(expected, rel=1e-12)


def test_false_alarm_rate_between_grid_levels_interpolates() -> None:
    calibration = calibrate(np.random.default_rng(5).lognormal(size=800))
    grid = calibration.calibrated_quantiles
    assert grid is not None
    assert threshold_for_rate(calibration, 0.025) == pytest.approx((grid["0.97"] + grid["0.98"]) / 2)


@pytest.mark.parametrize("rate", [0.01, 0.003, 0.02])
def test_default_threshold_equals_request_mapping_at_training_rate(rate: float) -> None:
    calibration = calibrate(np.random.default_rng(6).lognormal(size=3000), false_alarm_rate=rate)
    assert calibration.false_alarm_rate == rate
    assert threshold_for_rate(calibration, rate) == pytest.approx(calibration.threshold, rel=1e-12)


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
    with pytest.raises(ValueError, match=r"from 0\.01 to 0\.5"):
        legacy.threshold_for(0.001)


def test_choose_threshold_says_where_the_threshold_came_from() -> None:
    metadata = ModelMetadata.read(FIXTURE_MODELS / "tiny" / "1")
    score = metadata.default_score
    calibration = metadata.calibration[score]
    assert choose_threshold(metadata, score, None, None).source == "model_default"
    assert choose_threshold(metadata, score, 1.5, None).source == "request"
    low, _ = calibration.supported_rates()
    mapped = choose_threshold(metadata, score, None, max(low, 0.2))
    assert (mapped.source, mapped.false_alarm_rate) == ("false_alarm_rate", max(low, 0.2))


def test_calibrate_handles_zero_and_constant_scores() -> None:
    assert calibrate(np.zeros(300)).threshold == 0.0
    assert calibrate(np.full(300, 0.5)).threshold == pytest.approx(0.5)


@pytest.mark.parametrize("scores", [np.array([]), np.array([1.0, np.nan])])
def test_calibrate_rejects_empty_or_non_finite_scores(scores: np.ndarray) -> None:
    with pytest.raises(ValueError, match="finite"):
        calibrate(scores)
