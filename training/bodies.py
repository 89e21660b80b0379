"""Network bodies: what an autoencoder is made of, one class per body, and BODIES.

The objective (`training.objectives`) decides what the code means and how the model is trained; the body is
the network between a sample and its code:

- encoder: (batch, *input_shape) -> (batch, code_width), the objective's code activation applied last;
- decoder: (batch, latent_dim) -> (batch, *input_shape), in the normalised space, nothing applied last.

A body builds its layers from what the objective asks of it (`BodyPlan`): the activation between layers (the
identity for `linear`, so that no body adds a nonlinearity), the code width (twice the latent size for the
VAE's mean and log-variance) and the code activation. Adding a body is one subclass here and one entry in
BODIES: the CLI, the export and the tests iterate over BODIES and read what each class declares.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from service.contract import InputKind
from training.config import BodyOptions
from training.data import DataError

__all__ = ["BODIES", "Body", "BodyPlan", "Conv1dBody", "Conv2dBody", "MLPBody", "body_for"]


@dataclass(frozen=True)
class BodyPlan:
    """What an objective asks of a body."""

    code_width: int
    """Width of the encoder's output."""
    activation: Callable[[], nn.Module]
    """Makes the activation between layers."""
    code_activation: Callable[[], nn.Module]
    """Makes the activation applied to the code."""


class Reshape(nn.Module):
    """(batch, prod(shape)) -> (batch, *shape); -1 keeps the batch axis free in the exported graph."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(-1, *self.shape)


class SwapTimeAndChannels(nn.Module):
    """(batch, window, channels) <-> (batch, channels, window): series are channels-last, convolutions
    want channels first."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


def dense(widths: Sequence[int], plan: BodyPlan, last: nn.Module) -> list[nn.Module]:
    """Linear layers through `widths`, the plan's activation between them and `last` after the last one."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(fan_in, fan_out))
        layers.append(plan.activation() if i < len(widths) - 2 else last)
    return layers


class Body(nn.Module):
    """A network body: `encoder` and `decoder` modules for samples of one shape."""

    reads: ClassVar[tuple[InputKind, ...]]
    """The input kinds it reads, the one it is made for first."""
    default_for: ClassVar[tuple[InputKind, ...]] = ()
    """The input kinds it is chosen for when no architecture is given."""
    default_hidden: ClassVar[tuple[int, ...]]
    """Capacity when none is given: hidden widths of an MLP, channels per stage of a convolutional body."""
    hidden_help: ClassVar[str]
    channel_axis: ClassVar[int] = -1
    """The sample axis that holds channels (features for rows): normalisation is per entry of that axis."""
    takes_options: ClassVar[bool] = False
    """Whether it lays itself out by `BodyOptions` (a body that does not takes only the defaults)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int,
        hidden: tuple[int, ...],
        plan: BodyPlan,
        options: BodyOptions | None = None,
    ) -> None:
        super().__init__()
        options = options or BodyOptions()
        if not self.takes_options and options != BodyOptions():
            name = next((key for key, body in BODIES.items() if body is type(self)), type(self).__name__)
            takers = [key for key, body in BODIES.items() if body.takes_options]
            raise DataError(
                f"architecture {name!r} has no convolution stages: --code grid and --stage-convs are for "
                f"{' and '.join(takers)}"
            )
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.options = options
        self.encoder: nn.Module
        self.decoder: nn.Module

    @classmethod
    def input_shape_for(cls, sample_shape: Sequence[int], kind: InputKind) -> tuple[int, ...]:
        """The shape one sample of `kind` has in this body's graphs."""
        return tuple(sample_shape)


class MLPBody(Body):
    """Fully connected layers over the flattened sample."""

    reads = ("rows", "image", "series")
    default_for = ("rows",)
    default_hidden = (128,)
    hidden_help = "hidden layer widths"

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int,
        hidden: tuple[int, ...],
        plan: BodyPlan,
        options: BodyOptions | None = None,
    ) -> None:
        super().__init__(input_shape, latent_dim, hidden, plan, options)
        flat = math.prod(self.input_shape)
        # A series window keeps its axes in the graphs: flattened on the way in, shaped back on the way out.
        fold = len(self.input_shape) > 1
        self.encoder = nn.Sequential(
            *([nn.Flatten(1)] if fold else []),
            *dense([flat, *hidden, plan.code_width], plan, plan.code_activation()),
        )  # (batch, *input_shape) -> (batch, code_width)
        self.decoder = nn.Sequential(
            *dense([latent_dim, *reversed(hidden), flat], plan, nn.Identity()),
            *([Reshape(self.input_shape)] if fold else []),
        )  # (batch, latent_dim) -> (batch, *input_shape)

    @classmethod
    def input_shape_for(cls, sample_shape: Sequence[int], kind: InputKind) -> tuple[int, ...]:
        # An image is a row of pixels to an MLP, as the shipped digits models read it; a series window keeps
        # its (window, channels) axes, the layout the contract fixes for every series model.
        return (math.prod(sample_shape),) if kind == "image" else tuple(sample_shape)


class ConvBody(Body):
    """Strided convolutions down to a code, transposed convolutions back up, for any size of each axis.

    Each stage halves every spatial axis (kernel 3, stride 2, padding 1: n -> ceil(n / 2)); its mirror gives
    back exactly n (output_padding 1 where n is even), so odd and prime sizes need no cropping or padding.
    With `stage_convs` above 1, a stage first convolves at its input's size (kernel 3, stride 1) and its
    mirror at its output's, so the sample's own size is convolved at on both ends. The code (`code`) is a
    dense layer over the last stage, or a 1x1 convolution at its grid (a grid code's last stage keeps its
    input's size: halving there would only coarsen the grid). The spatial sizes are fixed by the sample
    shape; only the batch axis is free. With no stages, the body is one dense layer (or one 1x1 convolution)
    each way.
    """

    conv: ClassVar[Callable[..., nn.Module]]
    """The convolution class for the body's number of spatial axes, and its transpose."""
    transposed: ClassVar[Callable[..., nn.Module]]
    spatial_axes: ClassVar[int]
    default_hidden = (16, 32)
    hidden_help = "channels of each convolution stage"
    takes_options = True

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int,
        hidden: tuple[int, ...],
        plan: BodyPlan,
        options: BodyOptions | None = None,
    ) -> None:
        super().__init__(input_shape, latent_dim, hidden, plan, options)
        options = self.options
        if len(self.input_shape) != self.spatial_axes + 1:
            raise DataError(
                f"{type(self).__name__} reads samples of {self.spatial_axes + 1} axes, "
                f"got shape {self.input_shape}"
            )
        channels, _ = self.layout(self.input_shape)
        sizes = self.stage_sizes(self.input_shape, hidden, options)
        widths = [channels, *hidden]
        grid, last = sizes[-1], widths[-1]
        down: list[nn.Module] = [self.to_channels_first()]
        for stage, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            for _ in range(options.stage_convs - 1):
                down += [self.conv(c_in, c_out, 3, padding=1), plan.activation()]
                c_in = c_out
            stride = 1 if self.keeps_size(stage, hidden, options) else 2
            down += [self.conv(c_in, c_out, 3, stride=stride, padding=1), plan.activation()]
        up: list[nn.Module]
        if options.code == "grid":
            cells = math.prod(grid)
            per_cell = self.grid_channels(latent_dim, grid)
            # (batch, code channels, *grid) flattened channel by channel: a VAE's mean is the first half.
            down += [self.conv(last, plan.code_width // cells, 1), nn.Flatten(1), plan.code_activation()]
            up = [Reshape((per_cell, *grid)), self.conv(per_cell, last, 1)]
        else:
            down += [
                nn.Flatten(1),
                nn.Linear(last * math.prod(grid), plan.code_width),
                plan.code_activation(),
            ]
            up = [nn.Linear(latent_dim, last * math.prod(grid))]
        self.encoder = nn.Sequential(*down)  # (batch, *input_shape) -> (batch, code_width)
        if options.code != "grid":
            up += [*([plan.activation()] if hidden else []), Reshape((last, *grid))]
        elif hidden:
            up.append(plan.activation())
        # (batch, channels of the last stage, *its sizes) from here
        for stage in reversed(range(len(hidden))):
            c_out, c_in = widths[stage + 1], widths[stage]
            back = c_in if options.stage_convs == 1 else c_out
            if self.keeps_size(stage, hidden, options):
                up.append(self.conv(c_out, back, 3, padding=1))
            else:
                # Back to exactly n from ceil(n / 2): an even n needs the one step more output_padding adds.
                extra = tuple(1 - n % 2 for n in sizes[stage])
                up.append(self.transposed(c_out, back, 3, stride=2, padding=1, output_padding=extra))
            for i in range(options.stage_convs - 1):
                up += [
                    plan.activation(),
                    self.conv(c_out, c_in if i == options.stage_convs - 2 else c_out, 3, padding=1),
                ]
            up += [plan.activation()] if stage > 0 else []
        up.append(self.from_channels_first())
        self.decoder = nn.Sequential(*up)  # (batch, latent_dim) -> (batch, *input_shape)

    @classmethod
    def grid_channels(cls, latent_dim: int, grid: tuple[int, ...]) -> int:
        """Code channels at each cell of `grid` for a grid code of `latent_dim` values; DataError when it is
        not a whole number."""
        cells = math.prod(grid)
        if latent_dim % cells:
            below = latent_dim // cells * cells
            raise DataError(
                f"a grid code at the last stage's {'x'.join(map(str, grid))} grid takes a multiple of "
                f"{cells} values, got a code of {latent_dim}; expected "
                + (f"{below} or {below + cells}" if below else f"{cells}")
                + " (or --code dense for a code of any width)"
            )
        return latent_dim // cells

    @classmethod
    def stage_sizes(
        cls, input_shape: Sequence[int], hidden: tuple[int, ...], options: BodyOptions
    ) -> list[tuple[int, ...]]:
        """The spatial sizes before each stage of `hidden`, and after the last. Each stage halves them but a
        grid code's last stage: halving there would only coarsen the grid the code is read at."""
        sizes = [cls.layout(tuple(input_shape))[1]]
        for stage in range(len(hidden)):
            keeps = cls.keeps_size(stage, hidden, options)
            sizes.append(sizes[-1] if keeps else tuple((n + 1) // 2 for n in sizes[-1]))
        return sizes

    @staticmethod
    def keeps_size(stage: int, hidden: tuple[int, ...], options: BodyOptions) -> bool:
        """Whether `stage` of `hidden` keeps its input's size: a grid code's last stage does."""
        return options.code == "grid" and stage == len(hidden) - 1

    @staticmethod
    def layout(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """(channels, spatial sizes) of a sample."""
        return input_shape[0], input_shape[1:]

    def to_channels_first(self) -> nn.Module:
        return nn.Identity()

    def from_channels_first(self) -> nn.Module:
        return nn.Identity()


class Conv1dBody(ConvBody):
    """1-D convolutions over time, for series windows (window, channels)."""

    reads = ("series",)
    default_for = ("series",)
    conv = nn.Conv1d
    transposed = nn.ConvTranspose1d
    spatial_axes = 1

    @staticmethod
    def layout(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        window, channels = input_shape
        return channels, (window,)

    def to_channels_first(self) -> nn.Module:
        return SwapTimeAndChannels()

    def from_channels_first(self) -> nn.Module:
        return SwapTimeAndChannels()


class Conv2dBody(ConvBody):
    """2-D convolutions, for channels-first images (channels, height, width)."""

    reads = ("image",)
    default_for = ("image",)
    conv = nn.Conv2d
    transposed = nn.ConvTranspose2d
    spatial_axes = 2
    channel_axis = 0


BODIES: dict[str, type[Body]] = {
    "mlp": MLPBody,
    "conv1d": Conv1dBody,
    "conv2d": Conv2dBody,
}


def body_for(kind: InputKind, architecture: str | None = None) -> str:
    """The BODIES key for data of `kind`: `architecture` when given (DataError when it cannot read that
    kind), else the body made for that kind."""
    if architecture is None:
        return next(key for key, body in BODIES.items() if kind in body.default_for)
    if architecture not in BODIES:
        raise DataError(f"unknown architecture {architecture!r}; expected one of {sorted(BODIES)}")
    if kind not in BODIES[architecture].reads:
        fitting = [key for key, body in BODIES.items() if kind in body.reads]
        raise DataError(
            f"architecture {architecture!r} reads {' or '.join(BODIES[architecture].reads)} data, not {kind} "
            f"data; expected one of {fitting} for {kind} data"
        )
    return architecture
