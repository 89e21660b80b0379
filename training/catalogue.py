"""Objectives' and bodies' names and options, without torch: what the command line offers before training.

`python -m training --help` and every argument or data error must answer at once, so the parser cannot
import the objective or body classes (torch takes seconds to import). The objective classes take their options
from here; `tests/training/test_cli.py` checks that the registries agree with these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BODY_DEFAULTS", "BODY_HIDDEN", "VARIANT_OPTIONS", "HyperParameter"]


@dataclass(frozen=True)
class HyperParameter:
    """An objective's own hyper-parameter; the CLI offers it as --<name with dashes>."""

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
        HyperParameter(
            "noise_std_max",
            0.0,
            "when above --noise-std, each sample's noise std is drawn uniformly from [noise_std, this]",
        ),
        HyperParameter("mask_prob", 0.0, "probability of setting each input value to zero", 0.0, 1.0),
    ),
    "contractive": (
        HyperParameter("contractive_weight", 0.01, "weight of the squared Frobenius norm of the Jacobian"),
        HyperParameter(
            "jacobian_probes",
            0,
            "random projections estimating the Jacobian norm in training (0: exact, one pass per code unit)",
            0,
            64,
        ),
    ),
    "vae": (HyperParameter("beta", 0.02, "weight of the KL term of the VAE loss"),),
}
"""Objective name -> its own hyper-parameters, as `training.objectives.OBJECTIVES[name].hyperparameters`."""

BODY_DEFAULTS: dict[str, tuple[str, ...]] = {"mlp": ("rows",), "conv1d": ("series",), "conv2d": ("image",)}
"""Body name -> the input kinds it is chosen for, as `training.bodies.BODIES[name].default_for`."""
BODY_HIDDEN: dict[str, str] = {
    "mlp": "hidden layer widths",
    "conv1d": "channels of each convolution stage",
    "conv2d": "channels of each convolution stage",
}
"""Body name -> what `--hidden` sets for it, as `training.bodies.BODIES[name].hidden_help`."""
