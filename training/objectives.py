"""The autoencoder objectives: a base class, one subclass per objective overriding only what differs, and
OBJECTIVES.

An objective is what the model is trained for (its code, loss, penalty, corruption, scores); the network
it is trained on is a body from `training.bodies`, a separate choice: every objective works with every body,
and `build_model` composes the two. Every model works in the normalised space (normalisation lives outside,
in the exported graphs). Adding an objective means one subclass here and one entry in OBJECTIVES: the CLI
options, the tests and the export all iterate over OBJECTIVES and read what each class declares
(`hyperparameters`, `encoder_outputs`, `scores`). The CLI's `--variant` and the metadata's `variant` name an
objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from service.contract import ScoreName
from training.bodies import BODIES, Body, BodyPlan
from training.catalogue import VARIANT_OPTIONS, HyperParameter
from training.config import BodyOptions

__all__ = [
    "OBJECTIVES",
    "Autoencoder",
    "ContractiveAutoencoder",
    "DenoisingAutoencoder",
    "HyperParameter",
    "LinearAutoencoder",
    "Loss",
    "SparseKLAutoencoder",
    "SparseL1Autoencoder",
    "SparseL2Autoencoder",
    "VariationalAutoencoder",
    "build_model",
    "jacobian_frobenius_sq",
    "jacobian_projections_sq",
    "per_sample_sum",
]


class Loss(NamedTuple):
    total: Tensor
    """Scalar the optimiser minimises."""
    reconstruction: Tensor
    """Scalar mean squared error in the normalised space (comparable across objectives)."""


def per_sample_sum(values: Tensor) -> Tensor:
    """(batch, *shape) -> (batch,): the sum over each sample's values."""
    return values.flatten(1).sum(dim=1)


class Autoencoder(nn.Module):
    """Plain autoencoder; loss = mean squared reconstruction error in the normalised space."""

    hyperparameters: ClassVar[tuple[HyperParameter, ...]] = ()
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
        body: type[Body],
        input_shape: Sequence[int],
        latent_dim: int,
        hidden: tuple[int, ...],
        hparams: dict[str, float] | None = None,
        options: BodyOptions | None = None,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.hp = {p.name: p.default for p in self.hyperparameters} | (hparams or {})
        plan = BodyPlan(self.code_width(), self.activation, self.code_activation)
        self.body = body(self.input_shape, latent_dim, hidden, plan, options)

    @classmethod
    def default_hidden(cls, body: type[Body]) -> tuple[int, ...]:
        """Capacity when none is given, from the body's default."""
        return body.default_hidden

    def activation(self) -> nn.Module:
        return nn.ELU()

    def code_activation(self) -> nn.Module:
        """Applied to the code; the identity lets the code use its full range."""
        return nn.Identity()

    def code_width(self) -> int:
        """Width of the encoder's output (the VAE needs mean and log-variance)."""
        return self.latent_dim

    def weights(self) -> list[Tensor]:
        """Every weight tensor of the network (dense matrices, convolution kernels), no biases."""
        return [p for p in self.parameters() if p.ndim > 1]

    def encode(self, x: Tensor) -> Tensor:
        """The code used for reconstruction: (batch, *input_shape) -> (batch, latent_dim)."""
        return self.body.encoder(x)  # type: ignore[no-any-return]

    def encode_outputs(self, x: Tensor) -> tuple[Tensor, ...]:
        """What the encoder graph outputs, in the order of `encoder_outputs`."""
        return (self.encode(x),)

    def decode(self, z: Tensor) -> Tensor:
        """(batch, latent_dim) -> (batch, *input_shape)."""
        return self.body.decoder(z)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction: (batch, *input_shape) -> (batch, *input_shape)."""
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
        """Decode z ~ N(0, I): (n, *input_shape) in the normalised space; meaningful when `generative`."""
        return self.decode(torch.randn(n, self.latent_dim, generator=generator))

    def loss(self, x: Tensor) -> Loss:
        """The training loss of a clean batch (corrupted first when training)."""
        x_in = self.corrupt(x) if self.training else x
        z = self.encode(x_in)  # (batch, latent_dim)
        reconstruction = torch.mean((self.decode(z) - x) ** 2)
        return Loss(reconstruction + self.penalty(x_in, z), reconstruction)


class LinearAutoencoder(Autoencoder):
    """No activations anywhere, from any body: the optimum is PCA's subspace at the same k."""

    @classmethod
    def default_hidden(cls, body: type[Body]) -> tuple[int, ...]:
        # Stacked linear maps are one linear map: the defaults add no layers that could only slow it down.
        return ()

    def activation(self) -> nn.Module:
        return nn.Identity()


class SparseL1Autoencoder(Autoencoder):
    """Activity sparsity: lambda * sum_j |h_j| per sample on a ReLU code (so codes can be exactly zero)."""

    hyperparameters = VARIANT_OPTIONS["sparse_l1"]

    def code_activation(self) -> nn.Module:
        return nn.ReLU()

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        return self.hp["l1"] * z.abs().sum(dim=1).mean()


class SparseL2Autoencoder(Autoencoder):
    """Ridge penalty lambda * sum w^2 over all weight tensors (biases excluded)."""

    hyperparameters = VARIANT_OPTIONS["sparse_l2"]

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        return self.hp["l2"] * sum((w**2).sum() for w in self.weights())  # type: ignore[return-value]


class SparseKLAutoencoder(Autoencoder):
    """Sigmoid code whose mean activation per unit (over the batch) is pulled towards rho by a KL penalty."""

    hyperparameters = VARIANT_OPTIONS["sparse_kl"]

    def code_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        rho = self.hp["rho"]
        rho_hat = z.mean(dim=0).clamp(1e-6, 1 - 1e-6)  # (latent_dim,)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        return self.hp["kl_weight"] * kl.sum()


class DenoisingAutoencoder(Autoencoder):
    """Trained to map corrupted inputs (Gaussian noise, then masking to zero) back to the clean ones.

    With `noise_std_max` above `noise_std`, each sample of a batch gets its own noise std, drawn uniformly
    between the two: one model then learns to remove every level in that range, instead of one level well and
    the others badly (a model trained at 0.2 leaves lighter noise blurred and heavier noise in place).
    """

    hyperparameters = VARIANT_OPTIONS["denoising"]
    # Removing noise needs a wider network and code, and longer training, than reconstructing clean inputs.
    default_latent_dim = 32
    default_steps = 12000

    @classmethod
    def default_hidden(cls, body: type[Body]) -> tuple[int, ...]:
        return tuple(4 * width for width in body.default_hidden)

    def noise_std(self, x: Tensor) -> Tensor:
        """The noise std of each sample, (batch, 1, ...) to broadcast over it."""
        low, high = self.hp["noise_std"], max(self.hp["noise_std_max"], self.hp["noise_std"])
        spread = torch.rand(x.shape[0], *[1] * (x.ndim - 1), dtype=x.dtype) if high > low else x.new_zeros(())
        return low + (high - low) * spread

    def corrupt(self, x: Tensor) -> Tensor:
        noisy = x + self.noise_std(x) * torch.randn_like(x)
        keep = torch.rand_like(x) >= self.hp["mask_prob"]
        return noisy * keep


class ContractiveAutoencoder(Autoencoder):
    """Penalty lambda * ||J_f(x)||_F^2 on a sigmoid code, the encoder's Jacobian taken by autograd: exactly
    (one backward pass per code unit), or estimated from random projections where that is too slow.

    For v ~ N(0, I) over the code, E ||v^T J||^2 = ||J||_F^2, so the mean over k probes is an unbiased
    estimate at k backward passes instead of latent_dim; through a convolutional encoder each pass costs
    about a plain training step.
    """

    hyperparameters = VARIANT_OPTIONS["contractive"]

    def code_activation(self) -> nn.Module:
        return nn.Sigmoid()

    def loss(self, x: Tensor) -> Loss:
        # The penalty differentiates the code with respect to the input, so the input needs a gradient.
        return super().loss(x.detach().requires_grad_(True))

    def penalty(self, x: Tensor, z: Tensor) -> Tensor:
        probes = int(self.hp["jacobian_probes"])
        if probes and self.training:
            norms = jacobian_projections_sq(z, x, probes)
        else:
            norms = jacobian_frobenius_sq(z, x, create_graph=True)
        return self.hp["contractive_weight"] * norms.mean()


def jacobian_frobenius_sq(z: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """Per-sample ||dz/dx||_F^2, (batch,), exact for any body: one backward pass per code unit.

    Samples of a batch do not interact in any body, so d(sum_b z[b, j])/dx[b] is sample b's gradient of
    z[b, j].
    """
    total = x.new_zeros(x.shape[0])
    for j in range(z.shape[1]):
        (grad,) = torch.autograd.grad(z[:, j].sum(), x, create_graph=create_graph, retain_graph=True)
        total = total + per_sample_sum(grad**2)  # (batch,)
    return total


def jacobian_projections_sq(z: Tensor, x: Tensor, probes: int) -> Tensor:
    """Per-sample estimate of ||dz/dx||_F^2, (batch,): the mean of ||v^T dz/dx||^2 over `probes` draws of
    v ~ N(0, I), differentiable (for a training penalty)."""
    total = x.new_zeros(x.shape[0])
    for _ in range(probes):
        v = torch.randn_like(z)  # (batch, code width)
        (grad,) = torch.autograd.grad((z * v).sum(), x, create_graph=True, retain_graph=True)
        total = total + per_sample_sum(grad**2)  # (batch,)
    return total / probes


class VariationalAutoencoder(Autoencoder):
    """Encoder gives mean and log-variance; z = mu + sigma * eps; loss = -ELBO with the KL weighted by beta.

    With a unit-variance Gaussian decoder the per-sample negative ELBO is
    0.5 * sum_i (x_i - x_hat_i)^2 + KL(q(z|x) || N(0, I)) (constant terms dropped), in the normalised space.
    """

    # beta < 1: with inputs scaled to [0, 1] a unit-variance likelihood would let the KL term swamp the data.
    hyperparameters = VARIANT_OPTIONS["vae"]
    encoder_outputs = ("latent", "log_var")
    scores = ("mse", "neg_elbo")
    generative = True

    def code_width(self) -> int:
        return 2 * self.latent_dim

    def encode_outputs(self, x: Tensor) -> tuple[Tensor, ...]:
        mean, log_var = self.body.encoder(x).chunk(2, dim=1)  # each (batch, latent_dim)
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
        return (0.5 * per_sample_sum((reconstruction - x) ** 2) + self.kl(mean, log_var),)

    def loss(self, x: Tensor) -> Loss:
        mean, log_var = self.encode_outputs(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var) if self.training else mean
        squared = (self.decode(z) - x) ** 2  # (batch, *input_shape)
        total = torch.mean(0.5 * per_sample_sum(squared) + self.hp["beta"] * self.kl(mean, log_var))
        return Loss(total, squared.mean())


OBJECTIVES: dict[str, type[Autoencoder]] = {
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
    objective: str,
    body: str,
    input_shape: Sequence[int],
    latent_dim: int | None,
    hidden: tuple[int, ...] | None,
    hparams: dict[str, float],
    options: BodyOptions | None = None,
) -> Autoencoder:
    """OBJECTIVES[objective] on BODIES[body] for samples of `input_shape`, laid out by `options`; None takes
    the objective's default latent size, or its default capacity for that body (`training.defaults.resolve`
    fills in the defaults that depend on the data and the body first)."""
    cls, body_cls = OBJECTIVES[objective], BODIES[body]
    return cls(
        body_cls,
        input_shape,
        cls.default_latent_dim if latent_dim is None else latent_dim,
        cls.default_hidden(body_cls) if hidden is None else hidden,
        hparams,
        options,
    )
