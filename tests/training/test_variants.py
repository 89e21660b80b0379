from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

from training.data import Normaliser
from training.variants import VARIANTS, ContractiveAutoencoder, VariationalAutoencoder, build_model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_training_steps_lower_the_loss(variant: str, digits: npt.NDArray[np.float32]) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(Normaliser.fit(digits, "minmax", shared=True).transform(digits))  # (200, 64)
    model = build_model(variant, 64, 8, (32,), {})
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    before = float(model.loss(x).total.detach())
    for _ in range(30):
        model.train()
        loss = model.loss(x)
        optimiser.zero_grad()
        loss.total.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    model.eval()
    after = float(model.loss(x).total.detach())
    assert after < 0.8 * before


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_declares_consistent_outputs(variant: str) -> None:
    cls = VARIANTS[variant]
    model = build_model(variant, 10, 3, None, {})
    assert model.hp == {p.name: p.default for p in cls.hyperparameters}
    assert cls.scores[0] == "mse"
    codes = model.encode_outputs(torch.zeros(4, 10))
    assert len(codes) == len(cls.encoder_outputs)
    assert all(c.shape == (4, 3) for c in codes)
    extra = model.extra_scores(torch.zeros(4, 10), codes, model.decode(codes[0]))
    assert [e.shape for e in extra] == [(4,)] * (len(cls.scores) - 1)


def test_contractive_penalty_equals_independent_jacobian_norm() -> None:
    torch.manual_seed(1)
    weight = 0.3
    model = ContractiveAutoencoder(6, 3, (5,), {"contractive_weight": weight})
    x = torch.randn(4, 6, requires_grad=True)
    penalty = model.penalty(x, model.encode(x))
    jacobian = torch.autograd.functional.jacobian  # (1, latent, 1, input) per row
    norms = [jacobian(model.encode, row[None]).pow(2).sum() for row in x.detach()]  # type: ignore[no-untyped-call]
    expected = torch.stack(norms).mean()
    assert penalty.item() == pytest.approx(weight * expected.item(), rel=1e-5)


def test_contractive_single_sigmoid_layer_matches_closed_form() -> None:
    torch.manual_seed(2)
    model = ContractiveAutoencoder(5, 4, (), {"contractive_weight": 1.0})
    x = torch.randn(3, 5, requires_grad=True)
    h = model.encode(x)  # (3, 4)
    w = cast(nn.Linear, model.encoder[0]).weight  # (4, 5)
    closed = ((h * (1 - h)) ** 2 @ (w**2).sum(dim=1)).mean()
    assert model.penalty(x, h).item() == pytest.approx(closed.item(), rel=1e-5)


def test_vae_neg_elbo_is_half_squared_error_plus_kl() -> None:
    torch.manual_seed(3)
    model = VariationalAutoencoder(4, 2, (3,), {})
    x = torch.randn(5, 4)
    mean, log_var = model.encode_outputs(x)
    reconstruction = model.decode(mean)
    (neg_elbo,) = model.extra_scores(x, (mean, log_var), reconstruction)
    var = log_var.exp()
    kl = 0.5 * (mean**2 + var - 1 - torch.log(var)).sum(dim=1)
    expected = 0.5 * ((reconstruction - x) ** 2).sum(dim=1) + kl
    torch.testing.assert_close(neg_elbo, expected)
