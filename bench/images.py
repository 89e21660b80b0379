"""Image benchmark on held-out MNIST: denoising against the classical denoisers, and one-class novelty.

Split (the shipped `mnist-<variant>` models' own): images with index % 5 == 0 are held out, the rest train.

Denoising: the first `--n-test` held-out images, each with Gaussian noise of std 0.1, 0.2, 0.3 and 0.5 of the
0..1 range (not clipped: additive white Gaussian noise, what BM3D and the others assume; one noise draw per
level, the same for every method; with `--eight-bit`, the noisy image clipped to 0..1 and rounded to 8 bits,
as a PNG file carries it, for tuning and testing alike). Every method's output is clipped to 0..1, then PSNR
and SSIM against the clean image. Methods: the conv denoising autoencoder (the `mnist-denoising` model's
recipe, `--models` to reuse a built one), an MLP denoising autoencoder trained the same way, PCA projection,
scikit-image's `denoise_nl_means`, `denoise_tv_chambolle` and `denoise_wavelet`, and BM3D. Every parameter
that is not the noise std (known to all, as in the usual protocol) is tuned per level on noisy training
images. Time per image is single-threaded wall time: per call for the classical denoisers, over a batch for
the autoencoders (through ONNX Runtime, as the service runs them) and PCA.

Novelty: for each digit d, a conv and an MLP plain autoencoder are trained on the training images of d;
held-out images of d are the normal ones and held-out images of every other digit the anomalies; AUROC of
the reconstruction error, against PCA (k chosen on validation) and IsolationForest fitted on the same images.

    .venv/bin/python bench/images.py --data /work/shared/data/mnist [--quick] [--out artifacts/images]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from service.contract import ModelMetadata
from training.artifact import train_version
from training.cli import MNIST_ARCHITECTURE, mnist_config
from training.data import Dataset, read_mnist, split_rows
from training.defaults import tuned_for
from training.evaluate import evaluate, model_result, split_training_rows
from training.scoring import score_rows

Images = npt.NDArray[np.float64]
"""(n, height, width) grey images in 0..1."""

NOISE_LEVELS = (0.1, 0.2, 0.3, 0.5)
# Noisy training images the PCA projection's k is chosen on (cheap, so more than the classical methods get).
PCA_TUNE_IMAGES = 500
# Test images per noise level in the figure.
FIGURE_IMAGES = 2
TEST_EVERY = 5
SEED = 0
# The targets of the benchmark (docs/images.md): the conv denoising autoencoder above every other method's
# PSNR at every level, and the conv autoencoder's mean novelty AUROC above the MLP's and PCA's.
CONV, MLP = "conv denoising AE", "MLP denoising AE"


@dataclass(frozen=True)
class Classical:
    """A classical denoiser: `run(noisy, sigma, **params)` -> denoised, and the grid its params are tuned
    over, per noise std."""

    name: str
    run: Callable[..., Images]
    grid: Callable[[float], list[dict[str, Any]]]


def _nl_means(noisy: Images, sigma: float, **params: Any) -> Images:
    from skimage.restoration import denoise_nl_means

    return np.asarray(denoise_nl_means(noisy, sigma=sigma, fast_mode=True, **params))


def _tv(noisy: Images, sigma: float, **params: Any) -> Images:
    from skimage.restoration import denoise_tv_chambolle

    return np.asarray(denoise_tv_chambolle(noisy, **params))


def _wavelet(noisy: Images, sigma: float, **params: Any) -> Images:
    from skimage.restoration import denoise_wavelet

    return np.asarray(denoise_wavelet(noisy, sigma=sigma, rescale_sigma=True, **params))


def _bm3d(noisy: Images, sigma: float, **params: Any) -> Images:
    import bm3d

    profile = bm3d.BM3DProfile()
    profile.num_threads = 1
    return np.asarray(bm3d.bm3d(noisy, sigma_psd=params["sigma_factor"] * sigma, profile=profile))


CLASSICAL: tuple[Classical, ...] = (
    Classical(
        "denoise_nl_means",
        _nl_means,
        lambda s: [
            {"h": f * s, "patch_size": p, "patch_distance": 6}
            for f, p in itertools.product((0.6, 0.8, 1.0, 1.2), (3, 5))
        ],
    ),
    Classical(
        "denoise_tv_chambolle",
        _tv,
        lambda s: [{"weight": f * s} for f in (0.3, 0.5, 0.7, 1.0, 1.4, 2.0)],
    ),
    Classical(
        "denoise_wavelet",
        _wavelet,
        lambda s: [
            {"method": m, "mode": mode, "wavelet": w}
            for m, mode, w in itertools.product(
                ("BayesShrink", "VisuShrink"), ("soft", "hard"), ("db1", "db2")
            )
        ],
    ),
    Classical("BM3D", _bm3d, lambda s: [{"sigma_factor": f} for f in (0.8, 1.0, 1.25)]),
)


def psnr(clean: Images, denoised: Images) -> npt.NDArray[np.float64]:
    """Per-image PSNR in dB, data range 1, (n,)."""
    mse = np.mean((denoised - clean) ** 2, axis=(1, 2))
    return np.asarray(10 * np.log10(1.0 / np.maximum(mse, 1e-12)), np.float64)


def ssim(clean: Images, denoised: Images) -> npt.NDArray[np.float64]:
    """Per-image SSIM (scikit-image's, 7x7 window, data range 1), (n,)."""
    from skimage.metrics import structural_similarity

    return np.array(
        [structural_similarity(c, d, data_range=1.0) for c, d in zip(clean, denoised, strict=True)]
    )


def add_noise(clean: Images, sigma: float, seed: int, eight_bit: bool = False) -> Images:
    """`clean` plus Gaussian noise of std `sigma`; `eight_bit`: clipped to 0..1 and rounded to 1/255 steps."""
    noisy = clean + sigma * np.random.default_rng(seed).normal(size=clean.shape)
    return np.round(np.clip(noisy, 0.0, 1.0) * 255) / 255 if eight_bit else noisy


@dataclass
class Score:
    psnr: float
    ssim: float
    seconds_per_image: float
    params: str = ""


@dataclass
class Report:
    n_test: int
    n_tune: int
    eight_bit: bool = False
    noisy: dict[float, Score] = field(default_factory=dict)
    denoising: dict[str, dict[float, Score]] = field(default_factory=dict)
    novelty: dict[str, dict[int, float]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    examples: dict[str, dict[float, Images]] = field(default_factory=dict, repr=False)
    """Method -> noise std -> its output on the first FIGURE_IMAGES test images (for the figure)."""


def _timed(run: Callable[[Images], Images], noisy: Images) -> tuple[Images, float]:
    """`run(noisy)` clipped to 0..1, and its wall time per image."""
    started = time.perf_counter()
    out = run(noisy)
    return np.clip(out, 0.0, 1.0), (time.perf_counter() - started) / len(noisy)


def _one_by_one(method: Classical, sigma: float, params: dict[str, Any], noisy: Images) -> Images:
    return np.stack([method.run(image, sigma, **params) for image in noisy])


def save_figure(report: Report, path: Path) -> None:
    """Rows: the noisy input, each method, the clean image; columns: FIGURE_IMAGES images per noise level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["noisy input", *report.denoising, "clean"]
    columns = [(s, i) for s in NOISE_LEVELS for i in range(FIGURE_IMAGES)]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(len(columns) * 0.9, len(rows) * 0.95))
    for r, name in enumerate(rows):
        for c, (sigma, i) in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(report.examples[name][sigma][i], cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"std {sigma}", fontsize=7)
        axes[r][0].set_ylabel(name.replace("denoise_", "").replace(" denoising AE", " AE"), fontsize=6)
    fig.tight_layout(pad=0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _score(clean: Images, denoised: Images, seconds: float, params: str = "") -> Score:
    return Score(float(psnr(clean, denoised).mean()), float(ssim(clean, denoised).mean()), seconds, params)


def tune(method: Classical, train: Images, sigma: float, eight_bit: bool = False) -> dict[str, Any]:
    """The grid point with the highest mean PSNR on noisy training images."""
    noisy = add_noise(train, sigma, SEED + 1, eight_bit)
    best, best_psnr = {}, -np.inf
    for params in method.grid(sigma):
        out = np.clip(np.stack([method.run(n, sigma, **params) for n in noisy]), 0.0, 1.0)
        value = float(psnr(train, out).mean())
        if value > best_psnr:
            best, best_psnr = params, value
    return best


def pca_denoiser(train: Images, noisy_train: Images) -> tuple[Callable[[Images], Images], int]:
    """PCA projection on the k components (k tuned on `noisy_train`) of the clean training images."""
    flat = train.reshape(len(train), -1)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)

    def project(noisy: Images, k: int) -> Images:
        centred = noisy.reshape(len(noisy), -1) - mean
        return ((centred @ vt[:k].T) @ vt[:k] + mean).reshape(noisy.shape)

    candidates = [k for k in (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192) if k < len(vt)]
    clean = train[: len(noisy_train)]
    k = max(candidates, key=lambda k: float(psnr(clean, np.clip(project(noisy_train, k), 0, 1)).mean()))
    return functools.partial(project, k=k), k


def autoencoder_denoiser(directory: Path) -> Callable[[Images], Images]:
    """The model version's fused graph on raw pixels (0..255, as it was trained), answered in 0..1."""
    low, high = ModelMetadata.read(directory).image.pixel_range  # type: ignore[union-attr]

    def denoise(noisy: Images) -> Images:
        raw = (low + (high - low) * noisy[:, None]).astype(np.float32)  # (n, 1, H, W)
        reconstruction = score_rows(directory, raw).reconstruction
        return np.asarray((reconstruction.reshape(noisy.shape) - low) / (high - low), np.float64)

    return denoise


def _denoiser(
    architecture: str,
    dataset: Dataset,
    out: Path,
    name: str,
    steps: int | None,
    latent_dim: int | None = None,
) -> Path:
    """A denoising autoencoder trained as the shipped mnist-denoising is; on an MLP, with the conv2d one's
    noise and `latent_dim`, its code size (only the body differs; the MLP keeps its own capacity, code layout
    and step budget)."""
    conv = tuned_for(MNIST_ARCHITECTURE, "denoising")
    config = dataclasses.replace(
        mnist_config("denoising"),
        architecture=architecture,
        latent_dim=latent_dim,
        hparams=dict(conv.hparams),
        steps=steps,
    )
    trained = train_version(config, dataset, out, name, test_every=TEST_EVERY, progress=False, version=1)
    return trained.directory


def _check_split(directory: Path, n: int) -> None:
    meta = ModelMetadata.read(directory)
    expected = len(split_rows(n, float(meta.training["validation_fraction"]), meta.seed, TEST_EVERY).test)
    if meta.data.n_test != expected or meta.training.get("test_every") != TEST_EVERY:
        raise SystemExit(f"{directory}: not trained on the MNIST split of this benchmark (index % 5 != 0)")


def run_denoising(args: argparse.Namespace, report: Report, work: Path) -> None:
    dataset, _ = read_mnist(args.data)
    x = dataset.x[:, 0].astype(np.float64) / 255.0  # (n, 28, 28)
    split = split_rows(len(x), 0.2, SEED, TEST_EVERY)
    train, test = x[np.sort(np.r_[split.train, split.validation])], x[split.test][: args.n_test]
    tune_images = train[: args.n_tune]
    conv = (args.models or work) / "mnist-denoising" / "1"
    if not conv.is_dir():  # trained as `defaults --mnist` trains it, into --models when given
        print("training the conv denoising autoencoder", file=sys.stderr, flush=True)
        conv = _denoiser(MNIST_ARCHITECTURE, dataset, args.models or work, "mnist-denoising", args.steps)
    _check_split(conv, len(x))
    print("training the MLP denoising autoencoder", file=sys.stderr, flush=True)
    code = ModelMetadata.read(conv).latent_dim
    mlp = _denoiser("mlp", dataset, work, "mnist-mlp-denoising", args.steps, code)
    report.models = {CONV: str(conv), MLP: "trained by the benchmark (mnist recipe, architecture mlp)"}
    learned = {CONV: autoencoder_denoiser(conv), MLP: autoencoder_denoiser(mlp)}
    for level_index, sigma in enumerate(NOISE_LEVELS):
        noisy = add_noise(test, sigma, SEED + 10 + level_index, args.eight_bit)
        report.noisy[sigma] = _score(test, np.clip(noisy, 0, 1), 0.0)
        report.examples.setdefault("noisy input", {})[sigma] = np.clip(noisy[:FIGURE_IMAGES], 0, 1)
        report.examples.setdefault("clean", {})[sigma] = test[:FIGURE_IMAGES]
        for name, denoise in learned.items():
            out, seconds = _timed(denoise, noisy)
            report.denoising.setdefault(name, {})[sigma] = _score(test, out, seconds)
            report.examples.setdefault(name, {})[sigma] = out[:FIGURE_IMAGES]
        pca, k = pca_denoiser(train, add_noise(train[:PCA_TUNE_IMAGES], sigma, SEED + 1, args.eight_bit))
        out, seconds = _timed(pca, noisy)
        report.denoising.setdefault("PCA projection", {})[sigma] = _score(test, out, seconds, f"k={k}")
        report.examples.setdefault("PCA projection", {})[sigma] = out[:FIGURE_IMAGES]
        for method in CLASSICAL:
            params = tune(method, tune_images, sigma, args.eight_bit)
            out, seconds = _timed(functools.partial(_one_by_one, method, sigma, params), noisy)
            shown = ", ".join(
                f"{n}={v:.3g}" if isinstance(v, float) else f"{n}={v}" for n, v in params.items()
            )
            report.denoising.setdefault(method.name, {})[sigma] = _score(test, out, seconds, shown)
            report.examples.setdefault(method.name, {})[sigma] = out[:FIGURE_IMAGES]
        print(
            f"noise {sigma}: "
            + "  ".join(f"{m} {s[sigma].psnr:.2f}" for m, s in report.denoising.items())
            + f"  [{time.perf_counter() - STARTED:.0f} s]",
            file=sys.stderr,
            flush=True,
        )


def run_novelty(args: argparse.Namespace, report: Report, work: Path) -> None:
    dataset, labels = read_mnist(args.data)
    index = np.arange(len(dataset.x))
    held_out = index % TEST_EVERY == 0
    digits = range(3) if args.quick else range(10)
    for digit in digits:
        own = dataset.x[~held_out & (labels == digit)]
        normal, anomalies = dataset.x[held_out & (labels == digit)], dataset.x[held_out & (labels != digit)]
        data = Dataset.of_images(own, f"mnist digit {digit}")
        results: dict[str, float] = {}
        for architecture, label in (("conv2d", "conv AE"), ("mlp", "MLP AE")):
            config = dataclasses.replace(
                # A validation split (no cross-fitting): the AUROC does not read the thresholds.
                mnist_config("plain"),
                architecture=architecture,
                steps=args.novelty_steps,
                folds=0,
            )
            directory = train_version(
                config, data, work / "novelty", f"digit{digit}-{architecture}", 0, False, 1
            ).directory
            meta = ModelMetadata.read(directory)
            if architecture == "conv2d":
                rows = split_training_rows(meta, own, data.source)
                for r in evaluate(directory, normal, anomalies, rows):
                    results[label if r.name.startswith("digit") else r.name.split(" (")[0]] = r.auroc
            else:
                results[label] = model_result(directory, meta, normal, anomalies, "mse").auroc
        for method, value in results.items():
            report.novelty.setdefault(method, {})[digit] = value
        print(
            f"digit {digit}: "
            + "  ".join(f"{m} {v:.4f}" for m, v in results.items())
            + f"  [{time.perf_counter() - STARTED:.0f} s]",
            file=sys.stderr,
            flush=True,
        )


def tables(report: Report) -> str:
    lines: list[str] = []
    if report.denoising:
        levels = " | ".join(f"std {s}" for s in NOISE_LEVELS)
        rule = "|---" * (len(NOISE_LEVELS) + 2) + "|"
        lines += [
            f"### Denoising: PSNR (dB) / SSIM on {report.n_test} held-out MNIST images "
            f"(parameters tuned on {report.n_tune} training images"
            + ("; noise clipped and rounded to 8 bits)" if report.eight_bit else ")"),
            "",
            f"| method | {levels} | ms per image |",
            rule,
        ]
        rows = {"noisy input": report.noisy} | report.denoising
        for name, scores in rows.items():
            cells = " | ".join(f"{scores[s].psnr:.2f} / {scores[s].ssim:.3f}" for s in NOISE_LEVELS)
            ms = np.mean([scores[s].seconds_per_image for s in NOISE_LEVELS]) * 1000
            lines.append(f"| {name} | {cells} | {'-' if name == 'noisy input' else f'{ms:.2f}'} |")
        lines += ["", "Tuned parameters per level:", ""]
        for name, scores in report.denoising.items():
            if any(scores[s].params for s in NOISE_LEVELS):
                lines.append(f"- {name}: " + "; ".join(f"std {s}: {scores[s].params}" for s in NOISE_LEVELS))
        conv = report.denoising.get(CONV)
        if conv:
            others = [m for m in report.denoising if m != CONV]
            beaten = all(conv[s].psnr > report.denoising[m][s].psnr for m in others for s in NOISE_LEVELS)
            lines += [
                "",
                f"target (conv denoising AE above every other method at every level): "
                f"{'met' if beaten else 'NOT met'}",
            ]
    if report.novelty:
        digits = sorted(next(iter(report.novelty.values())))
        lines += [
            "",
            "### One-class novelty: AUROC per digit (trained on that digit's training images)",
            "",
            f"| method | mean | {' | '.join(str(d) for d in digits)} |",
            "|---" * (len(digits) + 2) + "|",
        ]
        means = {}
        for name, values in report.novelty.items():
            means[name] = float(np.mean([values[d] for d in digits]))
            lines.append(
                f"| {name} | **{means[name]:.4f}** | {' | '.join(f'{values[d]:.4f}' for d in digits)} |"
            )
        pca = next((m for m in means if m.startswith("PCA")), None)
        if "conv AE" in means and "MLP AE" in means and pca:
            met = means["conv AE"] > means["MLP AE"] and means["conv AE"] > means[pca]
            lines += ["", f"target (conv AE mean above MLP AE's and PCA's): {'met' if met else 'NOT met'}"]
    return "\n".join(lines)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


STARTED = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, required=True, help="folder of the MNIST IDX files")
    parser.add_argument(
        "--models", type=Path, help="a repository whose mnist-denoising/1 is used (trained there if absent)"
    )
    parser.add_argument("--n-test", type=int, default=100, help="held-out images denoised per noise level")
    parser.add_argument("--n-tune", type=int, default=10, help="training images the parameters are tuned on")
    parser.add_argument("--novelty-steps", type=int, default=1000, help="step budget of each one-class model")
    parser.add_argument("--steps", type=int, help="step budget of the denoising autoencoders (a smoke run)")
    parser.add_argument("--skip", choices=["denoising", "novelty"], help="leave one part out")
    parser.add_argument("--quick", action="store_true", help="novelty on digits 0-2 only")
    parser.add_argument(
        "--eight-bit",
        action="store_true",
        help="noisy images clipped to 0..1 and rounded to 8 bits, as in a PNG",
    )
    parser.add_argument("--out", type=Path, default=Path("artifacts/images"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    report = Report(args.n_test, args.n_tune, args.eight_bit)
    # One thread for numpy's BLAS too: every time per image is single-core time.
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        if args.skip != "denoising":
            run_denoising(args, report, Path(tmp))
        if args.skip != "novelty":
            run_novelty(args, report, Path(tmp))
    report.seconds = time.perf_counter() - STARTED
    stamp = f"{datetime.now(UTC):%Y-%m-%d}, commit {_commit()}, {report.seconds:.0f} s"
    text = tables(report) + f"\n\n({stamp})\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "results" + ("-quick" if args.quick else "")
    (args.out / f"{stem}.md").write_text(text)
    if report.denoising:
        save_figure(report, args.out / f"{stem}-denoising.png")
    summary = {k: v for k, v in dataclasses.asdict(report).items() if k != "examples"}
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {args.out / stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
