"""int8 dynamic quantisation of a model version: measured, applied only when kept, and still loadable."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.contract import ModelMetadata
from service.core.runtime import OnnxModel
from training import quantize
from training.evaluate import TrainingRows

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "tiny" / "1"


@pytest.fixture
def version(tmp_path: Path) -> Path:
    target = tmp_path / "tiny" / "1"
    shutil.copytree(FIXTURE, target)
    return target


def _rows(meta: ModelMetadata) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(128, meta.input_dim)).astype(np.float32)


def test_quantise_version_measures_without_touching_files(version: Path) -> None:
    before = {p.name: p.read_bytes() for p in version.iterdir()}
    meta = ModelMetadata.read(version)
    report = quantize.quantise_version(version, _rows(meta), apply=False)
    assert {p.name: p.read_bytes() for p in version.iterdir()} == before
    assert report.fp32_us_b1 > 0 and report.int8_us_b64 > 0
    assert report.drift == pytest.approx(abs(report.int8_error - report.fp32_error) / report.fp32_error)
    assert report.kept == (report.speedup_b1 > 1 and report.speedup_b64 > 1 and report.drift <= 0.01)


def test_quantise_version_refuses_when_drift_is_over_the_limit(version: Path) -> None:
    meta = ModelMetadata.read(version)
    report = quantize.quantise_version(version, _rows(meta), apply=True, max_drift=0.0)
    assert not report.kept
    assert ModelMetadata.read(version).graphs == meta.graphs


def test_quantise_version_applied_graphs_load_with_updated_hashes(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_evaluate = quantize.evaluate

    def kept(*args: Any, **kwargs: Any) -> quantize.QuantisationReport:
        # Whether int8 is faster depends on the CPU; here only what applying does is under test.
        return dataclasses.replace(real_evaluate(*args, **kwargs), kept=True)

    monkeypatch.setattr(quantize, "evaluate", kept)
    before = ModelMetadata.read(version)
    rows = _rows(before)
    # The fixture's rows are synthetic, so its validation split cannot be rebuilt: stand in 40 rows for it.
    monkeypatch.setattr(
        quantize, "split_training_rows", lambda *_: TrainingRows(rows[40:], rows[:40], "synthetic")
    )
    report = quantize.quantise_version(version, rows, apply=True)
    after = ModelMetadata.read(version)
    # The applied int8 graphs got thresholds from their own scores on those validation rows.
    assert after.calibration and all(c.n == 40 for c in after.calibration.values())
    assert all(after.graphs[r].sha256 != before.graphs[r].sha256 for r in before.graphs)
    assert after.metrics["int8_quantised"] == 1.0
    assert after.metrics["int8_error_drift"] == pytest.approx(report.drift)
    model = OnnxModel.load(version)
    model.warm_up()
    x = _rows(before)[:4]
    reference = OnnxModel.load(FIXTURE).denoise(x)
    np.testing.assert_allclose(model.denoise(x), reference, atol=0.05 * float(np.abs(reference).max()) + 0.05)
