from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
import torch

from service.contract import InputKind, ModelMetadata, SeriesSpec
from tests.training.conftest import CASE_IDS, CASES, Samples, body_samples, tiny_hidden
from training.artifact import recalibrate_version, train_version
from training.config import TrainConfig
from training.data import Dataset, Normaliser, split_rows
from training.export import OPSET, ExportError, check_parity, export_graphs, graph_modules, sha256
from training.objectives import OBJECTIVES, build_model
from training.scoring import score_rows


@pytest.mark.parametrize("variant", sorted(OBJECTIVES))
def test_export_matches_torch_within_1e5(
    variant: str, digits: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    normaliser = Normaliser.fit(digits, "minmax", shared=True)
    model = build_model(variant, "mlp", (64,), 8, None, {}).eval()
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
    config = TrainConfig(
        variant="vae",
        architecture="mlp",
        latent_dim=4,
        hidden=(16,),
        epochs=3,
        false_alarm_rate=0.05,
        folds=0,
    )
    return train_version(config, _digit_images(digits), out, "tiny", test_every=5, progress=False).directory


def _digit_images(digits: npt.NDArray[np.float32]) -> Dataset:
    return Dataset.of_images(digits.reshape(-1, 1, 8, 8), "digits")


def test_train_version_writes_metadata_that_round_trips(trained: Path) -> None:
    metadata = ModelMetadata.read(trained)
    assert trained.name == "1" and metadata.version == 1 and metadata.name == "tiny"
    assert ModelMetadata.model_validate_json(metadata.model_dump_json()) == metadata
    assert metadata.scores == ["mse", "neg_elbo", "knn", "combined"] and metadata.generative
    outputs = {"mse": "error", "neg_elbo": "neg_elbo", "knn": "knn", "combined": "combined"}
    assert metadata.score_outputs == outputs
    assert metadata.default_score == "mse"  # images: the reconstruction error
    assert all(c.method == "held_out" for c in metadata.calibration.values())
    assert metadata.data.n_test == 40 and metadata.data.n_train + metadata.data.n_validation == 160
    assert metadata.training["latent_dim"] == 4 and metadata.training["hparams"] == {"beta": 0.02}
    for graph in metadata.graphs.values():
        assert sha256(trained / graph.path) == graph.sha256
    for png in ("loss_curves.png", "reconstructions.png", "samples.png"):
        assert (trained / png).stat().st_size > 1000
    assert np.load(trained / "test.npy").shape == (40, 1, 8, 8)


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
    k = TrainConfig().neighbours
    expected = np.sort(distances, axis=1)[:, :k].mean(axis=1)
    np.testing.assert_allclose(score_rows(trained, rows).scores["knn"], expected, rtol=1e-4, atol=1e-5)


def test_cross_fitted_version_calibrates_on_out_of_fold_scores(
    digits: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    config = TrainConfig(latent_dim=3, hidden=(8,), epochs=2, false_alarm_rate=0.05)
    trained = train_version(config, Dataset(digits[:, :10], "rows"), tmp_path, "cf", progress=False)
    metadata = trained.metadata
    assert metadata.data.n_validation == 0 and metadata.data.n_train == 200
    for name, calibration in metadata.calibration.items():
        # The bank score is held out row by row: leave one out, as many folds as rows.
        folds = 200 if name == "knn" else 5
        assert (calibration.method, calibration.folds, calibration.n) == ("cross_fit", folds, 200)
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
    after = recalibrate_version(copy, _digit_images(digits))
    # Unchanged graphs on the same split: the calibration comes out identical.
    assert after.calibration == before.calibration
    assert ModelMetadata.read(copy).calibration == before.calibration


def test_train_version_takes_next_free_version(trained: Path, digits: npt.NDArray[np.float32]) -> None:
    config = TrainConfig(variant="plain", latent_dim=2, hidden=(8,), epochs=1)
    second = train_version(config, _digit_images(digits), trained.parent.parent, "tiny", progress=False)
    assert second.directory.name == "2"


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize(("objective", "body", "kind"), CASES, ids=CASE_IDS)
def test_export_parity_per_value_in_normalised_space(
    objective: str, body: str, kind: InputKind, samples: dict[InputKind, Samples], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    shaped, normaliser = body_samples(samples, body, kind)
    shape = shaped.shape[1:]
    model = build_model(objective, body, shape, 4, tiny_hidden(body), {}).eval()
    graphs, parity = export_graphs(model, normaliser, tmp_path, shaped[:20])
    assert 0 <= parity <= 1e-5
    x = shaped[20:27]  # a batch size the export never saw
    latent = model.encode(torch.from_numpy(normaliser.transform(x))).detach().numpy()  # (7, 4)
    for spec in graph_modules(model, normaliser):
        graph = graphs[spec.role]
        proto = onnx.load(str(tmp_path / graph.path))
        inputs = latent if spec.role == "decoder" else x
        # The batch axis is a name, every other axis the sample's fixed size.
        assert _dims(proto.graph.input[0]) == ["batch", *inputs.shape[1:]]
        assert all(_dims(o)[0] == "batch" for o in proto.graph.output)
        session = ort.InferenceSession(str(tmp_path / graph.path), providers=["CPUExecutionProvider"])
        got = dict(zip(graph.outputs, session.run(graph.outputs, {graph.inputs[0]: inputs}), strict=True))
        with torch.no_grad():
            expected = spec.module(torch.from_numpy(inputs))
        expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
        for name, b in zip(graph.outputs, expected, strict=True):
            a, ref = got[name].astype(np.float64), b.numpy().astype(np.float64)
            if name == "reconstruction":  # raw units: compared in the normalised space
                a, ref = (
                    (a - normaliser.offset) / normaliser.scale,
                    (ref - normaliser.offset) / normaliser.scale,
                )
            assert np.all(np.abs(a - ref) <= 1e-5 * np.maximum(1.0, np.abs(ref))), name
        shapes = {name: value.shape for name, value in got.items()}
        assert all(shapes[code] == (7, 4) for code in model.encoder_outputs if code in shapes)
        if spec.role == "model":
            assert shapes["reconstruction"] == shapes["feature_errors"] == (7, *shape)
            assert [shapes[s] for s in graph.outputs[len(model.encoder_outputs) + 2 :]] == [(7,)] * len(
                model.scores
            )
            errors = got["feature_errors"]
            np.testing.assert_allclose(errors.reshape(7, -1).mean(axis=1), got["error"], rtol=1e-5, atol=1e-7)
            normalised_error = ((got["reconstruction"] - x) / normaliser.scale) ** 2
            np.testing.assert_allclose(normalised_error, errors, rtol=1e-3, atol=1e-6)


def test_export_parity_is_not_failed_by_the_rounding_of_large_raw_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    x[:, 1] = rng.uniform(-12_809, 13_148, 200)  # a feature in the tens of thousands
    x[:, 2] = 10_000 + 0.05 * rng.random(200)  # far from zero, a narrow range: few float32 steps per unit
    for kind in ("minmax", "standard"):
        for objective in OBJECTIVES:
            torch.manual_seed(0)
            normaliser = Normaliser.fit(x, kind)
            model = build_model(objective, "mlp", (5,), 3, (8,), {}).eval()
            _, parity = export_graphs(model, normaliser, tmp_path, x[:50])
            assert parity <= 1e-5, (kind, objective)


class _Nudged(torch.nn.Module):
    """A graph module whose raw outputs are moved by `step(output)`: a stand-in for torch disagreeing."""

    def __init__(self, module: torch.nn.Module, step: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.module, self.step = module, step

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.module(latent)
        return out + self.step(out)


def test_check_parity_holds_each_raw_value_to_1e5_of_its_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    x[:, 1] = rng.uniform(-12_809, 13_148, 60)
    x[:, 2] = 10_000 + 0.05 * rng.random(60)
    normaliser = Normaliser.fit(x, "minmax")  # scales about 5, 25957 and 0.05
    torch.manual_seed(0)
    model = build_model("plain", "mlp", (3,), 2, (8,), {}).eval()
    export_graphs(model, normaliser, tmp_path, x[:20])
    spec = next(s for s in graph_modules(model, normaliser) if s.role == "decoder")
    latent = model.encode(torch.from_numpy(normaliser.transform(x))).detach()  # (60, 2)
    scale = torch.from_numpy(normaliser.scale)

    def check(step: Callable[[torch.Tensor], torch.Tensor]) -> float:
        nudged = dataclasses.replace(spec, module=_Nudged(spec.module, step))
        return check_parity(nudged, tmp_path / "decoder.onnx", latent, normaliser)

    # One float32 step of every raw value is rounding (a sixtieth of the third feature's range), not a
    # difference; 0.0011 on the feature in the tens of thousands is 4e-8 of its scale.
    assert check(lambda out: torch.nextafter(out, out + 1) - out) <= 1e-5
    assert check(lambda out: torch.tensor([0.0, 0.0011, 0.0])) <= 1e-5
    # 3e-5 of its scale on any one feature fails, however small beside the other features' values; on the
    # third feature that is less than one float32 step, so three steps stand in for it.
    ulp = torch.nextafter(torch.tensor(10_000.0), torch.tensor(20_000.0)) - 10_000.0
    for feature, nudge in enumerate([3e-5 * scale[0], 3e-5 * scale[1], 3 * ulp]):
        mask = torch.zeros(3)
        mask[feature] = 1.0
        with pytest.raises(ExportError, match=rf"output 'reconstruction' differs .* at \(\d+, {feature}\)"):
            check(lambda out, step=nudge * mask: step + 0 * out)


@pytest.mark.parametrize(
    ("kind", "body", "input_shape", "normalisation_entries"),
    [
        ("image", "conv2d", [1, 8, 8], 1),
        ("image", "mlp", [64], 64),
        ("series", "conv1d", [13, 3], 3),
        ("series", "mlp", [13, 3], 3),
        ("rows", "mlp", [64], 64),
    ],
)
def test_train_version_records_the_body_and_the_sample_layout(
    kind: InputKind,
    body: str,
    input_shape: list[int],
    normalisation_entries: int,
    samples: dict[InputKind, Samples],
    tmp_path: Path,
) -> None:
    raw = samples[kind]
    dataset = {
        "rows": lambda: Dataset(raw, "rows.npy"),
        "image": lambda: Dataset.of_images(raw, "images.npy"),
        "series": lambda: Dataset(raw, "windows", "series", series=SeriesSpec(window=13, channels=3)),
    }[kind]()
    config = TrainConfig(architecture=body, latent_dim=3, hidden=tiny_hidden(body), epochs=2)
    directory = train_version(config, dataset, tmp_path, "layout", progress=False).directory
    metadata = ModelMetadata.read(directory)
    assert (metadata.kind, metadata.architecture, metadata.input_shape) == (kind, body, input_shape)
    assert metadata.training["architecture"] == body
    # A series model records the step rule it was calibrated with (the configuration's).
    recorded = dataset.series.model_copy(update={"step_score": config.step_score}) if dataset.series else None
    assert metadata.image == dataset.image and metadata.series == recorded
    assert len(metadata.normalisation.offset) == normalisation_entries
    assert metadata.data.n_features == metadata.input_dim == len(metadata.data.feature_min)
    scores = score_rows(directory, raw[:9])
    assert scores.feature_errors.shape == scores.reconstruction.shape == (9, *input_shape)
    np.testing.assert_allclose(
        scores.feature_errors.reshape(9, -1).mean(axis=1), scores.scores["mse"], rtol=1e-5
    )
    pictures = ["reconstructions.png"] if kind == "image" else ["feature_errors.png", "score_histogram.png"]
    for png in ["loss_curves.png", *pictures]:
        assert (directory / png).stat().st_size > 1000


def test_train_version_normalises_series_per_channel_over_time(
    samples: dict[InputKind, Samples], tmp_path: Path
) -> None:
    windows = samples["series"]  # channels in units 1, 10 and 100
    dataset = Dataset(windows, "windows", "series", series=SeriesSpec(window=13, channels=3))
    config = TrainConfig(
        latent_dim=3, hidden=(4,), epochs=1, validation_fraction=0.25, normalisation="minmax", folds=0
    )
    metadata = train_version(config, dataset, tmp_path, "series", test_every=0, progress=False).metadata
    train = windows[split_rows(len(windows), 0.25, 0, 0).train]
    np.testing.assert_allclose(metadata.normalisation.offset, train.min(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(
        metadata.normalisation.scale, train.max(axis=(0, 1)) - train.min(axis=(0, 1)), rtol=1e-5
    )
    assert metadata.architecture == "conv1d"


def test_a_memory_bank_version_has_a_core_graph_that_requests_without_bank_scores_run(
    trained: Path, digits: npt.NDArray[np.float32]
) -> None:
    from service.core.runtime import OnnxModel

    metadata = ModelMetadata.read(trained)
    core, full = metadata.graphs["core"], metadata.graphs["model"]
    assert core.outputs == [o for o in full.outputs if o not in ("knn", "combined")]
    model = OnnxModel.load(trained)
    model.warm_up()
    x = digits[:9].reshape(9, *metadata.input_shape)
    ran: list[str] = []
    for role, session in list(model._sessions.items()):

        class Spy:
            def __init__(self, inner: ort.InferenceSession, role: str) -> None:
                self.inner, self.role = inner, role

            def run(self, names: list[str], feed: dict[str, object]) -> list[object]:
                ran.append(self.role)
                return self.inner.run(names, feed)  # type: ignore[no-any-return]

        model._sessions[role] = Spy(session, role)  # type: ignore[assignment]
    mse = model.score(x, "mse").errors
    denoised = model.denoise(x)
    knn = model.score(x, "knn").errors
    everything = model.run_model(x)
    assert ran == ["core", "core", "model", "model"]
    np.testing.assert_allclose(mse, everything["error"], rtol=1e-5)
    np.testing.assert_allclose(denoised, everything["reconstruction"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(knn, everything["knn"], rtol=1e-5)


def test_combined_score_parity_is_held_in_log_score_units(
    samples: dict[InputKind, Samples], tmp_path: Path
) -> None:
    from training.memory import MemoryBank, ScoreCombination, ScoredModel

    torch.manual_seed(0)
    shaped, normaliser = body_samples(samples, "conv1d", "series")
    model = build_model("plain", "conv1d", shaped.shape[1:], 4, tiny_hidden("conv1d"), {}).eval()
    bank = MemoryBank(normaliser.transform(shaped[:100]), 3)
    probe = shaped[100:140]
    first = ScoredModel(model, bank).score(normaliser.transform(probe[:1]))  # the first probe's scores
    # Spreads of a thousandth, centred on the first probe (its combined score is 0): log scores that agree
    # to 1e-6 give combinations 1e-3 apart there, which a 1e-5 rule in the combination's own units refuses.
    centre = [float(np.log(first[s][0] + 1e-9)) for s in ("mse", "knn")]
    combination = ScoreCombination([1e-9, 1e-9], centre, [1e-3, 1e-3])
    scored = ScoredModel(model, bank, combination).eval()
    graphs, _ = export_graphs(scored, normaliser, tmp_path, probe)
    spec = next(s for s in graph_modules(scored, normaliser) if s.role == "model")
    path, x = tmp_path / graphs["model"].path, torch.from_numpy(probe)
    combination.centre -= 1e-6
    assert check_parity(spec, path, x, normaliser) <= 1e-5
    # Scores off by 1e-4 of a log unit (0.01%) are still refused.
    combination.centre -= 1e-4
    with pytest.raises(ExportError, match="'combined' differs"):
        check_parity(spec, path, x, normaliser)


def test_parity_allows_what_rounding_the_normalised_input_moves(tmp_path: Path) -> None:
    """An outlier far out in the normalised space is only as precise as its float32 spacing there (3e-5 at
    300), and what that spacing moves downstream the runtimes may differ by; a hundred spacings, not."""
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (200, 6)).astype(np.float32)
    normaliser = Normaliser.fit(x, "standard")
    probe = x[:40].copy()
    probe[0, 1] = normaliser.offset[1] + 300 * normaliser.scale[1]  # 300 scales out: spacing 3e-5 there
    torch.manual_seed(0)
    model = build_model("plain", "mlp", (6,), 2, tiny_hidden("mlp"), {}).eval()
    with torch.no_grad():  # a network that reads feature 1 closely, as one trained on its tail may
        next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).weight[:, 1] *= 20
    graphs, _ = export_graphs(model, normaliser, tmp_path, probe)
    spec = next(s for s in graph_modules(model, normaliser) if s.role == "model")
    path, inputs = tmp_path / graphs["model"].path, torch.from_numpy(probe)

    class Nudged(torch.nn.Module):
        """torch reading the outlier `spacings` float32 spacings of its normalised value away."""

        def __init__(self, spacings: float) -> None:
            super().__init__()
            self.delta = torch.zeros(probe.shape)
            self.delta[0, 1] = spacings * float(np.spacing(np.float32(300.0))) * float(normaliser.scale[1])

        def forward(self, raw: torch.Tensor) -> object:
            return spec.module(raw + self.delta)

    one = dataclasses.replace(spec, module=Nudged(1))
    # The nudge reaches the other features' reconstructions and errors through the network: by more than the
    # relative 1e-5 a value-by-value rule allows, on values near 1.
    relative = [
        float(((a - b).abs() / b.abs().clamp(min=1)).max())
        for a, b in zip(one.module(inputs), spec.module(inputs), strict=True)
    ]
    assert max(relative) > 1e-5
    assert check_parity(one, path, inputs, normaliser) <= 1e-5
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(dataclasses.replace(spec, module=Nudged(100)), path, inputs, normaliser)


def test_parity_allows_a_duplicate_of_a_bank_row_its_rounded_distance(tmp_path: Path) -> None:
    """A row that duplicates a bank row is at distance 0 only up to the square root of a float64 spacing of
    |x|^2 + |b|^2 (the runtimes' sums round apart); the combined score's log magnifies that near 0. Within it
    the runtimes agree; a distance a thousandth off is refused."""
    from training.memory import MemoryBank, ScoreCombination, ScoredModel

    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, (120, 6)).astype(np.float32)
    normaliser = Normaliser.fit(x, "standard")
    torch.manual_seed(0)
    model = build_model("plain", "mlp", (6,), 2, tiny_hidden("mlp"), {}).eval()
    bank = MemoryBank(normaliser.transform(x[:80]), 1)
    probe = x[:40]  # every one a duplicate of a bank row: distance 0
    first = ScoredModel(model, bank).score(normaliser.transform(x[80:]))
    # A log floor far below the typical distance, as a bank of near-duplicates fits it.
    eps = [1e-9, 1e-9]
    centre = [float(np.median(np.log(first[s] + 1e-9))) for s in ("mse", "knn")]
    scored = ScoredModel(model, bank, ScoreCombination(eps, centre, [0.5, 0.5])).eval()
    graphs, _ = export_graphs(scored, normaliser, tmp_path, probe)
    spec = next(s for s in graph_modules(scored, normaliser) if s.role == "model")
    path, inputs = tmp_path / graphs["model"].path, torch.from_numpy(probe)
    assert scored.memory is not None
    bank_sq = scored.memory.bank_sq.clone()
    # torch's sums a float64 spacing apart from ONNX Runtime's: the duplicates land 1e-7 from their row.
    scored.memory.bank_sq = bank_sq + float(np.spacing(float(bank_sq.max())))
    assert float(scored.score(normaliser.transform(probe))["knn"].max()) > 0
    assert check_parity(spec, path, inputs, normaliser) <= 1e-5
    scored.memory.bank_sq = bank_sq + 1e-6  # a thousandth off
    with pytest.raises(ExportError, match="differs from torch"):
        check_parity(spec, path, inputs, normaliser)
