from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import torch

from service.contract import ModelMetadata
from training.artifact import recalibrate_version, train_version
from training.config import TrainConfig
from training.data import Dataset, Normaliser
from training.export import OPSET, export_graphs, graph_modules, sha256
from training.scoring import score_rows
from training.variants import VARIANTS, build_model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_matches_torch_within_1e5(
    variant: str, digits: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    normaliser = Normaliser.fit(digits, "minmax", shared=True)
    model = build_model(variant, 64, 8, None, {}).eval()
    graphs, _ = export_graphs(model, normaliser, tmp_path, digits[:20])
    x = digits[20:27]  # a batch size the export never saw: the batch axis is dynamic
    for spec in graph_modules(model, normaliser):
        graph = graphs[spec.role]
        assert (graph.inputs, graph.outputs) == (spec.inputs, spec.outputs)
        assert graph.sha256 == sha256(tmp_path / graph.path)
        proto = onnx.load(str(tmp_path / graph.path))
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
        inputs = x
        if spec.role == "decoder":
            inputs = model.encode(torch.from_numpy(normaliser.transform(x))).detach().numpy()
        session = ort.InferenceSession(str(tmp_path / graph.path), providers=["CPUExecutionProvider"])
        got = session.run(graph.outputs, {graph.inputs[0]: inputs})
        with torch.no_grad():
            expected = spec.module(torch.from_numpy(inputs))
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        for name, a, b in zip(graph.outputs, got, expected, strict=True):
            assert a.shape[0] == len(x), name
            assert np.max(np.abs(a - b.numpy())) <= 1e-5, name


@pytest.fixture(scope="module")
def trained(digits: npt.NDArray[np.float32], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    config = TrainConfig(variant="vae", latent_dim=4, hidden=(16,), epochs=3, false_alarm_rate=0.05, folds=0)
    dataset = Dataset(digits, "digits", (8, 8))
    return train_version(config, dataset, out, "tiny", test_every=5, progress=False).directory


def test_train_version_writes_metadata_that_round_trips(trained: Path) -> None:
    metadata = ModelMetadata.read(trained)
    assert trained.name == "1" and metadata.version == 1 and metadata.name == "tiny"
    assert ModelMetadata.model_validate_json(metadata.model_dump_json()) == metadata
    assert metadata.scores == ["mse", "neg_elbo", "knn", "combined"] and metadata.generative
    outputs = {"mse": "error", "neg_elbo": "neg_elbo", "knn": "knn", "combined": "combined"}
    assert metadata.score_outputs == outputs
    assert metadata.default_score == "combined"
    assert all(c.method == "held_out" for c in metadata.calibration.values())
    assert metadata.data.n_test == 40 and metadata.data.n_train + metadata.data.n_validation == 160
    assert metadata.training["latent_dim"] == 4 and metadata.training["hparams"] == {"beta": 0.02}
    for graph in metadata.graphs.values():
        assert sha256(trained / graph.path) == graph.sha256
    for png in ("loss_curves.png", "reconstructions.png", "samples.png"):
        assert (trained / png).stat().st_size > 1000
    assert np.load(trained / "test.npy").shape == (40, 8, 8)


def test_knn_score_is_the_mean_distance_to_the_nearest_training_rows(
    trained: Path, digits: npt.NDArray[np.float32]
) -> None:
    from training.data import split_rows

    metadata = ModelMetadata.read(trained)
    offset, scale = np.array(metadata.normalisation.offset), np.array(metadata.normalisation.scale)
    bank = (digits[split_rows(len(digits), 0.2, 0, 5).train] - offset) / scale  # (n_train, 64)
    rows = digits[:10]
    difference = ((rows - offset) / scale)[:, None, :] - bank[None, :, :]  # (10, n_train, 64)
    distances = np.sqrt((difference**2).sum(axis=2))
    expected = np.sort(distances, axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(score_rows(trained, rows).scores["knn"], expected, rtol=1e-4, atol=1e-5)


def test_cross_fitted_version_calibrates_on_out_of_fold_scores(
    digits: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    config = TrainConfig(latent_dim=3, hidden=(8,), epochs=2, false_alarm_rate=0.05)
    trained = train_version(config, Dataset(digits[:, :10], "rows"), tmp_path, "cf", progress=False)
    metadata = trained.metadata
    assert metadata.data.n_validation == 0 and metadata.data.n_train == 200
    for calibration in metadata.calibration.values():
        assert (calibration.method, calibration.folds, calibration.n) == ("cross_fit", 5, 200)
    # Out-of-fold scores sit above the final model's own scores on the rows it was trained on.
    scores = score_rows(trained.directory, digits[:, :10]).scores
    assert np.median(scores["knn"]) < metadata.calibration["knn"].quantiles["0.5"]
    assert metadata.training["folds"] == 5 and metadata.latent_dim == 3
    for png in ("feature_errors.png", "score_histogram.png", "loss_curves.png"):
        assert (trained.directory / png).stat().st_size > 1000


def test_train_version_calibrates_on_validation_scores(
    trained: Path, digits: npt.NDArray[np.float32]
) -> None:
    from training.calibration import calibrate
    from training.data import split_rows

    metadata = ModelMetadata.read(trained)
    split = split_rows(len(digits), 0.2, 0, 5)
    scores = score_rows(trained, digits[split.validation])
    for name in metadata.scores:
        calibration = metadata.calibration[name]
        assert calibration.n == len(split.validation)
        empirical = float(np.quantile(scores.scores[name], 0.95))
        assert calibration.quantiles["0.95"] == pytest.approx(empirical, rel=1e-5)
        recalibrated = calibrate(scores.scores[name], 0.05).threshold
        assert calibration.threshold == pytest.approx(recalibrated, rel=1e-5)
        assert calibration.threshold >= calibration.quantiles["0.95"]
    # `error` is the mean of the per-feature errors (normalised space).
    np.testing.assert_allclose(scores.feature_errors.mean(axis=1), scores.scores["mse"], rtol=1e-5)
    offset, scale = np.array(metadata.normalisation.offset), np.array(metadata.normalisation.scale)
    normalised_error = ((scores.reconstruction - digits[split.validation]) / scale) ** 2
    np.testing.assert_allclose(normalised_error, scores.feature_errors, rtol=1e-3, atol=1e-6)
    assert offset.shape == (64,)


def test_recalibrate_version_finds_the_same_validation_rows(
    trained: Path, digits: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    copy = tmp_path / "tiny" / "1"
    copy.parent.mkdir()
    shutil.copytree(trained, copy)
    before = ModelMetadata.read(copy)
    after = recalibrate_version(copy, Dataset(digits, "digits", (8, 8)))
    # Unchanged graphs on the same split: the calibration comes out identical.
    assert after.calibration == before.calibration
    assert ModelMetadata.read(copy).calibration == before.calibration


def test_train_version_takes_next_free_version(trained: Path, digits: npt.NDArray[np.float32]) -> None:
    config = TrainConfig(variant="plain", latent_dim=2, hidden=(8,), epochs=1)
    second = train_version(
        config, Dataset(digits, "digits", (8, 8)), trained.parent.parent, "tiny", progress=False
    )
    assert second.directory.name == "2"
