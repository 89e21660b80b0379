from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.figure import Figure

from training.artifact import train_version
from training.config import TrainConfig
from training.data import Dataset
from training.evaluate import MethodResult, save_roc_plot


@pytest.fixture
def saved(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Every figure saved, by file name, kept open for inspection."""
    figures: dict[str, Figure] = {}
    real = Figure.savefig

    def savefig(self: Figure, path: object, *args: object, **kwargs: object) -> None:
        figures[Path(str(path)).name] = self
        real(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def _labels(figure: Figure) -> list[tuple[str, str]]:
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in figure.axes]


def test_table_plots_label_every_axis_and_name_the_features(
    saved: dict[str, Figure], tmp_path: Path, digits: npt.NDArray[np.float32]
) -> None:
    names = tuple(f"pixel_{i}" for i in range(12))
    dataset = Dataset(digits[:, 20:32], "rows", feature_names=names)
    config = TrainConfig(latent_dim=3, hidden=(8,), epochs=2, folds=3)
    directory = train_version(config, dataset, tmp_path, "t", progress=False).directory
    expected = {"loss_curves.png", "feature_errors.png", "score_histogram.png"}
    assert expected <= set(saved)
    for name in expected:
        assert (directory / name).stat().st_size > 1000
        assert all(x and y for x, y in _labels(saved[name])), name
    ticks = [t.get_text() for t in saved["feature_errors.png"].axes[0].get_xticklabels()]
    assert ticks == list(names)
    threshold_lines = [
        line for line in saved["score_histogram.png"].axes[0].lines if "threshold" in str(line.get_label())
    ]
    assert len(threshold_lines) == 1


def test_roc_plot_marks_the_operating_point(saved: dict[str, Figure], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    result = MethodResult("m", rng.normal(size=200), rng.normal(2.0, size=50), threshold=1.5)
    save_roc_plot([result], tmp_path / "roc.png", "t")
    ax = saved["roc.png"].axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    points = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(points) == 1
    assert points[0].get_xdata()[0] == pytest.approx(result.false_alarm_rate)
    assert points[0].get_ydata()[0] == pytest.approx(result.detection_rate)


def test_denoising_plot_shows_noisy_inputs_and_their_denoised_outputs(
    saved: dict[str, Figure], tmp_path: Path, digits: npt.NDArray[np.float32]
) -> None:
    config = TrainConfig(variant="denoising", hidden=(8, 8), epochs=1, folds=0)
    train_version(
        config, Dataset.of_images(digits.reshape(-1, 1, 8, 8), "digits"), tmp_path, "d", progress=False
    )
    rows = [ax.get_ylabel() for ax in saved["reconstructions.png"].axes if ax.get_ylabel()]
    assert rows == ["noisy", "denoised"]
