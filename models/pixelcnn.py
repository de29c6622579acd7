"""PixelCNN (van den Oord et al. 2016): an autoregressive model of images by masked convolutions."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import pyro.distributions as dist
from pyro.distributions import constraints

from models.autoregressive import AutoregressiveModel, bernoulli
from models import checks
from models.masked_nets import GatedPixelCNNNet, PixelCNNNet
from models.registry import register

__all__ = ["PixelCNN"]


@register("pixelcnn", x_dim=25, hidden=8, num_layers=2,
          train=dict(settings=dict(hidden=16, num_layers=3, first_kernel=5), engine="mle", data="digits",
                     data_settings=dict(binarize=True), epochs=60, batch_size=64, lr=3e-3))
class PixelCNN(AutoregressiveModel):
    """PixelCNN over images generated in raster order (a pixel's channels together).

    Data: `x_shape` (C, H, W) images ((H, W) or (L,): one channel, one row; a VQ-VAE's code
    grid), or `x_dim` flat square images with one channel (64 is 8x8). `levels=2`: binary pixels, Bernoulli outputs; `levels=L > 2`: integer pixel levels
    0..L-1 (stored as floats), a categorical over the L levels per pixel. `gated=True` (default)
    uses the gated PixelCNN's vertical and horizontal stacks, which see every earlier pixel;
    `gated=False` the plain type-A-then-B masked convolutions, which have a blind spot.
    `hidden` channels, `num_layers` layers after the first, kernel sizes `first_kernel`, `kernel`.

    >>> m = PixelCNN(x_shape=(1, 3, 3), hidden=4, num_layers=1, first_kernel=3)
    >>> m.sample(2).shape
    torch.Size([2, 1, 3, 3])
    """

    def __init__(self, x_dim: int | None = None, *, x_shape: Sequence[int] | None = None, levels: int = 2,
                 gated: bool = True, hidden: int = 32, num_layers: int = 4, first_kernel: int = 7,
                 kernel: int = 3) -> None:
        super().__init__()
        if (x_dim is None) == (x_shape is None):
            raise ValueError(f"x_dim, x_shape: expected exactly one of them, got x_dim={x_dim!r}, x_shape={x_shape!r}")
        if x_shape is not None:
            x_shape = tuple(x_shape)
            if not 1 <= len(x_shape) <= 3 or not all(isinstance(n, int) and n > 0 for n in x_shape):
                raise ValueError(f"x_shape: expected (C, H, W), (H, W) or (L,) positive ints, got {x_shape!r}")
            self.image_shape = (1,) * (3 - len(x_shape)) + x_shape
            self.event_shape = x_shape
        else:
            x_dim = checks.positive_int("x_dim", x_dim)
            side = math.isqrt(x_dim)
            if side * side != x_dim:
                raise ValueError(f"x_dim: expected a square number of pixels (64 = 8x8), got {x_dim!r}; "
                                 "or pass x_shape=(C, H, W)")
            self.image_shape, self.event_shape = (1, side, side), (x_dim,)
        if not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels: expected an int >= 2 (2: binary pixels), got {levels!r}")
        self.levels, self.gated = levels, bool(gated)
        C, H, W = self.image_shape
        params = 1 if levels == 2 else levels
        Net = GatedPixelCNNNet if gated else PixelCNNNet
        self.net = Net(C, hidden=hidden, num_layers=num_layers, params_per_unit=params,
                       first_kernel=first_kernel, kernel=kernel)
        pixels = torch.arange(H * W)
        self.register_buffer("_steps", pixels[:, None] + H * W * torch.arange(C)[None, :], persistent=False)

    def steps(self) -> torch.Tensor:
        return self._steps.cpu()

    @property
    def support(self):
        if self.levels == 2:
            return constraints.independent(constraints.boolean, len(self.event_shape))
        return constraints.independent(constraints.integer_interval(0, self.levels - 1), len(self.event_shape))

    def conditionals(self, x: torch.Tensor):
        img = x.reshape(x.shape[0], *self.image_shape)
        out = self.net(img if self.levels == 2 else img / (self.levels - 1))     # (N, P, C, H, W)
        if self.levels == 2:
            return bernoulli(out[:, 0].reshape(x.shape))
        return dist.Categorical(logits=out.movedim(1, -1).reshape(*x.shape, self.levels), validate_args=False)
