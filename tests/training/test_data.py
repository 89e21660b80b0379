from __future__ import annotations

import numpy as np
import pytest

from training.config import NormalisationKind
from training.data import MIN_ROWS, MIN_TRAIN_ROWS, DataError, Normaliser, split_rows, validate_rows


def test_normaliser_gives_constant_features_unit_scale() -> None:
    x = np.array([[0.0, 5.0, 1.0], [0.0, 5.0, 3.0], [0.0, 5.0, 5.0]], dtype=np.float32)
    kinds: tuple[NormalisationKind, ...] = ("standard", "minmax")
    for kind in kinds:
        normaliser = Normaliser.fit(x, kind)
        assert normaliser.scale[0] == 1.0 and normaliser.scale[1] == 1.0
        assert np.all(np.isfinite(normaliser.transform(x)))
        np.testing.assert_allclose(normaliser.inverse(normaliser.transform(x)), x, atol=1e-6)


def test_normaliser_shared_scale_uses_one_range_for_all_features() -> None:
    x = np.array([[0.0, 1.0], [16.0, 2.0]], dtype=np.float32)
    normaliser = Normaliser.fit(x, "minmax", shared=True)
    np.testing.assert_array_equal(normaliser.scale, [16.0, 16.0])
    np.testing.assert_array_equal(normaliser.offset, [0.0, 0.0])


def test_normaliser_shared_standard_uses_one_mean_and_one_std_for_all_features() -> None:
    # Two features far apart: per-feature means would leave the gap between them inside the shared std.
    x = np.array([[0.0, 100.0], [2.0, 102.0], [4.0, 104.0]], dtype=np.float32)
    normaliser = Normaliser.fit(x, "standard", shared=True)
    np.testing.assert_allclose(normaliser.offset, [x.mean(), x.mean()], rtol=1e-6)
    np.testing.assert_allclose(normaliser.scale, [x.std(), x.std()], rtol=1e-6)
    normalised = normaliser.transform(x)
    assert abs(float(normalised.mean())) < 1e-5 and float(normalised.std()) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(normaliser.inverse(normalised), x, atol=1e-4)


def test_split_rows_holds_out_every_fifth_row_and_a_seeded_validation_split() -> None:
    split = split_rows(100, 0.25, seed=3, test_every=5)
    assert np.array_equal(split.test, np.arange(0, 100, 5))
    assert len(split.validation) == 20 and len(split.train) == 60
    assert not set(split.train) & set(split.validation)
    assert np.array_equal(split_rows(100, 0.25, seed=3).validation, split.validation)


def test_split_rows_with_the_defaults_needs_13_rows_and_min_rows_with_no_test_split() -> None:
    assert len(split_rows(13, 0.2, seed=0).train) == MIN_TRAIN_ROWS
    with pytest.raises(DataError, match=f"expected at least {MIN_TRAIN_ROWS}"):
        split_rows(12, 0.2, seed=0)
    assert len(split_rows(MIN_ROWS, 0.2, seed=0, test_every=0).train) == MIN_TRAIN_ROWS


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((5, 3)), "at least 10 rows"),
        (np.zeros(20), "2-D"),
        (np.full((20, 2), np.nan), "NaN"),
        (np.array([["a", "b"]] * 20), "numeric"),
    ],
)
def test_validate_rows_rejects_bad_data(x: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_rows(x, "data.npy")
