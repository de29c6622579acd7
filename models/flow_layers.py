"""The flow layers Pyro lacks, and the convolutional coupling network.

Pyro supplies the vector couplings, the autoregressive layers, splines and the LU-form 1x1
convolution (`pyro.distributions.transforms`). Written here: activation normalisation with
data-dependent initialisation (`ActNorm`), `Squeeze` (space to channels), checkerboard and
other fixed-mask affine couplings (`MaskedAffineCoupling`), `Reverse` (a permutation built on the
module's device), `FactorOut` (a multi-scale split: inner layers act on the first channels, the
rest go straight to the base distribution) and `Inverted` (a layer used in its inverse
direction: MAF's fast density pass).

Each hand-written layer is an `nn.Module` with ``forward_and_log_det(x, context)`` and
``inverse_and_log_det(y, context)`` (the generative direction is forward: base -> data); `bind`
makes it a Pyro `Transform` for one context. Layers compute their log-determinant together with
the map and keep it for the (x, y) pair they last saw, so a `TransformedDistribution` scores
without a second pass.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import ComposeTransform, Permute
from torch import nn
from torch.distributions.transforms import Transform

__all__ = ["FlowLayer", "ActNorm", "Squeeze", "MaskedAffineCoupling", "Reverse", "FactorOut", "Inverted",
           "ConvCouplingNet", "checkerboard_mask", "resolve", "BoundLayer"]


def _sum_event(t: torch.Tensor, event_dim: int) -> torch.Tensor:
    return t.reshape(t.shape[: t.dim() - event_dim] + (-1,)).sum(-1) if event_dim else t


class FlowLayer(nn.Module):
    """A hand-written invertible layer over events of `event_dim` dims (generative direction:
    forward). Subclasses implement `forward_and_log_det` and `inverse_and_log_det`, each
    returning (output, log|det J| of the forward map, shape = batch shape)."""

    event_dim: int = 1

    def forward_and_log_det(self, x, context=None):
        raise NotImplementedError

    def inverse_and_log_det(self, y, context=None):
        raise NotImplementedError

    def bind(self, context=None, anchor: torch.Tensor | None = None) -> Transform:
        """This layer as a Pyro `Transform` for `context`."""
        return BoundLayer(self, context)


class BoundLayer(Transform):
    """A `FlowLayer` bound to one context, as a torch `Transform` (cache of the last pair)."""

    bijective = True

    def __init__(self, layer: FlowLayer, context=None):
        super().__init__(cache_size=1)
        self.layer, self.context = layer, context
        self._pair = (None, None, None)

    @property
    def domain(self):
        return constraints.independent(constraints.real, self.layer.event_dim)

    @property
    def codomain(self):
        return constraints.independent(constraints.real, self.layer.event_dim)

    def _call(self, x):
        y, ladj = self.layer.forward_and_log_det(x, self.context)
        self._pair = (x, y, ladj)
        return y

    def _inverse(self, y):
        x, ladj = self.layer.inverse_and_log_det(y, self.context)
        self._pair = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x, y):
        x_old, y_old, ladj = self._pair
        if x is x_old and y is y_old:
            return ladj
        return self.layer.forward_and_log_det(x, self.context)[1]

    def __eq__(self, other):
        return self is other


def resolve(layer: nn.Module, context, anchor: torch.Tensor) -> Transform:
    """The Pyro `Transform` a layer module stands for, under `context` (None: unconditional)."""
    if isinstance(layer, FlowLayer):
        return layer.bind(context, anchor)
    if isinstance(layer, Inverted):
        return resolve(layer.inner, context, anchor).inv
    if isinstance(layer, ConditionalTransformModule):
        if context is None:
            raise ValueError(f"context: {type(layer).__name__} is a conditional layer; pass a context")
        return layer.condition(context)
    if isinstance(layer, Transform):
        return layer
    raise TypeError(f"layer: expected a Pyro transform or a FlowLayer, got {type(layer).__name__}")


class Inverted(nn.Module):
    """`inner` used in its inverse direction (an autoregressive layer whose one-pass direction is
    data -> base: MAF)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner


class Reverse(FlowLayer):
    """Reverse the order along dim -`event_dim` (vector coordinates, or image channels)."""

    def __init__(self, size: int, event_dim: int = 1):
        super().__init__()
        self.size, self.event_dim = int(size), int(event_dim)
        self._bound: dict = {}  # device -> Permute (it holds no parameter: built once per device)

    def bind(self, context=None, anchor=None) -> Transform:
        device = None if anchor is None else anchor.device
        permute = self._bound.get(device)
        if permute is None:
            index = torch.arange(self.size - 1, -1, -1, device=device)
            permute = self._bound[device] = Permute(index, dim=-self.event_dim)
        return permute


class ActNorm(FlowLayer):
    """Activation normalisation (Glow): an affine map per channel (images, `event_dim=3`) or per
    coordinate (vectors), x = z * exp(log_scale) + loc. With `data_init`, the first inverse
    pass on data under `initializing` (`Flow.init_from`, which `inference.fit` reaches through
    the model's data validation) sets loc and scale to the data's mean and standard deviation, so
    that z starts standardised; without it, a learnable diagonal scaling (NICE)."""

    def __init__(self, num_features: int, event_dim: int = 1, data_init: bool = True):
        super().__init__()
        if event_dim not in (1, 3):
            raise ValueError(f"event_dim: expected 1 (vectors) or 3 (images), got {event_dim!r}")
        self.event_dim, self.data_init = event_dim, bool(data_init)
        self.loc = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("initialized", torch.tensor(not data_init))
        self.initializing = False

    def _shape(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, 1, 1) if self.event_dim == 3 else t

    def _pixels(self, x: torch.Tensor) -> int:
        return x.shape[-1] * x.shape[-2] if self.event_dim == 3 else 1

    def _log_det(self, x: torch.Tensor) -> torch.Tensor:
        value = self.log_scale.sum() * self._pixels(x)
        return value.expand(x.shape[: x.dim() - self.event_dim])

    @torch.no_grad()
    def initialize(self, y: torch.Tensor) -> None:
        """Set loc and scale from data y (*batch, *event): per-feature mean and std."""
        c = self.loc.shape[0]
        flat = y.movedim(-3, -1).reshape(-1, c) if self.event_dim == 3 else y.reshape(-1, c)
        self.loc.copy_(flat.mean(0))
        self.log_scale.copy_(flat.std(0).clamp_min(1e-3).log() if flat.shape[0] > 1 else torch.zeros_like(self.log_scale))
        self.initialized.fill_(True)

    def forward_and_log_det(self, x, context=None):
        return x * self._shape(self.log_scale).exp() + self._shape(self.loc), self._log_det(x)

    def inverse_and_log_det(self, y, context=None):
        if self.initializing and not bool(self.initialized):
            self.initialize(y.detach())
        return (y - self._shape(self.loc)) * self._shape(-self.log_scale).exp(), self._log_det(y)


class Squeeze(FlowLayer):
    """Space to channels (RealNVP, Glow): (C, H, W) -> (4C, H/2, W/2) in the forward direction;
    `unsqueeze=True` is the inverse map. Volume preserving."""

    event_dim = 3

    def __init__(self, unsqueeze: bool = False):
        super().__init__()
        self.unsqueeze = bool(unsqueeze)

    @staticmethod
    def _squeeze(x):
        *b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"x: squeezing needs even height and width, got shape {tuple(x.shape[-3:])}")
        n = len(b)
        x = x.reshape(*b, c, h // 2, 2, w // 2, 2).permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
        return x.reshape(*b, 4 * c, h // 2, w // 2)

    @staticmethod
    def _unsqueeze(x):
        *b, c, h, w = x.shape
        n = len(b)
        x = x.reshape(*b, c // 4, 2, 2, h, w).permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        return x.reshape(*b, c // 4, 2 * h, 2 * w)

    def _zero(self, x):
        return x.new_zeros(x.shape[:-3])

    def forward_and_log_det(self, x, context=None):
        return (self._unsqueeze(x) if self.unsqueeze else self._squeeze(x)), self._zero(x)

    def inverse_and_log_det(self, y, context=None):
        return (self._squeeze(y) if self.unsqueeze else self._unsqueeze(y)), self._zero(y)


def checkerboard_mask(height: int, width: int, parity: int = 0) -> torch.Tensor:
    """A (1, H, W) mask of 0/1 in a checkerboard, 1 where (i + j + parity) is even."""
    i = torch.arange(height).reshape(-1, 1)
    j = torch.arange(width).reshape(1, -1)
    return ((i + j + parity) % 2 == 0).float().unsqueeze(0)


class MaskedAffineCoupling(FlowLayer):
    """Affine coupling with a fixed binary mask (RealNVP's checkerboard or channel masks): the
    masked entries pass unchanged and condition the others,
    y = m * x + (1 - m) * (x * exp(s) + t), with (t, s) = net(m * x, context) and
    s = `scale_bound` * tanh(raw / `scale_bound`) so no exp overflows."""

    def __init__(self, mask: torch.Tensor, net: nn.Module, scale_bound: float = 3.0):
        super().__init__()
        self.event_dim = mask.dim()
        self.register_buffer("mask", mask)
        self.net, self.scale_bound = net, float(scale_bound)

    def _params(self, x, context):
        m = self.mask
        shift, raw = self.net(x * m, context)
        shift = shift.reshape(x.shape) * (1 - m)
        log_scale = (self.scale_bound * torch.tanh(raw.reshape(x.shape) / self.scale_bound)) * (1 - m)
        return shift, log_scale

    def forward_and_log_det(self, x, context=None):
        shift, log_scale = self._params(x, context)
        return x * log_scale.exp() + shift, _sum_event(log_scale, self.event_dim)

    def inverse_and_log_det(self, y, context=None):
        shift, log_scale = self._params(y, context)
        return (y - shift) * (-log_scale).exp(), _sum_event(log_scale, self.event_dim)


class FactorOut(FlowLayer):
    """Multi-scale architecture: the `inner` layers (over (channels, H, W)) act on the first
    `channels` channels of a (C, H, W) event; the remaining channels are left as they are, so in
    the data -> base direction they are factored out to the base distribution at this scale."""

    event_dim = 3

    def __init__(self, channels: int, inner: Sequence[nn.Module]):
        super().__init__()
        self.channels = int(channels)
        self.inner = nn.ModuleList(inner)
        self._anchor_ref: torch.Tensor | None = None

    def bind(self, context=None, anchor=None) -> Transform:
        self._anchor_ref = anchor
        return BoundLayer(self, context)

    def _compose(self, context, like):
        return ComposeTransform([resolve(t, context, like) for t in self.inner], cache_size=0)

    def forward_and_log_det(self, x, context=None):
        x1, x2 = x[..., : self.channels, :, :], x[..., self.channels :, :, :]
        t = self._compose(context, x)
        y1 = t(x1)
        return torch.cat([y1, x2], dim=-3), _ladj_sum(t, x1, y1)

    def inverse_and_log_det(self, y, context=None):
        y1, y2 = y[..., : self.channels, :, :], y[..., self.channels :, :, :]
        t = self._compose(context, y)
        x1 = t.inv(y1)
        return torch.cat([x1, y2], dim=-3), _ladj_sum(t, x1, y1)


def _ladj_sum(t: ComposeTransform, x, y) -> torch.Tensor:
    """log|det J| of a composed transform of event dim 3, summed to the batch shape."""
    ladj = t.log_abs_det_jacobian(x, y)
    extra = ladj.dim() - (x.dim() - 3)
    return _sum_event(ladj, extra) if extra > 0 else ladj


class ConvCouplingNet(nn.Module):
    """The conditioner of image couplings: (*batch, C_in*H*W or C_in, H, W) -> (shift, log_scale),
    each flattened to (*batch, C_out*H*W). 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv initialised at
    zero (each coupling starts as the identity). A context vector (`context_dim`) enters through a
    linear map added to the first hidden layer."""

    def __init__(self, in_channels: int, out_channels: int, spatial: tuple[int, int], hidden_channels: int = 32,
                 context_dim: int | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.spatial = int(in_channels), int(out_channels), tuple(spatial)
        h = int(hidden_channels)
        self.conv_in = nn.Conv2d(self.in_channels, h, 3, padding=1)
        self.conv_mid = nn.Conv2d(h, h, 1)
        self.conv_out = nn.Conv2d(h, 2 * self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.context = nn.Linear(int(context_dim), h) if context_dim else None

    def forward(self, x, context=None):
        height, width = self.spatial
        lead = x.shape[:-3] if (x.dim() >= 3 and tuple(x.shape[-3:]) == (self.in_channels, height, width)) else x.shape[:-1]
        img = x.reshape(-1, self.in_channels, height, width)
        hidden = self.conv_in(img)
        if self.context is not None:
            if context is None:
                raise ValueError("context: this coupling network is conditional; pass a context")
            c = self.context(context.expand(*lead, context.shape[-1]).reshape(-1, context.shape[-1]))
            hidden = hidden + c[:, :, None, None]
        hidden = F.relu(self.conv_mid(F.relu(hidden)))
        out = self.conv_out(F.relu(hidden))
        shift, log_scale = out.chunk(2, dim=1)
        return shift.reshape(*lead, -1), log_scale.reshape(*lead, -1)

