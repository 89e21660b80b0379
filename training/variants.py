"""The autoencoder family: a base class, one subclass per variant overriding only what differs, and VARIANTS.

Every model works in the normalised space (normalisation lives outside, in the exported graphs). Adding a
variant means one subclass here and one entry in VARIANTS: the CLI options, the tests and the export all
iterate over VARIANTS and read what each class declares (`hyperparameters`, `encoder_outputs`, `scores`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from service.contract import ScoreName

__all__ = ["VARIANTS", "Autoencoder", "HyperParameter", "Loss", "build_model"]


@dataclass(frozen=True)
class HyperParameter:
    """A variant's own hyper-parameter; the CLI offers it as --<name with dashes>."""

    name: str
    default: float
    help: str
    minimum: float = 0.0
    maximum: float = math.inf
    """Allowed range, inclusive."""


class Loss(NamedTuple):
    total: Tensor
    """Scalar the optimiser minimises."""
    reconstruction: Tensor
    """Scalar mean squared error in the normalised space (comparable across variants)."""


class Autoencoder(nn.Module):
    """Plain MLP autoencoder; loss = mean squared reconstruction error in the normalised space."""

    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = ()
    default_hidden: ClassVar[tuple[int, ...]] = (128,)
    default_latent_dim: ClassVar[int] = 16
    default_steps: ClassVar[int] = 6000
    """Gradient-step budget when the configuration leaves epochs and steps unset."""
    encoder_outputs: ClassVar[tuple[str, ...]] = ("latent",)
    """Names of the encoder graph's outputs (ONNX tensor names)."""
    scores: ClassVar[tuple[ScoreName, ...]] = ("mse",)
    """Anomaly scores the fused graph outputs, beyond-mse ones computed by `extra_scores`."""
    generative: ClassVar[bool] = False

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: tuple[int, ...],
        hparams: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.hp = {p.name: p.default for p in self.hyperparameters} | (hparams or {})
        self.encoder = self.mlp([input_dim, *hidden, self.code_width()], self.code_activation())
        self.decoder = self.mlp([latent_dim, *reversed(hidden), input_dim], nn.Identity())

    def activation(self) -> nn.Module:
        return nn.ELU()

    def code_activation(self) -> nn.Module:
        """Applied to the code; the identity lets the code use its full range."""
        return nn.Identity()

    def code_width(self) -> int:
        """Width of the encoder's last layer (the VAE needs mean and log-variance)."""
        return self.latent_dim

    def mlp(self, widths: list[int], last: nn.Module) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.Linear(fan_in, fan_out))
            layers.append(self.activation() if i < len(widths) - 2 else last)
        return nn.Sequential(*layers)

    def encode(self, x: Tensor) -> Tensor:
        """The code used for reconstruction: (batch, input_dim) -> (batch, latent_dim)."""
        return self.encoder(x)  # type: ignore[no-any-return]

    def encode_outputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """What the encoder graph outputs, in the order of `encoder_outputs`."""
        return (self.encode(x),)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction: (batch, input_dim) -> (batch, input_dim)."""
        return self.decode(self.encode(x))

    def corrupt(self, x: Tensor) -> Tensor:
        """The training input made from a clean batch; the target stays clean."""
        return x

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        """Regulariser added to the reconstruction loss; `x` is the encoder's input, `z` its code."""
        return x.new_zeros(())

    def extra_scores(
        self, x: Tensor, codes: tuple[Tensor, ...], reconstruction: Tensor
    ) -> tuple[Tensor, ...]:
        """Per-sample scores besides mse, in the order of `scores[1:]`, each (batch,)."""
        return ()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode z ~ N(0, I): (n, input_dim) in the normalised space; meaningful when `generative`."""
        return self.decode(torch.randn(n, self.latent_dim, generator=generator))

    def loss(self, x: Tensor) -> Loss:
        """The training loss of a clean batch (corrupted first when training)."""
        x_in = self.corrupt(x) if self.training else x
        z = self.encode(x_in)  # (batch, latent_dim)
        reconstruction = torch.mean((self.decode(z) - x) ** 2)
        return Loss(reconstruction + self.penalty(x_in, z), reconstruction)


class LinearAutoencoder(Autoencoder):
    """No activations anywhere: the optimum is PCA's subspace at the same k."""

    default_hidden = ()

    def activation(self) -> nn.Module:
        return nn.Identity()


class SparseL1Autoencoder(Autoencoder):
    """Activity sparsity: lambda * sum_j |h_j| per sample on a ReLU code (so codes can be exactly zero)."""

    hyperparameters = (HyperParameter("l1", 1e-3, "weight of the L1 penalty on code activations"),)

    def code_activation(self) -> nn.Module:
        return nn.ReLU()

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        return self.hp["l1"] * z.abs().sum(dim=1).mean()


class SparseL2Autoencoder(Autoencoder):
    """Ridge penalty lambda * sum w^2 over all weight matrices (biases excluded)."""

    hyperparameters = (HyperParameter("l2", 1e-4, "weight of the L2 penalty on the weights"),)

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        return self.hp["l2"] * sum((w**2).sum() for w in weights)  # type: ignore[return-value]


class SparseKLAutoencoder(Autoencoder):
    """Sigmoid code whose mean activation per unit (over the batch) is pulled towards rho by a KL penalty."""

    hyperparameters = (
        HyperParameter("rho", 0.05, "target mean activation of each code unit", 1e-4, 1 - 1e-4),
        HyperParameter("kl_weight", 0.1, "weight of the KL sparsity penalty"),
    )

    def code_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        rho = self.hp["rho"]
        rho_hat = z.mean(dim=0).clamp(1e-6, 1 - 1e-6)  # (latent_dim,)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return self.hp["kl_weight"] * kl.sum()


class DenoisingAutoencoder(Autoencoder):
    """Trained to map corrupted inputs (Gaussian noise, then masking to zero) back to the clean ones."""

    hyperparameters = (
        HyperParameter("noise_std", 0.2, "std of the Gaussian noise added in the normalised space"),
        HyperParameter("mask_prob", 0.0, "probability of setting each input feature to zero", 0.0, 1.0),
    )
    # Removing noise needs a wider code and longer training than reconstructing clean inputs.
    default_hidden = (512,)
    default_latent_dim = 32
    default_steps = 12000

    def corrupt(self, x: Tensor) -> Tensor:
        noisy = x + self.hp["noise_std"] * torch.randn_like(x)
        keep = torch.rand_like(x) >= self.hp["mask_prob"]
        return noisy * keep


class ContractiveAutoencoder(Autoencoder):
    """Penalty lambda * ||J_f(x)||_F^2 on a sigmoid code, the encoder's Jacobian taken exactly by autograd."""

    hyperparameters = (
        HyperParameter("contractive_weight", 0.01, "weight of the squared Frobenius norm of the Jacobian"),
    )

    def code_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def loss(self, x: Tensor) -> Loss:
        # The penalty differentiates the code with respect to the input, so the input needs a gradient.
        return super().loss(x.detach().requires_grad_(True))

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        return self.hp["contractive_weight"] * jacobian_frobenius_sq(z, x, create_graph=True).mean()


def jacobian_frobenius_sq(z: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-sample ||dz/dx||_F^2, (batch,), exact: one backward pass per code unit.

    Rows of a batch do not interact in the encoder, so d(sum_b z[b, j])/dx[b] is row b's gradient of z[b, j].
    """
    total = x.new_zeros(x.shape[0])
    for j in range(z.shape[1]):
        (grad,) = torch.autograd.grad(z[:, j].sum(), x, create_graph=create_graph, retain_graph=True)
        total = total + (grad**2).sum(dim=1)  # (batch,)
    return total


class VariationalAutoencoder(Autoencoder):
    """Encoder gives mean and log-variance; z = mu + sigma * eps; loss = -ELBO with the KL weighted by beta.

    With a unit-variance Gaussian decoder the per-sample negative ELBO is
    0.5 * sum_i (x_i - x_hat_i)^2 + KL(q(z|x) || N(0, I)) (constant terms dropped), in the normalised space.
    """

    # beta < 1: with inputs scaled to [0, 1] a unit-variance likelihood would let the KL term swamp the data.
    hyperparameters = (HyperParameter("beta", 0.02, "weight of the KL term of the VAE loss"),)
    encoder_outputs = ("latent", "log_var")
    scores = ("mse", "neg_elbo")
    generative = True

    def code_width(self) -> int:
        return 2 * self.latent_dim

    def encode_outputs(self, x: Tensor) -> tuple[Tensor, ...]:
        mean, log_var = self.encoder(x).chunk(2, dim=1)  # each (batch, latent_dim)
        return mean, log_var

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_outputs(x)[0]

    @staticmethod
    def kl(mean: Tensor, log_var: Tensor) -> Tensor:
        """KL(N(mean, exp(log_var)) || N(0, I)) per sample, (batch,)."""
        return 0.5 * torch.sum(mean**2 + log_var.exp() - 1.0 - log_var, dim=1)

    def extra_scores(
        self, x: Tensor, codes: tuple[Tensor, ...], reconstruction: Tensor
    ) -> tuple[Tensor, ...]:
        mean, log_var = codes
        return (0.5 * torch.sum((reconstruction - x) ** 2, dim=1) + self.kl(mean, log_var),)

    def loss(self, x: Tensor) -> Loss:
        mean, log_var = self.encode_outputs(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if self.training else mean
        squared = (self.decode(z) - x) ** 2  # (batch, input_dim)
        total = torch.mean(0.5 * squared.sum(dim=1) + self.hp["beta"] * self.kl(mean, log_var))
        return Loss(total, squared.mean())


VARIANTS: dict[str, type[Autoencoder]] = {
    "plain": Autoencoder,
    "linear": LinearAutoencoder,
    "sparse_l1": SparseL1Autoencoder,
    "sparse_l2": SparseL2Autoencoder,
    "sparse_kl": SparseKLAutoencoder,
    "denoising": DenoisingAutoencoder,
    "contractive": ContractiveAutoencoder,
    "vae": VariationalAutoencoder,
}


def build_model(
    variant: str,
    input_dim: int,
    latent_dim: int | None,
    hidden: tuple[int, ...] | None,
    hparams: dict[str, float],
) -> Autoencoder:
    """Instantiate VARIANTS[variant]; None takes the variant's default latent size or hidden widths."""
    cls = VARIANTS[variant]
    return cls(
        input_dim,
        cls.default_latent_dim if latent_dim is None else latent_dim,
        cls.default_hidden if hidden is None else hidden,
        hparams,
    )
