"""The variants' names and own options, without torch: what the command line offers before it trains.

`python -m training --help` and every argument or data error must answer at once, so the parser cannot
import the variant classes (torch takes seconds to import). The classes in `training.variants` declare the
same hyper-parameters; `tests/training/test_cli.py` checks that the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["VARIANT_OPTIONS", "HyperParameter"]


@dataclass(frozen=True)
class HyperParameter:
    """A variant's own hyper-parameter; the CLI offers it as --<name with dashes>."""

    name: str
    default: float
    help: str
    minimum: float = 0.0
    maximum: float = math.inf
    """Allowed range, inclusive."""


VARIANT_OPTIONS: dict[str, tuple[HyperParameter, ...]] = {
    "plain": (),
    "linear": (),
    "sparse_l1": (HyperParameter("l1", 1e-3, "weight of the L1 penalty on code activations"),),
    "sparse_l2": (HyperParameter("l2", 1e-4, "weight of the L2 penalty on the weights"),),
    "sparse_kl": (
        HyperParameter("rho", 0.05, "target mean activation of each code unit", 1e-4, 1 - 1e-4),
        HyperParameter("kl_weight", 0.1, "weight of the KL sparsity penalty"),
    ),
    "denoising": (
        HyperParameter("noise_std", 0.2, "std of the Gaussian noise added in the normalised space"),
        HyperParameter("mask_prob", 0.0, "probability of setting each input feature to zero", 0.0, 1.0),
    ),
    "contractive": (
        HyperParameter("contractive_weight", 0.01, "weight of the squared Frobenius norm of the Jacobian"),
    ),
    "vae": (HyperParameter("beta", 0.02, "weight of the KL term of the VAE loss"),),
}
"""Variant name -> its own hyper-parameters, as `training.variants.VARIANTS[name].hyperparameters`."""
