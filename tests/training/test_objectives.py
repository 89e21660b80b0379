from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

from service.contract import InputKind
from tests.training.conftest import CASE_IDS, CASES, Samples, body_samples, tiny_hidden
from training.bodies import BODIES
from training.data import Normaliser
from training.objectives import OBJECTIVES, build_model

# One small sample shape per input kind, odd sizes included.
SHAPES: dict[InputKind, tuple[int, ...]] = {"rows": (10,), "series": (7, 2), "image": (2, 5, 6)}


def _input_shape(body: str, kind: InputKind) -> tuple[int, ...]:
    return BODIES[body].input_shape_for(SHAPES[kind], kind)


@pytest.mark.parametrize("variant", sorted(OBJECTIVES))
def test_variant_training_steps_lower_the_loss(variant: str, digits: npt.NDArray[np.float32]) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(Normaliser.fit(digits, "minmax", shared=True).transform(digits))  # (200, 64)
    model = build_model(variant, "mlp", (64,), 8, (32,), {})
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


@pytest.mark.parametrize(("objective", "body", "kind"), CASES, ids=CASE_IDS)
def test_objective_on_body_training_steps_lower_the_loss(
    objective: str, body: str, kind: InputKind, samples: dict[InputKind, Samples]
) -> None:
    torch.manual_seed(0)
    shaped, normaliser = body_samples(samples, body, kind)
    x = torch.from_numpy(normaliser.transform(shaped[:64]))  # (64, *input_shape)
    model = build_model(objective, body, x.shape[1:], 8, tiny_hidden(body), {})
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


@pytest.mark.parametrize(("variant", "body", "kind"), CASES, ids=CASE_IDS)
def test_variant_declares_consistent_outputs(variant: str, body: str, kind: InputKind) -> None:
    cls = OBJECTIVES[variant]
    shape = _input_shape(body, kind)
    model = build_model(variant, body, shape, 3, None, {})
    assert model.hp == {p.name: p.default for p in cls.hyperparameters}
    assert cls.scores[0] == "mse"
    codes = model.encode_outputs(torch.zeros(4, *shape))
    assert len(codes) == len(cls.encoder_outputs)
    assert all(c.shape == (4, 3) for c in codes)
    reconstruction = model.decode(codes[0])
    assert reconstruction.shape == (4, *shape)
    extra = model.extra_scores(torch.zeros(4, *shape), codes, reconstruction)
    assert [e.shape for e in extra] == [(4,)] * (len(cls.scores) - 1)
    assert model.sample(5).shape == (5, *shape)


@pytest.mark.parametrize("body", sorted(BODIES))
def test_contractive_penalty_equals_independent_jacobian_norm(body: str) -> None:
    torch.manual_seed(1)
    weight = 0.3
    shape = _input_shape(body, BODIES[body].reads[0])
    model = build_model("contractive", body, shape, 3, tiny_hidden(body), {"contractive_weight": weight})
    x = torch.randn(4, *shape, requires_grad=True)
    penalty = model.penalty(x, model.encode(x))
    jacobian = torch.autograd.functional.jacobian  # (1, latent, 1, *input_shape) per sample
    norms = [jacobian(model.encode, row[None]).pow(2).sum() for row in x.detach()]  # type: ignore[no-untyped-call]
    expected = torch.stack(norms).mean()
    assert expected.item() > 0
    assert penalty.item() == pytest.approx(weight * expected.item(), rel=1e-5)


def test_contractive_single_sigmoid_layer_matches_closed_form() -> None:
    torch.manual_seed(2)
    model = build_model("contractive", "mlp", (5,), 4, (), {"contractive_weight": 1.0})
    x = torch.randn(3, 5, requires_grad=True)
    h = model.encode(x)  # (3, 4)
    w = cast(nn.Linear, cast(nn.Sequential, model.body.encoder)[0]).weight  # (4, 5)
    closed = ((h * (1 - h)) ** 2 @ (w**2).sum(dim=1)).mean()
    assert model.penalty(x, h).item() == pytest.approx(closed.item(), rel=1e-5)


@pytest.mark.parametrize("body", sorted(BODIES))
def test_vae_neg_elbo_is_half_squared_error_plus_kl(body: str) -> None:
    torch.manual_seed(3)
    shape = _input_shape(body, BODIES[body].reads[0])
    model = build_model("vae", body, shape, 2, tiny_hidden(body), {})
    x = torch.randn(5, *shape)
    mean, log_var = model.encode_outputs(x)
    reconstruction = model.decode(mean)
    (neg_elbo,) = model.extra_scores(x, (mean, log_var), reconstruction)
    var = log_var.exp()
    kl = 0.5 * (mean**2 + var - 1 - torch.log(var)).sum(dim=1)
    expected = 0.5 * ((reconstruction - x) ** 2).reshape(5, -1).sum(dim=1) + kl
    torch.testing.assert_close(neg_elbo, expected)


@pytest.mark.parametrize(("body", "kind"), [(b, k) for b in BODIES for k in BODIES[b].reads])
@pytest.mark.parametrize("objective", ["linear", "plain"])
def test_linear_objective_gets_no_activation_from_any_body(
    objective: str, body: str, kind: InputKind
) -> None:
    torch.manual_seed(4)
    shape = _input_shape(body, kind)
    model = build_model(objective, body, shape, 3, tiny_hidden(body), {}).eval()
    a, b = torch.randn(2, 6, *shape).unbind(0)
    origin = model(torch.zeros(1, *shape))

    def centred(x: torch.Tensor) -> torch.Tensor:
        return model(x) - origin  # a linear map once the biases' constant is taken off

    with torch.no_grad():
        combined, separate = centred(a + 2 * b), centred(a) + 2 * centred(b)
    linear = torch.allclose(combined, separate, rtol=1e-4, atol=1e-5)
    # The plain objective's ELUs make the same body nonlinear: the check can tell the two apart.
    assert linear == (objective == "linear")


@pytest.mark.parametrize("body", sorted(BODIES))
def test_objective_capacity_defaults_follow_the_body(body: str) -> None:
    cls = BODIES[body]
    assert (
        build_model("plain", body, _input_shape(body, cls.reads[0]), 3, None, {}).hidden == cls.default_hidden
    )
    assert build_model("linear", body, _input_shape(body, cls.reads[0]), 3, None, {}).hidden == ()
    denoising = build_model("denoising", body, _input_shape(body, cls.reads[0]), None, None, {})
    assert denoising.hidden == tuple(4 * w for w in cls.default_hidden) and denoising.latent_dim == 32


@pytest.mark.parametrize("body", sorted(BODIES))
def test_sparse_l2_penalises_every_weight_tensor_and_no_bias(body: str) -> None:
    shape = _input_shape(body, BODIES[body].reads[0])
    model = build_model("sparse_l2", body, shape, 3, tiny_hidden(body), {"l2": 0.5})
    named = dict(model.named_parameters())
    weights = [p for name, p in named.items() if name.endswith("weight")]
    # Dense matrices and convolution kernels alike, every parameter but the biases.
    assert len(weights) == len(named) - sum(name.endswith("bias") for name in named) > 2
    assert {id(w) for w in model.weights()} == {id(w) for w in weights}
    expected = 0.5 * sum(float((w.detach() ** 2).sum()) for w in weights)
    x = torch.zeros(2, *shape)
    assert model.penalty(x, model.encode(x)).item() == pytest.approx(expected, rel=1e-6)
