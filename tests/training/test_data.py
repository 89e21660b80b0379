from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.contract import ImageSpec, Normalisation
from training.config import NormalisationKind
from training.data import (
    MIN_ROWS,
    MIN_TRAIN_ROWS,
    DataError,
    Normaliser,
    load_data,
    split_rows,
    validate_rows,
)


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


def test_load_data_reads_digits_and_3d_npy_as_one_channel_images(tmp_path: Path) -> None:
    digits = load_data("digits")
    assert (digits.kind, digits.x.shape[1:], digits.image) == (
        "image",
        (1, 8, 8),
        ImageSpec(channels=1, height=8, width=8, pixel_range=(0.0, 16.0)),
    )
    np.save(tmp_path / "grey.npy", np.arange(12 * 7 * 9, dtype=np.uint8).reshape(12, 7, 9))
    grey = load_data(str(tmp_path / "grey.npy"))
    assert grey.kind == "image" and grey.x.shape == (12, 1, 7, 9) and grey.x.dtype == np.float32
    assert grey.image == ImageSpec(channels=1, height=7, width=9, pixel_range=(0.0, 255.0))
    assert load_data("iris").kind == "rows" and load_data("iris").image is None


def test_load_data_reads_4d_npy_as_channels_first_images(tmp_path: Path) -> None:
    colour = np.random.default_rng(0).uniform(0, 1, (11, 3, 5, 6)).astype(np.float32)
    np.save(tmp_path / "colour.npy", colour)
    dataset = load_data(str(tmp_path / "colour.npy"))
    assert dataset.kind == "image" and dataset.image is not None
    assert (dataset.image.channels, dataset.image.height, dataset.image.width) == (3, 5, 6)
    np.testing.assert_array_equal(dataset.x, colour)
    np.save(tmp_path / "bands.npy", np.zeros((11, 5, 4, 4)))
    with pytest.raises(DataError, match="1 to 4 channels, got 5 channels"):
        load_data(str(tmp_path / "bands.npy"))
    np.save(tmp_path / "volume.npy", np.zeros((11, 2, 3, 4, 4)))
    with pytest.raises(DataError, match="4-D"):
        load_data(str(tmp_path / "volume.npy"))


def test_validate_rows_locates_a_nan_in_an_image() -> None:
    images = np.zeros((12, 1, 4, 4))
    images[3, 0, 2, 1] = np.nan
    with pytest.raises(DataError, match=r"first at row 3, position \(0, 2, 1\)"):
        validate_rows(images, "images.npy")


def test_normaliser_fits_series_per_channel_over_time() -> None:
    windows = np.random.default_rng(0).normal(size=(20, 9, 3)).astype(np.float32) * [1.0, 10.0, 100.0]
    normaliser = Normaliser.fit(windows, "standard")
    assert normaliser.offset.shape == (1, 3)
    np.testing.assert_allclose(normaliser.offset[0], windows.mean(axis=(0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(normaliser.scale[0], windows.std(axis=(0, 1)), rtol=1e-5)
    normalised = normaliser.transform(windows)
    np.testing.assert_allclose(normalised.std(axis=(0, 1)), 1.0, rtol=1e-4)


def test_normaliser_fits_images_per_channel_or_shared() -> None:
    images = np.random.default_rng(0).uniform(size=(10, 2, 4, 5)).astype(np.float32)
    images[:, 1] *= 255.0
    per_channel = Normaliser.fit(images, "minmax", channel_axis=0)
    assert per_channel.scale.shape == (2, 1, 1)
    np.testing.assert_allclose(per_channel.offset.ravel(), images.min(axis=(0, 2, 3)), rtol=1e-6)
    shared = Normaliser.fit(images, "minmax", shared=True, channel_axis=0)
    assert shared.scale.shape == (2, 1, 1)
    np.testing.assert_allclose(shared.scale.ravel(), [np.ptp(images)] * 2, rtol=1e-6)
    # What the metadata records reads back into the same shapes.
    recorded = Normalisation(kind="minmax", offset=[0.0], scale=[16.0])
    back = Normaliser.of(recorded, (2, 4, 5), channel_axis=0)
    assert back.offset.shape == back.scale.shape == (2, 1, 1) and np.all(back.scale == 16.0)
