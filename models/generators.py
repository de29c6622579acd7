"""Generators of GANs: networks `z -> x` that the GAN's program calls. Not part of any graph.

`MLPGenerator` for vectors, `ConvGenerator` (DCGAN-style transposed convolutions) for square
greyscale or colour images whose side is a multiple of 4 (8x8 digits, 28x28 MNIST). Both return
samples shaped like the data (`out_shape`), follow the device and dtype of their parameters, and
end in the identity or a sigmoid (`output`, for data in [0, 1]).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["MLPGenerator", "ConvGenerator"]

_OUTPUTS = ("identity", "sigmoid")


def _check_output(output: str) -> str:
    if output not in _OUTPUTS:
        raise ValueError(f"output: expected one of {_OUTPUTS}, got {output!r}")
    return output


def _out_shape(value) -> tuple[int, ...]:
    shape = (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)
    if not shape or any(v < 1 for v in shape):
        raise ValueError(f"out_shape: expected positive sizes, got {value!r}")
    return shape


class MLPGenerator(nn.Module):
    """`z (N, z_dim) -> x (N, *out_shape)`: Linear-LeakyReLU layers of `hidden_dims`.

    >>> MLPGenerator(2, (16,), 3)(torch.zeros(5, 2)).shape
    torch.Size([5, 3])
    """

    def __init__(self, z_dim: int, hidden_dims: Sequence[int], out_shape, output: str = "identity") -> None:
        super().__init__()
        self.z_dim, self.out_shape, self.output = int(z_dim), _out_shape(out_shape), _check_output(output)
        dims = [self.z_dim, *map(int, hidden_dims)]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(dims[-1], math.prod(self.out_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        out = torch.sigmoid(out) if self.output == "sigmoid" else out
        return out.reshape(*z.shape[:-1], *self.out_shape)


class ConvGenerator(nn.Module):
    """DCGAN-style `z -> image`: a linear layer to `4 * channels` maps of side/4, then two
    stride-2 transposed convolutions (kernel 4) with ReLU, to `image_shape` (C, H, W) with H and W
    multiples of 4; `out_shape` (default: the image shape) lets it emit flattened images.

    >>> ConvGenerator(4, (1, 8, 8), channels=8, out_shape=64)(torch.zeros(3, 4)).shape
    torch.Size([3, 64])
    """

    def __init__(self, z_dim: int, image_shape, channels: int = 32, output: str = "sigmoid", out_shape=None) -> None:
        super().__init__()
        shape = _out_shape(image_shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise ValueError(f"image_shape: expected (C, H, W) with H and W multiples of 4, got {image_shape!r}")
        self.z_dim, self.image_shape, self.output = int(z_dim), shape, _check_output(output)
        self.out_shape = shape if out_shape is None else _out_shape(out_shape)
        if math.prod(self.out_shape) != math.prod(shape):
            raise ValueError(f"out_shape: {out_shape!r} does not hold an image of shape {shape}")
        c, h, w = shape
        self.base = (4 * channels, h // 4, w // 4)
        self.project = nn.Sequential(nn.Linear(self.z_dim, math.prod(self.base)), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(4 * channels, 2 * channels, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * channels, c, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.project(z.reshape(-1, self.z_dim)).reshape(-1, *self.base)
        out = self.deconv(h)
        out = torch.sigmoid(out) if self.output == "sigmoid" else out
        return out.reshape(*lead, *self.out_shape)
