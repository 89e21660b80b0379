from __future__ import annotations

import math
from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from service.contract import InputKind
from training.bodies import BODIES, Conv1dBody, Conv2dBody, body_for
from training.config import BodyOptions
from training.data import DataError, Normaliser
from training.export import export_graphs
from training.objectives import OBJECTIVES, build_model

KINDS: tuple[InputKind, ...] = ("rows", "series", "image")
GRID = BodyOptions(code="grid", stage_convs=2)


def test_every_input_kind_has_exactly_one_default_body() -> None:
    for kind in KINDS:
        owners = [key for key, body in BODIES.items() if kind in body.default_for]
        assert len(owners) == 1, (kind, owners)
        assert kind in BODIES[owners[0]].reads
    assert (body_for("rows"), body_for("image"), body_for("series")) == ("mlp", "conv2d", "conv1d")


@pytest.mark.parametrize("body", sorted(BODIES))
def test_body_for_refuses_data_the_body_cannot_read(body: str) -> None:
    for kind in KINDS:
        if kind in BODIES[body].reads:
            assert body_for(kind, body) == body
        else:
            with pytest.raises(DataError, match=f"not {kind} data; expected one of"):
                body_for(kind, body)
    with pytest.raises(DataError, match="unknown architecture 'lstm'"):
        body_for("rows", "lstm")


@pytest.mark.parametrize("window", [2, 3, 5, 7, 13, 31, 64])
@pytest.mark.parametrize("stages", [(), (4,), (4, 8, 8)])
def test_conv1d_keeps_any_window_length(window: int, stages: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model("plain", "conv1d", (window, 3), 5, stages, {})
    x = torch.randn(4, window, 3)
    assert model.encode(x).shape == (4, 5)
    assert model(x).shape == (4, window, 3)
    # Three halvings of a window of 2 leave one step per stage: still a valid network.
    assert isinstance(model.body, Conv1dBody)


@pytest.mark.parametrize(("height", "width"), [(4, 4), (5, 7), (7, 7), (8, 8), (13, 9), (28, 28)])
@pytest.mark.parametrize("channels", [1, 3])
def test_conv2d_keeps_any_image_size(height: int, width: int, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model("vae", "conv2d", (channels, height, width), 4, (4, 8, 8), {})
    x = torch.randn(3, channels, height, width)
    mean, log_var = model.encode_outputs(x)
    assert mean.shape == log_var.shape == (3, 4)
    assert model(x).shape == (3, channels, height, width)
    assert model.sample(2).shape == (2, channels, height, width)
    assert isinstance(model.body, Conv2dBody)


@pytest.mark.parametrize(
    ("body", "shape", "sample_axis", "stage_axis"),
    [("conv1d", (16, 3), 1, 2), ("conv2d", (2, 16, 12), 2, 2), ("conv2d", (2, 16, 12), 3, 3)],
)
def test_conv_first_stage_convolves_along_time_or_space(
    body: str, shape: tuple[int, ...], sample_axis: int, stage_axis: int
) -> None:
    # Shifting the input two steps along a convolved axis shifts the stride-2 stage's output by one: the
    # axis the body convolves is the series' time (not its channels) or the image's height and width.
    torch.manual_seed(0)
    model = build_model("plain", body, shape, 3, (4,), {})
    stage = cast(nn.Sequential, model.body.encoder)[:3]  # layout, first convolution, activation
    x = torch.randn(2, *shape)
    with torch.no_grad():
        y, shifted = stage(x), stage(torch.roll(x, 2, dims=sample_axis))
    inner = y.shape[stage_axis] - 2
    torch.testing.assert_close(shifted.narrow(stage_axis, 2, inner), y.narrow(stage_axis, 1, inner))


@pytest.mark.parametrize("body", ["conv1d", "conv2d"])
def test_conv_bodies_refuse_samples_of_the_wrong_rank(body: str) -> None:
    with pytest.raises(DataError, match="reads samples of"):
        build_model("plain", body, (12,), 3, None, {})


@pytest.mark.parametrize(
    ("body", "shape"), [("conv1d", (31, 2)), ("conv1d", (2, 1)), ("conv2d", (3, 7, 9)), ("conv2d", (1, 5, 4))]
)
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("layout", ["dense", "grid"])
def test_conv_bodies_export_odd_sizes_with_a_free_batch_axis(
    layout: str, objective: str, body: str, shape: tuple[int, ...], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(30, *shape)) * 50 + 100).astype(np.float32)
    normaliser = Normaliser.fit(x, "standard", channel_axis=BODIES[body].channel_axis)
    options = GRID if layout == "grid" else BodyOptions()
    # A grid code of one channel at the last stage's grid; a dense one of 3.
    grid = cast(type[Conv1dBody], BODIES[body]).stage_sizes(shape, (4, 4), options)[-1]
    latent = math.prod(grid) if layout == "grid" else 3
    model = build_model(objective, body, shape, latent, (4, 4), {}, options).eval()
    graphs, parity = export_graphs(model, normaliser, tmp_path, x[:20])
    assert parity <= 1e-5
    session = ort.InferenceSession(str(tmp_path / graphs["model"].path), providers=["CPUExecutionProvider"])
    encoder = ort.InferenceSession(str(tmp_path / graphs["encoder"].path), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 10):
        outputs = dict(
            zip(graphs["model"].outputs, session.run(None, {"x": x[20 : 20 + batch]}), strict=True)
        )
        assert outputs["reconstruction"].shape == outputs["feature_errors"].shape == (batch, *shape)
        assert outputs["error"].shape == (batch,)
        assert encoder.run(None, {"x": x[:batch]})[0].shape == (batch, latent)


@pytest.mark.parametrize(
    ("body", "shape", "corner"),
    [("conv1d", (12, 2), (slice(None), 0, 0)), ("conv2d", (1, 12, 12), (..., 0, 0))],
)
def test_grid_code_keeps_where_each_part_of_the_sample_is(
    body: str, shape: tuple[int, ...], corner: tuple[object, ...]
) -> None:
    # (4, 4) stages with a grid code: one halving (the last stage keeps its size), 2 code channels at each of
    # the 6 (x 6) cells. Changing the first step / pixel moves only the code cells within its reach: after
    # the halving it reaches cells 0 and 1, and the last stage's two convolutions two cells further.
    torch.manual_seed(0)
    model = build_model("plain", body, shape, 2 * (6 if body == "conv1d" else 36), (4, 4), {}, GRID).eval()
    x = torch.randn(1, *shape)
    changed = x.clone()
    changed[corner] += 5.0
    with torch.no_grad():
        moved = (
            (model.encode(changed) - model.encode(x)).abs().reshape(2, *([6] if body == "conv1d" else [6, 6]))
        )
    assert model(x).shape == x.shape
    near = moved[(slice(None),) + (slice(0, 4),) * (moved.ndim - 1)]
    assert float(near.max()) > 1e-3
    far = moved[(slice(None),) + (slice(4, None),) * (moved.ndim - 1)]
    assert float(far.max()) == 0.0


@pytest.mark.parametrize("stage_convs", [1, 2, 3])
@pytest.mark.parametrize("code", ["dense", "grid"])
def test_conv_stage_convs_and_code_lay_out_the_encoder(stage_convs: int, code: str) -> None:
    options = BodyOptions(code="grid" if code == "grid" else "dense", stage_convs=stage_convs)
    model = build_model("plain", "conv2d", (1, 8, 8), 16 if code == "grid" else 5, (3, 4), {}, options)
    convs = [m for m in model.body.encoder.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in model.body.encoder.modules() if isinstance(m, nn.Linear)]
    # Two stages of stage_convs convolutions each, and the code: a 1x1 convolution or a dense layer.
    assert len(convs) == 2 * stage_convs + (code == "grid")
    assert len(dense) == (code == "dense")
    strides = [c.stride[0] for c in convs]
    assert strides.count(2) == (1 if code == "grid" else 2)
    x = torch.randn(2, 1, 8, 8)
    assert model.encode(x).shape == (2, 16 if code == "grid" else 5)
    assert model(x).shape == (2, 1, 8, 8)


def test_grid_code_refuses_a_width_that_is_not_whole_channels() -> None:
    with pytest.raises(
        DataError,
        match=r"grid code at the last stage's 4x4 grid takes a multiple of 16 values, "
        r"got a code of 20; expected 16 or 32",
    ):
        build_model("plain", "conv2d", (1, 8, 8), 20, (3, 4), {}, GRID)
    with pytest.raises(
        DataError, match=r"takes a multiple of 16 values, got a code of 5; expected 16 \(or --code dense"
    ):
        build_model("plain", "conv2d", (1, 8, 8), 5, (3, 4), {}, GRID)


@pytest.mark.parametrize("options", [GRID, BodyOptions(stage_convs=2)])
def test_mlp_refuses_convolution_options(options: BodyOptions) -> None:
    with pytest.raises(
        DataError,
        match="architecture 'mlp' has no convolution stages: --code grid and --stage-convs are for conv1d "
        "and conv2d",
    ):
        build_model("plain", "mlp", (12,), 3, (4,), {}, options)


def test_dense_code_stages_halve_even_where_the_size_is_already_one() -> None:
    # A window of 2 is 1 step after the first stage; the later stages still stride 2 (and mirror with a
    # transposed convolution), as a dense body always has, so such models keep their layout and weights.
    model = build_model("plain", "conv1d", (2, 3), 5, (4, 8, 8), {})
    convs = [m for m in model.body.encoder.modules() if isinstance(m, nn.Conv1d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2]
    assert sum(isinstance(m, nn.ConvTranspose1d) for m in model.body.decoder.modules()) == 3
    grid = build_model("plain", "conv1d", (2, 3), 1, (4, 8, 8), {}, GRID)
    strided = [m.stride[0] for m in grid.body.encoder.modules() if isinstance(m, nn.Conv1d)]
    assert strided.count(2) == 2  # the grid code's last stage keeps its size
