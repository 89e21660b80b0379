from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from service.contract import ModelMetadata
from training.cli import main
from training.evaluate import auroc, average_precision, choose_pca_k, roc_curve
from training.scoring import score_rows


def _low_rank(rng: np.random.Generator, n: int, rank: int, dim: int, noise: float) -> npt.NDArray[np.float32]:
    basis = rng.normal(size=(rank, dim))
    return (rng.normal(size=(n, rank)) @ basis + noise * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Rounded scores, so many normal and anomalous scores tie.
    normal = np.round(rng.normal(size=300), 1)
    anomalies = np.round(rng.normal(0.7, 1.2, size=120), 1)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
    scores = np.r_[normal, anomalies]
    assert auroc(normal, anomalies) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(normal, anomalies) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    fpr, tpr = roc_curve(normal, anomalies)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(normal, anomalies), abs=1e-12)


def test_auroc_orders_perfect_and_reversed_scores() -> None:
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([1.0, 1.0], [1.0]) == 0.5


def test_choose_pca_k_finds_the_rank_of_low_rank_data() -> None:
    rng = np.random.default_rng(0)
    rows = _low_rank(rng, 300, rank=3, dim=12, noise=0.05)
    rows[:, 0] = 0.0  # a constant feature must not pull k up to the rank
    assert choose_pca_k(rows[:200], rows[200:]) == 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain model trained through the CLI on rank-2 rows in 8 dims, and the files around it."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    rows = _low_rank(rng, 300, rank=2, dim=8, noise=0.05)
    np.save(root / "train.npy", rows[:200])
    np.save(root / "normal.npy", rows[200:])
    np.save(root / "anomalies.npy", rng.normal(size=(60, 8)).astype(np.float32))
    np.save(root / "other.npy", rng.normal(size=(200, 8)).astype(np.float32))
    np.save(root / "wide.npy", rng.normal(size=(60, 5)).astype(np.float32))
    argv = ["train", "--variant", "plain", "--data", str(root / "train.npy"), "--name", "tiny"]
    assert main([*argv, "--out", str(root / "models"), "--steps", "300", "--latent-dim", "2", "--quiet"]) == 0
    return root


def test_evaluate_cli_prints_model_and_baselines(
    trained: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    # The metadata records the training file's absolute path and hash: found from any directory.
    elsewhere = trained / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    monkeypatch.chdir(elsewhere)
    model = trained / "models" / "tiny" / "1"
    argv = ["evaluate", "--model", str(model), "--normal", "../normal.npy", "--anomalies", "../anomalies.npy"]
    assert main([*argv, "--out", "plots/roc.png"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "warning" not in captured.err
    line = re.compile(r"^(.+?)\s+([01]\.\d{4})\s+([01]\.\d{4})\s+([\d.]+)%\s+([\d.]+)%", re.M)
    rows = {m.group(1).strip(): m.groups()[1:] for m in line.finditer(out)}
    pca = next(name for name in rows if name.startswith("PCA"))
    ours = "tiny v1 (plain, knn)"
    assert set(rows) == {ours, "IsolationForest", pca}
    assert re.fullmatch(r"PCA \(k=\d, on validation\)", pca)
    scores = [score_rows(model, np.load(trained / f)).scores["knn"] for f in ("normal.npy", "anomalies.npy")]
    assert rows[ours][0] == f"{auroc(*scores):.4f}"
    # Rows off the normal rows' plane: easy for reconstruction errors, harder for axis-aligned trees.
    assert float(rows[ours][0]) > 0.95 and float(rows[pca][0]) > 0.95
    assert float(rows["IsolationForest"][0]) > 0.6
    assert (elsewhere / "plots" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote plots/roc.png" in out


def test_evaluate_warns_when_normal_rows_were_trained_on(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(trained / "models" / "tiny" / "1")
    files = ["--normal", str(trained / "train.npy"), "--anomalies", str(trained / "anomalies.npy")]
    capsys.readouterr()
    assert main(["evaluate", "--model", model, *files, "--out", str(trained / "roc3.png")]) == 0
    err = capsys.readouterr().err
    assert "warning: 200 of the 200 --normal rows are rows the model was trained or calibrated on" in err


def test_evaluate_asks_for_train_when_the_recorded_file_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _low_rank(np.random.default_rng(1), 60, rank=2, dim=4, noise=0.05)
    np.save(tmp_path / "gone.npy", rows)
    argv = ["train", "--variant", "plain", "--data", str(tmp_path / "gone.npy"), "--name", "g"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--epochs", "2", "--quiet"]) == 0
    (tmp_path / "gone.npy").unlink()
    np.save(tmp_path / "normal.npy", rows)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    argv = ["evaluate", "--model", "m/g/1", "--normal", "normal.npy", "--anomalies", "normal.npy"]
    assert main(argv) != 0
    assert "pass --train PATH" in capsys.readouterr().err


def test_evaluate_cli_uses_train_when_the_source_is_elsewhere(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(trained / "models" / "tiny" / "1")
    files = ["--normal", str(trained / "normal.npy"), "--anomalies", str(trained / "anomalies.npy")]
    out = ["--out", str(trained / "roc2.png")]
    assert main(["evaluate", "--model", model, *files, *out, "--train", str(trained / "train.npy")]) == 0
    assert "baselines fitted on" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{d}/models/tiny/9"], "no metadata.json in"),
        (["--normal", "{d}/missing.npy"], "--normal: data file not found"),
        (["--anomalies", "{d}/wide.npy"], "has 5 features, expected 8"),
        (["--anomalies", "{d}/anomalies.txt"], "expected one of"),
        (["--train", "{d}/other.npy"], "do not match model tiny v1"),
        (["--train", "{d}/normal.npy"], "has 100 rows, expected the 200 rows"),
        (["--score", "neg_elbo", "--train", "{d}/train.npy"], "has no score 'neg_elbo'"),
    ],
)
def test_evaluate_cli_bad_input_exits_nonzero_with_one_line(
    args: list[str], message: str, trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    given = {"--model": "{d}/models/tiny/1", "--normal": "{d}/normal.npy", "--anomalies": "{d}/anomalies.npy"}
    given |= dict(zip(args[::2], args[1::2], strict=True))
    argv = ["evaluate", *(x.format(d=trained) for pair in given.items() for x in pair)]
    assert main([*argv, "--out", str(trained / "bad.png")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in err
    assert not (trained / "bad.png").exists()


def test_evaluate_cli_compares_a_conv_model_on_images(
    tmp_path: Path, digits: npt.NDArray[np.float32], capsys: pytest.CaptureFixture[str]
) -> None:
    images = digits.reshape(-1, 8, 8)
    np.save(tmp_path / "train.npy", images[:150])
    np.save(tmp_path / "normal.npy", images[150:])
    # Anomalies as flattened rows: the same 64 values per sample are taken in the model's (1, 8, 8) layout.
    np.save(tmp_path / "anomalies.npy", np.random.default_rng(0).uniform(0, 16, (50, 64)).astype(np.float32))
    argv = ["train", "--variant", "plain", "--data", str(tmp_path / "train.npy"), "--name", "conv"]
    assert (
        main([*argv, "--out", str(tmp_path / "models"), "--steps", "200", "--hidden", "4,8", "--quiet"]) == 0
    )
    model = tmp_path / "models" / "conv" / "1"
    assert ModelMetadata.read(model).architecture == "conv2d"
    files = ["--normal", str(tmp_path / "normal.npy"), "--anomalies", str(tmp_path / "anomalies.npy")]
    files += ["--train", str(tmp_path / "train.npy")]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), *files, "--out", str(tmp_path / "roc.png")]) == 0
    out = capsys.readouterr().out
    table = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert {"conv v1 (plain, mse)", "IsolationForest"} <= set(table)
    auroc_of_model = float(table["conv v1 (plain, mse)"].split()[4])
    # Uniform noise images are far from every digit: any model that learnt digits tells them apart.
    assert auroc_of_model > 0.9, out
