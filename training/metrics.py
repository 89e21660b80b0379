"""Held-out measurements of a trained model, the same for every objective and body (each metric means the
same thing); samples are flattened to rows wherever a baseline (PCA) needs rows."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA

from training.data import Array, Normaliser, as_rows
from training.objectives import Autoencoder, jacobian_frobenius_sq

__all__ = ["NEAR_ZERO", "held_out_metrics", "noise_std_for"]

# A code activation below this (absolute, in code units) counts as inactive.
NEAR_ZERO = 0.01
# Held-out samples the Jacobian norm is averaged over.
JACOBIAN_SAMPLES = 256
# Denoising is measured with Gaussian noise of this fraction of the data's range.
NOISE_FRACTION = 0.2


def noise_std_for(x_train: Array, shared_units: bool) -> Array:
    """Raw-unit noise std per value of a sample: a fraction of the global range when all values share units
    (image pixels), of each value's own range otherwise (tabular features)."""
    spread = x_train.max(axis=0) - x_train.min(axis=0)
    if shared_units:
        spread = np.full_like(spread, spread.max())
    return (NOISE_FRACTION * np.where(spread > 0, spread, 1.0)).astype(np.float32)


def _pca_reconstruct(pca: PCA, x: Array, k: int) -> Array:
    codes = (x - pca.mean_) @ pca.components_[:k].T  # (rows, k)
    return (codes @ pca.components_[:k] + pca.mean_).astype(np.float32)  # type: ignore[no-any-return]


def held_out_metrics(
    model: Autoencoder,
    normaliser: Normaliser,
    x_train: Array,
    x_test: Array,
    shared_units: bool,
    seed: int = 0,
) -> dict[str, float]:
    """Metrics on held-out raw samples `x_test` (n, *input_shape); PCA baselines are fitted on the raw
    training samples `x_train`, flattened."""
    model.eval()
    n_train, n_test = normaliser.transform(x_train), normaliser.transform(x_test)
    # The Jacobian takes one backward pass per code unit: on the first JACOBIAN_SAMPLES held-out samples only
    # (a 128-unit conv2d code over MNIST's 2,000 held-out images cost more than training the model).
    probe = torch.from_numpy(n_test[:JACOBIAN_SAMPLES]).requires_grad_(True)  # (m, *input_shape)
    jacobian = jacobian_frobenius_sq(model.encode(probe), probe)  # (m,)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(n_test))  # (n, latent_dim)
        reconstruction = model(torch.from_numpy(n_test)).numpy()
        weights = sum(float((w**2).sum()) for w in model.weights())
    codes = z.numpy()
    k = model.latent_dim
    flat_train, flat_test = as_rows(n_train), as_rows(n_test)
    pca = PCA(n_components=min(k, *flat_train.shape), svd_solver="full").fit(flat_train)
    pca_mse = float(np.mean((_pca_reconstruct(pca, flat_test, k) - flat_test) ** 2))
    metrics = {
        "test_mse": float(np.mean((reconstruction - n_test) ** 2)),
        "test_mse_raw": float(np.mean((normaliser.inverse(reconstruction, like=x_test) - x_test) ** 2)),
        "pca_mse": pca_mse,
        "code_near_zero_fraction": float(np.mean(np.abs(codes) < NEAR_ZERO)),
        "code_mean_activation": float(np.mean(codes)),
        "code_mean_abs_activation": float(np.mean(np.abs(codes))),
        "jacobian_frobenius_sq": float(jacobian.mean()),
        "weights_sq_sum": weights,
    }
    metrics["mse_to_pca_ratio"] = metrics["test_mse"] / pca_mse if pca_mse > 0 else float("inf")
    metrics.update(_denoising(model, normaliser, x_train, x_test, shared_units, seed))
    return metrics


def _denoising(
    model: Autoencoder, normaliser: Normaliser, x_train: Array, x_test: Array, shared_units: bool, seed: int
) -> dict[str, float]:
    """Denoised-vs-clean MSE (raw units) against the noisy input's and the best PCA projection's."""
    std = noise_std_for(x_train, shared_units)
    noisy = (x_test + np.random.default_rng(seed).normal(size=x_test.shape) * std).astype(np.float32)
    with torch.no_grad():
        denoised = normaliser.inverse(
            model(torch.from_numpy(normaliser.transform(noisy))).numpy(), like=noisy
        )
    pca = PCA(svd_solver="full").fit(as_rows(x_train))
    flat_noisy, flat_clean = as_rows(noisy), as_rows(x_test)
    # The projection on k + 1 components is the one on k plus one more term: one pass over k, not k passes.
    codes = (flat_noisy - pca.mean_) @ pca.components_.T  # (rows, n_components)
    projection = np.broadcast_to(pca.mean_, flat_noisy.shape).astype(np.float64)
    best_pca = np.inf
    for k in range(pca.n_components_):
        projection = projection + np.outer(codes[:, k], pca.components_[k])
        best_pca = min(best_pca, float(np.mean((projection.astype(np.float32) - flat_clean) ** 2)))
    noisy_mse = float(np.mean((noisy - x_test) ** 2))
    denoised_mse = float(np.mean((denoised - x_test) ** 2))
    return {
        "denoise_noisy_mse_raw": noisy_mse,
        "denoise_mse_raw": denoised_mse,
        "denoise_pca_best_mse_raw": best_pca,
        "denoise_to_noisy_ratio": denoised_mse / noisy_mse,
        "denoise_to_pca_ratio": denoised_mse / best_pca,
    }
