"""Networks of the score-based and diffusion models: noise-conditional MLPs and a small U-Net.

Every network here maps ``(x, t, y=None)`` to a tensor shaped like `x`:

- `x`: a batch of data, shape ``(*batch, *x_shape)`` (any number of leading batch dims, so that
  a Pyro program may broadcast over vectorised particles);
- `t`: one real "time" per datum, shape broadcastable to `batch` (a DDPM passes the step index
  t in 1..T; an NCSN passes a scaled log noise level), embedded with sinusoids;
- `y`: optional int class labels, shape `batch`; the label `num_classes` is the "no label" token
  that classifier-free guidance trains with label dropout (None means that token).

They are the conditional distributions' parameters, not graph nodes (DESIGN.md): the programs in
`models/ddpm.py` and `models/ncsn.py` call them.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["SinusoidalEmbedding", "NoiseMLP", "UNet", "noise_network"]


class SinusoidalEmbedding(nn.Module):
    """sin/cos features of a real scalar at geometrically spaced frequencies (Vaswani et al.
    2017), followed by a two-layer MLP.

    >>> SinusoidalEmbedding(16)(torch.tensor([1.0, 500.0])).shape
    torch.Size([2, 16])
    """

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim: expected an even int >= 2, got {dim!r}")
        self.dim, self.max_period = dim, float(max_period)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
        angles = t[..., None] * freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


def _shape(arg: str, value) -> tuple[int, ...]:
    shape = (value,) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if not shape or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in shape):
        raise ValueError(f"{arg}: expected a positive int or a tuple of positive ints, got {value!r}")
    return shape


class _Conditioned(nn.Module):
    """Shared input handling: flattening of leading batch dims, time and label embeddings."""

    def __init__(self, x_shape, emb_dim: int, num_classes: int | None) -> None:
        super().__init__()
        self.x_shape = _shape("x_shape", x_shape)
        if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
            raise ValueError(f"num_classes: expected None or a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.time = SinusoidalEmbedding(emb_dim)
        # one extra row: the "no label" token of classifier-free guidance
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

    def _inputs(self, x: torch.Tensor, t, y):
        k = len(self.x_shape)
        if tuple(x.shape[x.dim() - k:]) != self.x_shape:
            raise ValueError(f"x: expected shape (batch, *{self.x_shape}), got {tuple(x.shape)}")
        batch = x.shape[: x.dim() - k]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(batch).reshape(-1)
        emb = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full((), self.num_classes, dtype=torch.long, device=x.device)
            y = torch.as_tensor(y, device=x.device).long().expand(batch).reshape(-1)
            emb = emb + self.label(y)
        elif y is not None:
            raise ValueError("y: this network was built without num_classes, so it takes no labels")
        return batch, x.reshape(-1, *self.x_shape), emb


class _ResidualLayer(nn.Module):
    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.lin1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.lin2(nn.functional.silu(r))


class NoiseMLP(_Conditioned):
    """A time- (and label-) conditional residual MLP for vector data: (x, t, y) -> shape of x.

    >>> net = NoiseMLP(2, hidden_dim=16, num_layers=2)
    >>> net(torch.zeros(5, 2), torch.ones(5)).shape
    torch.Size([5, 2])
    """

    def __init__(self, x_shape=2, hidden_dim: int = 128, num_layers: int = 3, emb_dim: int = 64, num_classes: int | None = None) -> None:
        super().__init__(x_shape, emb_dim, num_classes)
        d = math.prod(self.x_shape)
        if not isinstance(hidden_dim, int) or hidden_dim < 1 or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"hidden_dim, num_layers: expected positive ints, got {hidden_dim!r}, {num_layers!r}")
        self.inp = nn.Linear(d, hidden_dim)
        self.layers = nn.ModuleList(_ResidualLayer(hidden_dim, emb_dim) for _ in range(num_layers))
        self.out = nn.Sequential(nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, d))

    def forward(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        batch, flat, emb = self._inputs(x, t, y)
        h = self.inp(flat.reshape(flat.shape[0], -1))
        for layer in self.layers:
            h = layer(h, emb)
        return self.out(h).reshape(*batch, *self.x_shape)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = self.conv1(nn.functional.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        r = self.conv2(nn.functional.silu(self.norm2(r)))
        return self.skip(h) + r


class UNet(_Conditioned):
    """A small U-Net for images (Ronneberger et al. 2015, as in Ho et al. 2020 without attention):
    one residual block per resolution, stride-2 downsampling, nearest upsampling, skip
    connections, time and label embeddings added in every block. `x_shape` is the data's shape,
    flat (64,) data is read as `image_shape` (e.g. (1, 8, 8)); each side must be divisible by
    2 ** (len(channels) - 1).

    >>> net = UNet((64,), image_shape=(1, 8, 8), channels=(8, 16))
    >>> net(torch.zeros(3, 64), torch.ones(3)).shape
    torch.Size([3, 64])
    """

    def __init__(self, x_shape=(1, 8, 8), channels: Sequence[int] = (32, 64), emb_dim: int = 64, num_classes: int | None = None, image_shape=None) -> None:
        super().__init__(x_shape, emb_dim, num_classes)
        image_shape = self.x_shape if image_shape is None else _shape("image_shape", image_shape)
        if len(image_shape) != 3 or math.prod(image_shape) != math.prod(self.x_shape):
            raise ValueError(f"image_shape: expected (channels, height, width) with {math.prod(self.x_shape)} values, got {image_shape!r}")
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels: expected a non-empty sequence of positive ints, got {channels!r}")
        factor = 2 ** (len(channels) - 1)
        if image_shape[1] % factor or image_shape[2] % factor:
            raise ValueError(f"image_shape: height and width must be divisible by {factor} for {len(channels)} levels, got {image_shape}")
        self.image_shape = image_shape
        c0 = image_shape[0]
        self.inp = nn.Conv2d(c0, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(_ResBlock(prev, c, emb_dim))
            self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
            prev = c
        self.mid = _ResBlock(prev, prev, emb_dim)
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(_ResBlock(prev + c, c, emb_dim))
            prev = c
        self.out = nn.Sequential(nn.GroupNorm(min(8, prev), prev), nn.SiLU(), nn.Conv2d(prev, c0, 3, padding=1))

    def forward(self, x: torch.Tensor, t, y=None) -> torch.Tensor:
        batch, flat, emb = self._inputs(x, t, y)
        h = self.inp(flat.reshape(-1, *self.image_shape))
        skips = []
        for block, pool in zip(self.down, self.pool):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)
        h = self.mid(h, emb)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = nn.functional.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(h).reshape(*batch, *self.x_shape)


NETWORKS = ("mlp", "unet")


def noise_network(kind: str, x_shape, num_classes: int | None = None, **options) -> nn.Module:
    """A default network (x, t, y) -> shape of x: ``"mlp"`` (`NoiseMLP`) or ``"unet"`` (`UNet`;
    flat data of a square number of values is read as a one-channel square image).

    >>> noise_network("unet", (64,), channels=(8,)).image_shape
    (1, 8, 8)
    """
    x_shape = _shape("x_shape", x_shape)
    if kind == "mlp":
        return NoiseMLP(x_shape, num_classes=num_classes, **options)
    if kind == "unet":
        image_shape = options.pop("image_shape", None)
        if image_shape is None:
            if len(x_shape) == 3:
                image_shape = x_shape
            else:
                side = math.isqrt(math.prod(x_shape))
                if side * side != math.prod(x_shape):
                    raise ValueError(f"network='unet': data of shape {x_shape} is not a square image; pass image_shape=")
                image_shape = (1, side, side)
        return UNet(x_shape, num_classes=num_classes, image_shape=image_shape, **options)
    raise ValueError(f"network: expected one of {NETWORKS}, got {kind!r}")
