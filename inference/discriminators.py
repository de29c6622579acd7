"""Discriminators (critics) of the adversarial engine: networks `x -> score (N,)`.

They belong to `inference.Adversarial`, never to a model: a discriminator is a learned
two-sample test between data and samples, not part of the generative process. `MLPDiscriminator`
for vectors, `ConvDiscriminator` (DCGAN-style strided convolutions, no batch norm so that
gradient penalties stay per-sample) for images. `default_discriminator` picks one for a data
shape; `spectral_norm` wraps every linear and convolutional layer.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["MLPDiscriminator", "ConvDiscriminator", "default_discriminator", "spectral_norm"]


class MLPDiscriminator(nn.Module):
    """`x (N, *in_shape) -> (N,)`: Linear-LeakyReLU(0.2) layers of `hidden_dims`, inputs flattened.

    >>> MLPDiscriminator(3, (16,))(torch.zeros(5, 3)).shape
    torch.Size([5])
    """

    def __init__(self, in_shape, hidden_dims: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(v) for v in in_shape)
        dims = [math.prod(self.in_shape), *map(int, hidden_dims)]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        layers.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1)).squeeze(-1)


class ConvDiscriminator(nn.Module):
    """DCGAN-style `image (N, C, H, W) or flattened (N, C*H*W) -> (N,)`: two stride-2 convolutions
    (kernel 4) with LeakyReLU(0.2), then a linear layer. H and W multiples of 4.

    >>> ConvDiscriminator((1, 8, 8), channels=8)(torch.zeros(2, 64)).shape
    torch.Size([2])
    """

    def __init__(self, image_shape, channels: int = 32) -> None:
        super().__init__()
        shape = tuple(int(v) for v in image_shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise ValueError(f"image_shape: expected (C, H, W) with H and W multiples of 4, got {image_shape!r}")
        self.image_shape = shape
        c, h, w = shape
        self.conv = nn.Sequential(
            nn.Conv2d(c, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(2 * channels * (h // 4) * (w // 4), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.reshape(x.shape[0], *self.image_shape))
        return self.head(h.flatten(1)).squeeze(-1)


def _as_image(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(C, H, W) of data of `shape`: an image shape, or a flattened square greyscale image."""
    if len(shape) == 3 and shape[1] % 4 == 0 and shape[2] % 4 == 0:
        return shape  # type: ignore[return-value]
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side == shape[0] and side >= 8 and side % 4 == 0:
            return (1, side, side)
    return None


def default_discriminator(data_shape, kind: str = "auto", hidden_dims: Sequence[int] = (128, 128),
                          channels: int = 32) -> nn.Module:
    """A discriminator for data of `data_shape` (one example): ``kind="conv"`` for images (or
    flattened square greyscale images, side a multiple of 4, at least 8), ``"mlp"`` for any
    data; ``"auto"``: conv for images of side 16 or more, else an MLP (8x8 digits, 2D toys)."""
    shape = (int(data_shape),) if isinstance(data_shape, int) else tuple(int(v) for v in data_shape)
    image = _as_image(shape)
    if kind == "auto":
        kind = "conv" if image is not None and image[1] >= 16 else "mlp"
    if kind == "conv":
        if image is None:
            raise ValueError(f"discriminator: 'conv' needs images (C, H, W) or flattened square ones, got data shape {shape}")
        return ConvDiscriminator(image, channels)
    if kind == "mlp":
        return MLPDiscriminator(shape, hidden_dims)
    raise ValueError(f"discriminator: expected a module, 'auto', 'mlp' or 'conv', got {kind!r}")


def spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every `Linear` and `Conv2d` of `module` in spectral normalisation (Miyato et al. 2018,
    torch's parametrization: the power-iteration vectors are buffers, so they are saved and resumed)."""
    from torch.nn.utils.parametrizations import spectral_norm as sn

    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            setattr(module, name, sn(child))
        else:
            spectral_norm(child)
    return module
