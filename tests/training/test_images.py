"""Images on the training side: the MNIST (IDX) reader, the conv2d defaults, denoising and sampling on
conv2d, reproducible builds, and a trained image model's PNG round trip through the service."""

from __future__ import annotations

import dataclasses
import gzip
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image

from service.contract import ModelMetadata
from tests.training.conftest import tiny_hidden
from training import artifact
from training.artifact import TrainedVersion, train_version
from training.cli import main
from training.config import TrainConfig
from training.data import MNIST_FILES, DataError, Dataset, Normaliser, load_data, read_idx, read_mnist
from training.defaults import BODY_TUNED, EVERY_VARIANT, resolve, tuned_for
from training.objectives import (
    OBJECTIVES,
    DenoisingAutoencoder,
    build_model,
    jacobian_frobenius_sq,
    jacobian_projections_sq,
)

Images = npt.NDArray[np.float32]


def _idx(values: npt.NDArray[Any], type_code: int = 0x08) -> bytes:
    """`values` in the IDX format: two zero bytes, the type code, the dimension count, big-endian sizes."""
    header = bytes([0, 0, type_code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def _mnist_folder(folder: Path, n: int = 40, side: int = 12, gzipped: bool = True) -> tuple[Images, Any]:
    """A tiny MNIST-like folder: n images of side x side grey levels 0..255 (both ends present) and labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, side, side)).astype(np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for role, values in (("images", images), ("labels", labels)):
        name = MNIST_FILES[role]
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(values)))
        else:
            (folder / name).write_bytes(_idx(values))
    return images.astype(np.float32), labels


@pytest.mark.parametrize("gzipped", [True, False])
def test_read_mnist_reads_idx_images_and_labels(tmp_path: Path, gzipped: bool) -> None:
    images, labels = _mnist_folder(tmp_path / "mnist", gzipped=gzipped)
    dataset, read_labels = read_mnist(tmp_path / "mnist")
    assert dataset.kind == "image" and dataset.x.shape == (40, 1, 12, 12) and dataset.x.dtype == np.float32
    np.testing.assert_array_equal(dataset.x[:, 0], images)
    np.testing.assert_array_equal(read_labels, labels)
    assert dataset.image is not None and dataset.image.pixel_range == (0.0, 255.0)
    # The folder is also a --data argument.
    np.testing.assert_array_equal(load_data(str(tmp_path / "mnist")).x, dataset.x)


def test_read_idx_reads_every_type_big_endian(tmp_path: Path) -> None:
    values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    (tmp_path / "ints.idx").write_bytes(_idx(values, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints.idx"), values)
    floats = np.linspace(-1, 1, 10, dtype=np.float32)
    (tmp_path / "floats.idx.gz").write_bytes(gzip.compress(_idx(floats, 0x0D)))
    np.testing.assert_array_equal(read_idx(tmp_path / "floats.idx.gz"), floats)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an IDX file"),
        (b"\x89PNG\r\n\x1a\n", "not an IDX file"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 4]) + b"abcd", "not an IDX file"),
        (bytes([0, 0, 0x08, 2, 0, 0, 0, 4, 0, 0, 0, 4]) + b"short", "holds 5"),
        (bytes([0, 0, 0x08, 1, 0xFF, 0xFF, 0xFF, 0xFF]), "at most"),
        (bytes([0, 0, 0x08, 3, 0, 0, 0, 4]), "expected 3 dimensions"),
    ],
    ids=["empty", "png", "bad-type", "truncated", "huge", "missing-dims"],
)
def test_read_idx_refuses_bad_files_with_a_clear_message(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "bad.idx").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "bad.idx.gz").write_bytes(content)  # not gzip at all
    with pytest.raises(DataError, match=r"bad\.idx\.gz"):
        read_idx(tmp_path / "bad.idx.gz")


def test_read_mnist_refuses_a_folder_without_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MNIST folder not found"):
        read_mnist(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte\.gz"):
        read_mnist(tmp_path)
    _mnist_folder(tmp_path / "mnist")
    labels = tmp_path / "mnist" / f"{MNIST_FILES['labels']}.gz"
    labels.write_bytes(gzip.compress(_idx(np.zeros(39, np.uint8))))
    with pytest.raises(DataError, match=r"images of shape \(40, 12, 12\) and labels of shape \(39,\)"):
        read_mnist(tmp_path / "mnist")


def _briefly(monkeypatch: pytest.MonkeyPatch) -> list[TrainConfig]:
    """Make `defaults` train each model for a few steps on a tiny body; the configurations it was given."""
    real = artifact.train_version
    seen: list[TrainConfig] = []

    def briefly(config: TrainConfig, *args: Any, **kwargs: Any) -> TrainedVersion:
        seen.append(config)
        return real(dataclasses.replace(config, steps=10, hidden=(4, 4)), *args, **kwargs)

    monkeypatch.setattr(artifact, "train_version", briefly)
    return seen


def test_defaults_with_mnist_build_conv2d_models_beside_the_digits_mlps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _mnist_folder(tmp_path / "mnist")
    seen = _briefly(monkeypatch)
    argv = ["defaults", "--out", str(tmp_path / "models"), "--variants", "denoising", "--quiet"]
    assert main([*argv, "--mnist", str(tmp_path / "mnist")]) == 0
    assert [c.architecture for c in seen] == ["mlp", "conv2d"]
    mnist = ModelMetadata.read(tmp_path / "models" / "mnist-denoising" / "1")
    assert (mnist.kind, mnist.architecture, mnist.input_shape) == ("image", "conv2d", [1, 12, 12])
    assert mnist.image is not None and mnist.image.pixel_range == (0.0, 255.0)
    # Trained on the rows with index % 5 != 0, reported on the rest.
    assert (mnist.data.n_test, mnist.data.n_train + mnist.data.n_validation) == (8, 32)
    assert tuned_for("conv2d", "denoising").hparams.items() <= mnist.training["hparams"].items()
    assert "knn" not in mnist.scores  # no memory bank in the shipped image models
    # MNIST's held-out images stay with the user's copy of MNIST; the digits' beside their model.
    assert not (tmp_path / "models" / "mnist-denoising" / "1" / "test.npy").exists()
    assert (tmp_path / "models" / "digits-denoising" / "1" / "test.npy").exists()
    assert ModelMetadata.read(tmp_path / "models" / "digits-denoising" / "1").architecture == "mlp"
    assert "built in" in capsys.readouterr().out


def test_defaults_only_builds_the_named_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _mnist_folder(tmp_path / "mnist")
    seen = _briefly(monkeypatch)
    out = tmp_path / "models"
    argv = ["defaults", "--out", str(out), "--mnist", str(tmp_path / "mnist"), "--quiet"]
    assert main([*argv, "--only", "mnist-vae", "mnist-plain"]) == 0
    assert [(c.variant, c.architecture) for c in seen] == [("plain", "conv2d"), ("vae", "conv2d")]
    assert sorted(p.name for p in out.iterdir()) == ["mnist-plain", "mnist-vae"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--only", "mnist-vea"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'mnist-vea'" in err
    assert main(["defaults", "--out", str(out), "--only", "mnist-vae"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the mnist models need --mnist DIR" in err


def test_defaults_with_a_wrong_mnist_folder_fail_in_one_line_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["defaults", "--out", str(tmp_path / "models"), "--mnist", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MNIST folder not found" in err
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("variant", sorted(OBJECTIVES))
def test_conv2d_defaults_are_the_bodys_tuned_ones(variant: str) -> None:
    cls = OBJECTIVES[variant]
    every, own = BODY_TUNED["conv2d"][EVERY_VARIANT], BODY_TUNED["conv2d"].get(variant)
    config = resolve(
        TrainConfig(variant=variant), 8000, (1, 28, 28), "image", cls.default_latent_dim, 6000, "conv2d"
    )
    tuned = tuned_for("conv2d", variant)
    assert config.steps == tuned.steps == ((own.steps if own else None) or every.steps)
    assert (config.hidden, config.hparams) == (tuned.hidden, dict(tuned.hparams))
    assert (config.code, config.stage_convs) == (tuned.code or "dense", tuned.stage_convs or 1)
    if config.code == "grid":
        # Half of the 784 pixels, in whole channels at each of the 14x14 cells the last stage keeps.
        assert config.latent_dim == 392
    else:
        assert config.latent_dim == (tuned.latent_dim or cls.default_latent_dim)
    if own is not None:
        assert own.hidden == config.hidden
        assert own.hparams.items() <= config.hparams.items()
    # Explicit choices win over the tuned ones.
    chosen = TrainConfig(
        variant=variant, latent_dim=5, hidden=(3,), steps=7, code="dense", hparams={"noise_std": 0.4}
    )
    kept = resolve(chosen, 8000, (1, 28, 28), "image", cls.default_latent_dim, 6000, "conv2d")
    assert (kept.latent_dim, kept.hidden, kept.steps, kept.hparams["noise_std"]) == (5, (3,), 7, 0.4)
    assert kept.code == "dense"
    # The MLP keeps the objective's own defaults: a fixed noise level, the exact Jacobian, no grid.
    on_mlp = resolve(TrainConfig(variant=variant), 8000, (64,), "image", cls.default_latent_dim, 6000, "mlp")
    assert (on_mlp.steps, on_mlp.hidden, on_mlp.hparams) == (6000, None, {})
    assert (on_mlp.code, on_mlp.stage_convs) == ("dense", 1)


def test_grid_code_default_width_is_half_the_input_in_whole_channels() -> None:
    grid = TrainConfig(variant="plain", code="grid", hidden=(8, 8))
    # 3 x 20 x 12 -> one halving -> 10 x 6 = 60 cells; half of 720 values is 360 = 6 channels.
    assert resolve(grid, 500, (3, 20, 12), "image", 16, 6000, "conv2d").latent_dim == 360
    # 1 x 9 x 9 -> 5 x 5 = 25 cells; half of 81 is 40.5: one channel, 25.
    assert resolve(grid, 500, (1, 9, 9), "image", 16, 6000, "conv2d").latent_dim == 25
    # No halving at all (one stage, kept for the grid): a channel is as wide as the input.
    with pytest.raises(DataError, match=r"as wide as the input \(81 values\); expected two stages or more"):
        resolve(dataclasses.replace(grid, hidden=(8,)), 500, (1, 9, 9), "image", 16, 6000, "conv2d")


def test_denoising_noise_std_is_drawn_per_sample_in_its_range() -> None:
    torch.manual_seed(0)
    model = build_model("denoising", "conv2d", (1, 8, 8), 4, (4,), {"noise_std": 0.1, "noise_std_max": 0.5})
    assert isinstance(model, DenoisingAutoencoder)
    stds = model.noise_std(torch.zeros(2000, 1, 8, 8))
    assert stds.shape == (2000, 1, 1, 1)
    assert 0.1 <= float(stds.min()) < 0.12 and 0.48 < float(stds.max()) <= 0.5
    assert float(stds.mean()) == pytest.approx(0.3, abs=0.01)
    fixed = build_model("denoising", "conv2d", (1, 8, 8), 4, (4,), {"noise_std": 0.2, "noise_std_max": 0.0})
    assert isinstance(fixed, DenoisingAutoencoder)
    assert float(fixed.noise_std(torch.zeros(5, 1, 8, 8))) == pytest.approx(0.2)


def _digit_images(digits: npt.NDArray[np.float32]) -> tuple[torch.Tensor, Normaliser]:
    images = digits.reshape(-1, 1, 8, 8)
    normaliser = Normaliser.fit(images, "minmax", shared=True, channel_axis=0)
    return torch.from_numpy(normaliser.transform(images)), normaliser


def test_denoising_on_conv2d_lowers_the_noisy_to_clean_error(digits: npt.NDArray[np.float32]) -> None:
    torch.manual_seed(0)
    x, _ = _digit_images(digits)  # (200, 1, 8, 8) in 0..1
    train, test = x[:160], x[160:]
    model = build_model("denoising", "conv2d", (1, 8, 8), 16, (8, 16), {"noise_std": 0.3})
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    noisy = test + 0.3 * torch.randn(test.shape, generator=torch.Generator().manual_seed(1))

    def error() -> float:
        model.eval()
        with torch.no_grad():
            return float(((model(noisy) - test) ** 2).mean())

    before = error()
    for step in range(300):
        model.train()
        loss = model.loss(train[(step * 32) % 160 :][:32])
        optimiser.zero_grad()
        loss.total.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    after = error()
    noisy_error = float(((noisy - test) ** 2).mean())
    # Below the noise it was given, and far below where it started.
    assert after < 0.6 * noisy_error and after < 0.5 * before, (after, noisy_error, before)


def test_contractive_projections_estimate_the_exact_jacobian_norm() -> None:
    torch.manual_seed(4)
    model = build_model("contractive", "conv2d", (1, 8, 8), 6, (4,), {"jacobian_probes": 1})
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    z = model.encode(x)
    exact = jacobian_frobenius_sq(z, x)
    estimate = jacobian_projections_sq(z, x, 4000)
    torch.testing.assert_close(estimate.detach(), exact.detach(), rtol=0.1, atol=0.0)
    # In training the penalty takes the estimate, in evaluation the exact norm.
    model.eval()
    weight = model.hp["contractive_weight"]
    assert model.penalty(x, z).item() == pytest.approx(weight * exact.mean().item(), rel=1e-5)


def test_conv2d_vae_samples_are_digit_like_images(digits: npt.NDArray[np.float32]) -> None:
    torch.manual_seed(0)
    x, _ = _digit_images(digits)
    model = build_model("vae", "conv2d", (1, 8, 8), 4, (8, 16), {})
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(300):
        model.train()
        loss = model.loss(x[(step * 32) % 200 :][:32])
        optimiser.zero_grad()
        loss.total.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    model.eval()
    with torch.no_grad():
        samples = model.sample(64, torch.Generator().manual_seed(0))
    assert samples.shape == (64, 1, 8, 8)
    # Digit-like: projected on the digits' leading principal components, a sample loses little of itself,
    # as the digits do, and far less than noise of the same pixel statistics loses.
    flat = x.reshape(len(x), -1).double()
    mean = flat.mean(dim=0)
    _, _, vt = torch.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:8]  # (8, 64)

    def residual(rows: torch.Tensor) -> float:
        centred = rows.reshape(len(rows), -1).double() - mean
        return float(((centred - centred @ basis.T @ basis) ** 2).sum(dim=1).mean())

    shuffled = flat[:, torch.randperm(64)]  # pixels of real digits, in no digit's order
    assert residual(samples) < 0.5 * residual(shuffled), (residual(samples), residual(shuffled))
    assert residual(samples) < 2.0 * residual(flat)


def _tiny_images(digits: npt.NDArray[np.float32]) -> Dataset:
    return Dataset.of_images(digits.reshape(-1, 1, 8, 8), "digits")


def test_conv2d_builds_are_reproducible(digits: npt.NDArray[np.float32], tmp_path: Path) -> None:
    # The denoising defaults on conv2d: a grid code, two convolutions a stage.
    config = TrainConfig(variant="denoising", architecture="conv2d", hidden=(4, 4), steps=30)
    hashes = []
    for out in ("a", "b"):
        trained = train_version(config, _tiny_images(digits), tmp_path / out, "same", progress=False)
        hashes.append({role: graph.sha256 for role, graph in trained.metadata.graphs.items()})
    assert hashes[0] == hashes[1]


@pytest.fixture(scope="module")
def image_repository(digits: npt.NDArray[np.float32], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv2d denoising model trained here on the digits as 8x8 images, its code the default grid code."""
    out = tmp_path_factory.mktemp("models")
    config = TrainConfig(variant="denoising", architecture="conv2d", hidden=tiny_hidden("conv2d"), steps=200)
    train_version(config, _tiny_images(digits), out, "digits-conv", progress=False)
    return out


def _png(pixels: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_trained_image_model_answers_a_png_with_a_png_of_the_same_size(
    image_repository: Path, digits: npt.NDArray[np.float32]
) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    digit = digits[0].reshape(8, 8)
    noisy = np.clip(digit + np.random.default_rng(0).normal(0, 3, (8, 8)), 0, 16)
    png = _png(np.round(noisy * 255 / 16))  # the model's pixel range is 0..16: PNG 255 is 16
    with TestClient(create_app(Settings(models_dir=image_repository))) as client:
        r = client.post(
            "/denoise?model=digits-conv",
            content=png,
            headers={"content-type": "image/png", "accept": "image/png"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        answer = Image.open(io.BytesIO(r.content))
        assert (answer.size, answer.mode) == ((8, 8), "L")
        # The PNG answer is the array answer for the same pixels, in PNG units.
        pixels = (np.asarray(Image.open(io.BytesIO(png)), np.float32) * 16 / 255)[None]  # (1, 8, 8)
        array = client.post("/denoise", json={"model": "digits-conv", "inputs": pixels.tolist()}).json()
        expected = np.clip(np.asarray(array["outputs"][0]) * 255 / 16 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(np.asarray(answer).astype(int) - expected.astype(int)).max() <= 1
        # And the per-pixel error map comes back as a PNG heat map of the same size.
        heat = client.post(
            "/reconstruction-error?model=digits-conv&per_feature=true",
            content=png,
            headers={"content-type": "image/png", "accept": "image/png"},
        )
        assert heat.status_code == 200, heat.text
        assert Image.open(io.BytesIO(heat.content)).size == (8, 8)
