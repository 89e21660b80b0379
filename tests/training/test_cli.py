from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from service.contract import ModelMetadata
from training import artifact
from training.artifact import TrainedVersion
from training.cli import main
from training.config import TrainConfig
from training.export import sha256

TINY = ["--epochs", "2", "--latent-dim", "2", "--hidden", "8", "--quiet"]


def _train(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "training", "train", "--variant", "plain", "--data", str(data)]
    return subprocess.run(
        [*command, "--name", "mine", "--out", str(out), *TINY, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_trains_on_npy_and_csv(tmp_path: Path, digits: npt.NDArray[np.float32]) -> None:
    np.save(tmp_path / "rows.npy", digits[:60])
    (tmp_path / "rows.csv").write_text(
        ",".join(f"f{i}" for i in range(64)) + "\n" + "\n".join(",".join(map(str, r)) for r in digits[:60])
    )
    first = _train(tmp_path / "rows.npy", tmp_path / "models")
    second = _train(tmp_path / "rows.csv", tmp_path / "models", "--seed", "4", "--test-every", "5")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"wrote {tmp_path / 'models' / 'mine' / '1'}" in first.stdout
    assert "test_mse=" in first.stdout and "cross-fitted, 5 folds" in first.stdout
    metadata = ModelMetadata.read(tmp_path / "models" / "mine" / "2")
    assert metadata.data.source == "rows.csv" and metadata.seed == 4 and metadata.data.n_test == 12
    assert metadata.feature_names == [f"f{i}" for i in range(64)]
    assert metadata.training["data"]["path"] == str((tmp_path / "rows.csv").resolve())
    assert metadata.training["data"]["sha256"] == sha256(tmp_path / "rows.csv")
    # The held-out split is written beside the model, with its header when the columns have names.
    held_out = np.load(tmp_path / "models" / "mine" / "2" / "test.npy")
    np.testing.assert_allclose(held_out, digits[:60:5])
    assert (tmp_path / "models" / "mine" / "2" / "test.csv").read_text().startswith("f0,f1,")
    assert ModelMetadata.read(tmp_path / "models" / "mine" / "1").data.n_test == 0


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("age;height;weight\n" + "1;2;3\n4;5;6\n" * 10, ["age", "height", "weight"]),
        ("age\theight\tweight\n" + "1\t2\t3\n4\t5\t6\n" * 10, ["age", "height", "weight"]),
        ("a,b,c\n" + "1,2,3\n4,5,6\n" * 10, ["a", "b", "c"]),
        ("x;y;z\n" + "1,5;2;3,25\n4;5,5;6\n" * 10, ["x", "y", "z"]),
        ("1;2;3\n4;5;6\n" * 10, None),
    ],
)
def test_csv_delimiter_is_sniffed_and_the_header_names_the_features(
    text: str, names: list[str] | None, tmp_path: Path
) -> None:
    from training.data import load_data

    (tmp_path / "rows.csv").write_text(text)
    dataset = load_data(str(tmp_path / "rows.csv"))
    assert dataset.x.shape == (20, 3)
    assert (list(dataset.feature_names) if dataset.feature_names else None) == names
    if "1,5" in text:  # decimal commas in a `;` file
        assert dataset.x[0].tolist() == [1.5, 2.0, 3.25]


def test_feature_names_flag_names_the_columns(tmp_path: Path, digits: npt.NDArray[np.float32]) -> None:
    np.save(tmp_path / "rows.npy", digits[:40, :3])
    done = _train(tmp_path / "rows.npy", tmp_path / "models", "--feature-names", "a, b,c")
    assert done.returncode == 0, done.stderr
    assert ModelMetadata.read(tmp_path / "models" / "mine" / "1").feature_names == ["a", "b", "c"]
    wrong = _train(tmp_path / "rows.npy", tmp_path / "models", "--feature-names", "a,b")
    assert wrong.returncode == 2 and wrong.stderr.strip().endswith("expected one name per column")


_NO_TORCH = """
import sys, time
started = time.perf_counter()
from training.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime", "scipy.stats", "sklearn") if m in sys.modules)
print("HEAVY", heavy, status, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["train", "--help"],
        ["train", "--variant", "plain", "--data", "missing.csv", "--name", "m", "--out", "o"],
        ["train", "--variant", "plain", "--data", "x.npy", "--name", "m", "--out", "o", "--lr", "fast"],
        ["train", "--variant", "plain", "--data", "x.npy", "--name", "m", "--out", "o", "--rho", "0.1"],
    ],
)
def test_help_and_argument_or_data_errors_do_not_import_torch(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert "HEAVY [] " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_variant_catalogue_names_every_objective_and_its_options() -> None:
    from training.catalogue import VARIANT_OPTIONS
    from training.objectives import OBJECTIVES

    assert list(VARIANT_OPTIONS) == list(OBJECTIVES)
    for name, cls in OBJECTIVES.items():
        assert cls.hyperparameters == VARIANT_OPTIONS[name], name


def test_body_catalogue_declares_what_the_body_classes_do() -> None:
    from training.bodies import BODIES
    from training.catalogue import BODY_DEFAULTS, BODY_HIDDEN

    assert list(BODY_DEFAULTS) == list(BODIES) == list(BODY_HIDDEN)
    for name, cls in BODIES.items():
        assert (BODY_DEFAULTS[name], BODY_HIDDEN[name]) == (cls.default_for, cls.hidden_help), name


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code  # type: ignore[assignment]
    assert status != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture
def bad_files(tmp_path: Path) -> Path:
    rows = np.random.default_rng(0).normal(size=(40, 3))
    np.save(tmp_path / "nan.npy", np.where(rows > 2, np.nan, rows))
    np.save(tmp_path / "few.npy", rows[:6])
    np.save(tmp_path / "flat.npy", rows.ravel())
    (tmp_path / "words.csv").write_text("a,b\n1,2\n3,x\n" + "1,2\n" * 20)
    (tmp_path / "ragged.csv").write_text("1,2\n3\n" + "1,2\n" * 20)
    (tmp_path / "latin1.csv").write_bytes(b"poids,taille\n" + b"1,2\n" * 20 + b"3,\xb5\n")
    np.save(tmp_path / "ok.npy", rows)
    np.save(tmp_path / "steps.npy", np.sin(np.arange(240) / 5.0)[:, None] * [1.0, 2.0])  # a series (240, 2)
    np.save(tmp_path / "images.npy", np.zeros((20, 6, 6)))
    np.save(tmp_path / "bands.npy", np.zeros((20, 6, 4, 4)))
    (tmp_path / "dupes.csv").write_text("a,a,b\n" + "1,2,3\n" * 20)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{d}/missing.npy"], "not found"),
        (["--data", "{d}/nan.npy"], "NaN"),
        (["--data", "{d}/few.npy"], "at least 10 rows"),
        (["--data", "{d}/flat.npy"], "2-D"),
        (["--data", "{d}/words.csv"], "non-numeric value 'x'"),
        (["--data", "{d}/ragged.csv"], "columns"),
        (["--data", "{d}/latin1.csv"], "latin1.csv: not UTF-8 text"),
        (["--data", "{d}/ok.npy", "--variant", "nope"], "invalid choice"),
        (["--data", "{d}/ok.npy", "--lr", "fast"], "expected a number"),
        (["--data", "{d}/ok.npy", "--epochs", "0"], "expected a value in"),
        (["--data", "{d}/ok.npy", "--rho", "0.1"], "does not apply to variant 'plain'"),
        (["--data", "{d}/ok.npy", "--name", "../x"], "invalid --name"),
        (["--data", "{d}/ok.npy", "--architecture", "conv2d"], "reads image data, not rows data"),
        (["--data", "{d}/images.npy", "--architecture", "conv1d"], "reads series data, not image data"),
        (["--data", "{d}/ok.npy", "--architecture", "lstm"], "invalid choice"),
        (["--data", "{d}/bands.npy"], "1 to 4 channels"),
        (["--data", "{d}/data.txt"], "expected one of"),
        (["--data", "{d}/ok.npy", "--folds", "1"], "--folds must be 0"),
        (["--data", "{d}/dupes.csv"], "header names ['a'] repeat"),
        (["--data", "{d}/ok.npy", "--centred-channels", "0"], "--centred-channels is for a series"),
        (
            ["--data", "{d}/steps.npy", "--window", "8", "--centred-channels", "c"],
            "no channel 'c'; the channels",
        ),
        (["--data", "{d}/ok.npy", "--centred-channels", "a,,b"], "expected comma-separated non-empty names"),
        (["--data", "{d}/ok.npy", "--code", "grid"], "architecture 'mlp' has no convolution stages"),
        (["--data", "{d}/images.npy", "--code", "grid"], "takes a multiple of 36 values, got a code of 2"),
        (["--data", "{d}/images.npy", "--code", "spatial"], "invalid choice: 'spatial'"),
        (["--data", "{d}/images.npy", "--stage-convs", "0"], "expected a value in"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line(
    args: list[str], message: str, bad_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--variant", "plain", "--name", "m", "--out", str(bad_files / "out"), *TINY]
    argv += [a.format(d=bad_files) for a in args]
    assert message in _one_line_error(argv, capsys)
    assert not (bad_files / "out" / "m").exists()


def test_cli_process_never_prints_a_traceback(tmp_path: Path) -> None:
    result = _train(tmp_path / "missing.csv", tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: data file not found: {tmp_path / 'missing.csv'}"


def test_cli_quantize_keeps_a_loadable_version(tmp_path: Path, digits: npt.NDArray[np.float32]) -> None:
    np.save(tmp_path / "rows.npy", digits[:60])
    done = _train(tmp_path / "rows.npy", tmp_path / "models", "--quantize")
    assert done.returncode == 0, done.stderr
    assert "int8: kept" in done.stdout or "int8: not kept" in done.stdout, done.stdout
    directory = tmp_path / "models" / "mine" / "1"
    metadata = ModelMetadata.read(directory)
    # Whatever the verdict, the files on disk match the metadata the service will check them against.
    for graph in metadata.graphs.values():
        assert sha256(directory / graph.path) == graph.sha256
    assert ("int8_quantised" in metadata.metrics) == ("int8: kept" in done.stdout)


@pytest.mark.parametrize(
    ("extra", "architecture", "input_shape"),
    [([], "conv2d", [3, 7, 5]), (["--architecture", "mlp"], "mlp", [105])],
)
def test_cli_chooses_the_body_from_the_data_unless_told(
    extra: list[str],
    architecture: str,
    input_shape: list[int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = np.random.default_rng(0).uniform(0, 255, (40, 3, 7, 5)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    argv = ["train", "--variant", "plain", "--data", str(tmp_path / "images.npy"), "--name", "mine"]
    assert main([*argv, "--out", str(tmp_path / "models"), *TINY, *extra]) == 0
    assert f"plain on {architecture} {input_shape}" in capsys.readouterr().out
    metadata = ModelMetadata.read(tmp_path / "models" / "mine" / "1")
    assert (metadata.kind, metadata.architecture, metadata.input_shape) == (
        "image",
        architecture,
        input_shape,
    )
    assert metadata.image is not None and (metadata.image.height, metadata.image.width) == (7, 5)


def test_cli_defaults_keep_building_digits_mlps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = artifact.train_version

    def briefly(config: TrainConfig, *args: Any, **kwargs: Any) -> TrainedVersion:
        return real(dataclasses.replace(config, steps=20), *args, **kwargs)

    monkeypatch.setattr(artifact, "train_version", briefly)
    assert main(["defaults", "--out", str(tmp_path), "--variants", "vae", "--quiet"]) == 0
    metadata = ModelMetadata.read(tmp_path / "digits-vae" / "1")
    assert (metadata.kind, metadata.architecture, metadata.input_shape) == ("image", "mlp", [64])
    assert metadata.image is not None and (metadata.image.height, metadata.image.width) == (8, 8)


@pytest.mark.parametrize(("variant", "normalisation"), [("plain", "minmax"), ("vae", "standard")])
def test_a_feature_with_extreme_values_trains_and_exports(
    variant: str, normalisation: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in the shuttle data set: one feature spans -12,809 to 13,148 while 99% of it is within +-31.
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(300, 6)) * [1, 10, 100, 5, 31, 2]
    rows[:3, 4] = [-12_809.0, 13_148.0, 9_000.0]
    np.save(tmp_path / "extreme.npy", rows)
    argv = ["train", "--variant", variant, "--data", str(tmp_path / "extreme.npy"), "--name", "x"]
    argv += ["--normalisation", normalisation, "--epochs", "3", "--latent-dim", "2", "--quiet"]
    status = main([*argv, "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
