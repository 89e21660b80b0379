"""PNG figures saved beside each model: loss curves; for images originals (or noisy inputs) against their
reconstructions (or denoised outputs) and generated samples; for tables per-feature errors in normalised units
and the histogram of held-out scores with the threshold. Every axis is labelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt

from service.contract import ImageSpec
from training.data import Array
from training.train import History

__all__ = [
    "save_feature_errors",
    "save_loss_curves",
    "save_reconstructions",
    "save_samples",
    "save_score_histogram",
]


def save_loss_curves(history: History, best_epoch: int, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history.train_loss) + 1)
    ax.plot(epochs, history.train_loss, label="train loss")
    if history.validation_loss:
        ax.plot(epochs, history.validation_loss, label="validation loss")
        # The reconstruction part only where a penalty makes it differ from the loss.
        if not np.allclose(history.validation_loss, history.validation_reconstruction, rtol=1e-6):
            ax.plot(epochs, history.validation_reconstruction, label="validation mse", linestyle="--")
        ax.axvline(best_epoch + 1, color="grey", linestyle=":", label="kept (best validation)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalised units, log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _draw(ax: Any, sample: Array, image: ImageSpec | None, vmin: float, vmax: float) -> None:
    """One sample: an image (grey, or colour for three channels), the channels of a window as lines over
    time, or a row as bars."""
    if image is not None:
        pixels = sample.reshape(image.channels, image.height, image.width)
        if image.channels == 3:
            ax.imshow(np.clip((pixels.transpose(1, 2, 0) - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0))
        else:
            ax.imshow(pixels.mean(axis=0), cmap="gray_r", vmin=vmin, vmax=vmax)
    elif sample.ndim == 2:
        ax.plot(sample, linewidth=0.8)  # (window, channels): one line per channel
        ax.set_ylim(vmin, vmax)
    else:
        ax.bar(np.arange(sample.shape[0]), sample)
        ax.set_ylim(vmin, vmax)


def _grid(rows: list[Array], labels: list[str], image: ImageSpec | None, path: Path, title: str) -> None:
    columns = len(rows[0])
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.8, len(rows) * 0.9), squeeze=False)
    vmin = min(float(r.min()) for r in rows)
    vmax = max(float(r.max()) for r in rows)
    for r, (values, label) in enumerate(zip(rows, labels, strict=True)):
        for c in range(columns):
            ax = axes[r][c]
            _draw(ax, values[c], image, vmin, vmax)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_reconstructions(
    inputs: Array,
    outputs: Array,
    image: ImageSpec | None,
    path: Path,
    title: str,
    labels: tuple[str, str] = ("original", "reconstruction"),
) -> None:
    """Held-out inputs (top row) against the model's outputs (bottom row), raw units: originals and
    reconstructions, or noisy inputs and their denoised outputs."""
    _grid([inputs[:12], outputs[:12]], list(labels), image, path, title)


def save_feature_errors(feature_errors: Array, names: tuple[str, ...] | None, path: Path, title: str) -> None:
    """A box per feature of held-out rows' squared reconstruction errors in normalised units (log scale),
    the feature names on the axis."""
    width = feature_errors.shape[1]
    labels = list(names) if names is not None else [f"feature {i}" for i in range(width)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * width + 2.0), 4.5))
    floor = max(float(np.min(feature_errors[feature_errors > 0], initial=1e-12)), 1e-12)
    ax.boxplot(np.maximum(feature_errors, floor), showfliers=True, flierprops={"markersize": 2})
    ax.set_yscale("log")
    ax.set_xticks(np.arange(1, width + 1), labels, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("feature")
    ax.set_ylabel("squared error, normalised units")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_score_histogram(
    scores: npt.NDArray[np.floating], threshold: float, rate: float, path: Path, title: str
) -> None:
    """Histogram of held-out normal rows' scores, the default threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(np.asarray(scores, np.float64), bins=min(60, max(10, len(scores) // 8)), color="tab:blue")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.4g} ({rate:.2%})")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("held-out normal rows")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_samples(samples: Array, image: ImageSpec | None, path: Path, title: str) -> None:
    """Decoded draws of z ~ N(0, I), raw units, three rows."""
    per_row = len(samples) // 3
    _grid([samples[i * per_row : (i + 1) * per_row] for i in range(3)], ["", "", ""], image, path, title)
