"""PNG figures saved beside each model: loss curves, originals against reconstructions, generated samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from service.contract import ImageSpec
from training.data import Array
from training.train import History

__all__ = ["save_loss_curves", "save_reconstructions", "save_samples"]


def save_loss_curves(history: History, best_epoch: int, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history.train_loss) + 1)
    ax.plot(epochs, history.train_loss, label="train loss")
    ax.plot(epochs, history.validation_loss, label="validation loss")
    ax.plot(epochs, history.validation_reconstruction, label="validation mse", linestyle="--")
    ax.axvline(best_epoch + 1, color="grey", linestyle=":", label="kept (best validation)")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_title(title)
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
    originals: Array, reconstructions: Array, image: ImageSpec | None, path: Path, title: str
) -> None:
    """Held-out originals (top row) against their reconstructions (bottom row), raw units."""
    _grid([originals[:12], reconstructions[:12]], ["original", "reconstruction"], image, path, title)


def save_samples(samples: Array, image: ImageSpec | None, path: Path, title: str) -> None:
    """Decoded draws of z ~ N(0, I), raw units, three rows."""
    per_row = len(samples) // 3
    _grid([samples[i * per_row : (i + 1) * per_row] for i in range(3)], ["", "", ""], image, path, title)
