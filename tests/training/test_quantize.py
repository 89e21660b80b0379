from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.contract import METADATA_FILE, ModelMetadata
from training import quantize
from training.artifact import recalibrate_version, train_version
from training.calibration import calibrate
from training.config import TrainConfig
from training.data import DataError, Dataset, split_rows
from training.scoring import score_rows

CONFIG = TrainConfig(variant="plain", latent_dim=2, hidden=(8,), epochs=2, false_alarm_rate=0.05, folds=0)


@pytest.fixture(scope="module")
def trained(digits: npt.NDArray[np.float32], tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The source names a file that is not there: the training data cannot be reloaded from the metadata.
    dataset = Dataset(digits[:80], "gone.npy")
    out = tmp_path_factory.mktemp("models")
    return train_version(CONFIG, dataset, out, "q", test_every=5, progress=False).directory


@pytest.fixture
def version(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "q" / "1"
    shutil.copytree(trained, copy)
    return copy


def _always_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    real_evaluate = quantize.evaluate

    def kept(*args: Any, **kwargs: Any) -> quantize.QuantisationReport:
        # Whether int8 is faster depends on the CPU; here only what applying does is under test.
        return dataclasses.replace(real_evaluate(*args, **kwargs), kept=True)

    monkeypatch.setattr(quantize, "evaluate", kept)


def test_quantise_version_recalibrates_the_int8_graphs_on_the_validation_rows(
    version: Path, digits: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_kept(monkeypatch)
    before = ModelMetadata.read(version)
    quantize.quantise_version(version, digits[:80], apply=True)
    after = ModelMetadata.read(version)
    assert after.metrics["int8_quantised"] == 1.0
    validation = digits[:80][split_rows(80, CONFIG.validation_fraction, CONFIG.seed, 5).validation]
    int8_scores = score_rows(version, validation).scores["mse"]
    expected = calibrate(int8_scores, CONFIG.false_alarm_rate)
    assert after.calibration["mse"] == expected
    assert after.calibration["mse"] != before.calibration["mse"]


def test_quantise_version_refuses_rows_that_are_not_the_training_data(
    version: Path, digits: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_kept(monkeypatch)
    files = {p.name: p.read_bytes() for p in version.iterdir()}
    with pytest.raises(DataError, match="has 79 rows, expected the 80 rows"):
        quantize.quantise_version(version, digits[:79], apply=True)
    assert {p.name: p.read_bytes() for p in version.iterdir()} == files


def test_recalibrate_version_refuses_data_with_other_feature_ranges(
    version: Path, digits: npt.NDArray[np.float32]
) -> None:
    with pytest.raises(DataError, match="different per-feature ranges"):
        recalibrate_version(version, Dataset(digits[100:180], "gone.npy"))


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        status = quantize.main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code  # type: ignore[assignment]
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_quantize_main_refuses_apply_when_the_training_data_cannot_be_reloaded(
    version: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {p.name: p.read_bytes() for p in version.iterdir()}
    err = _one_line_error([str(version), "--apply"], capsys)
    assert "trained on 'gone.npy'" in err and "--train PATH" in err
    assert {p.name: p.read_bytes() for p in version.iterdir()} == files


def test_quantize_main_applies_with_train_given(
    version: Path, digits: npt.NDArray[np.float32], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_kept(monkeypatch)
    np.save(tmp_path / "rows.npy", digits[:80])
    assert quantize.main([str(version), "--apply", "--train", str(tmp_path / "rows.npy")]) == 0
    assert ModelMetadata.read(version).metrics["int8_quantised"] == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{d}/missing"], "no metadata.json in"),
        (["{d}/broken"], "is not valid model metadata"),
        (["{v}", "--max-drift", "-0.1"], "expected a value in [0.0, 1.0]"),
        (["{v}", "--max-drift", "nan"], "expected a value in [0.0, 1.0]"),
        (["{v}", "--max-drift", "much"], "expected a number"),
        (["{v}", "--train", "{d}/absent.npy"], "not found"),
    ],
)
def test_quantize_main_bad_input_exits_2_with_one_line(
    args: list[str], message: str, version: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / METADATA_FILE).write_text('{"name": "x"}')
    argv = [a.format(d=tmp_path, v=version) for a in args]
    assert message in _one_line_error(argv, capsys)


def test_cross_fitted_version_is_not_quantised(
    digits: npt.NDArray[np.float32], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always_kept(monkeypatch)
    config = dataclasses.replace(CONFIG, folds=3)
    directory = train_version(
        config, Dataset(digits[:60], "gone.npy"), tmp_path, "c", progress=False
    ).directory
    before = ModelMetadata.read(directory)
    report = quantize.quantise_version(directory, digits[:60], apply=True)
    assert not report.kept and "calibrated by cross-fitting" in report.reason
    assert ModelMetadata.read(directory) == before
