"""Neural networks that implement the conditionals of zoo models. They are not part of any
graph: programs call them to get distribution parameters, and callers may pass their own.

Shapes are batch first. Every network follows the device and dtype of its parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models import checks

__all__ = [
    "MLP",
    "GaussianEncoder",
    "ConvGaussianEncoder",
    "MLPDecoder",
    "ConvDecoder",
    "GridEncoder",
    "GridDecoder",
    "ConvGridEncoder",
    "ConvGridDecoder",
    "VectorQuantizer",
    "positive",
    "conv_grid_shape",
]


class MLP(nn.Module):
    """A multilayer perceptron `in_dim -> hidden_dims... -> out_dim`, applied to the last dim.

    `out_dim` may be a tuple to split the output into several heads (e.g. a mean and a scale):
    then `forward` returns a tuple of tensors.

    >>> net = MLP(4, (8,), (2, 2))
    >>> loc, scale = net(torch.zeros(3, 4))
    >>> loc.shape, scale.shape
    (torch.Size([3, 2]), torch.Size([3, 2]))
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int | Sequence[int], activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        in_dim = checks.positive_int("in_dim", in_dim)
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        if isinstance(out_dim, (tuple, list)):
            self.heads = checks.dims("out_dim", out_dim, min_len=1)
        else:
            self.heads, out_dim = None, checks.positive_int("out_dim", out_dim)
        _check_activation(activation)
        total = sum(self.heads) if self.heads else out_dim
        dims = [in_dim, *hidden_dims]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(dims[-1], total))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.heads is None:
            return out
        return tuple(out.split(self.heads, dim=-1))


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def positive(raw: torch.Tensor, kind: str = "softplus", min_value: float = 1e-4) -> torch.Tensor:
    """Map unconstrained values to positive ones: `softplus(raw) + min_value` or
    `exp(raw) + min_value` (`kind="exp"`, with `raw` clamped to [-20, 20] first)."""
    if kind == "softplus":
        return nn.functional.softplus(raw) + min_value
    if kind == "exp":
        return raw.clamp(-20.0, 20.0).exp() + min_value
    raise ValueError(f"kind: expected 'softplus' or 'exp', got {kind!r}")


def _check_scale_kind(scale: str) -> str:
    return checks.one_of("scale", scale, ("softplus", "exp"))


def _check_activation(activation) -> None:
    if not callable(activation):
        raise checks.ArgumentTypeError(
            f"activation: expected an nn.Module class (e.g. nn.ReLU), got {activation!r} ({type(activation).__name__})"
        )


def _shape(arg: str, value) -> tuple[int, ...]:
    return checks.shape(arg, value)


def _image_shape(arg: str, value) -> tuple[int, int, int]:
    shape = _shape(arg, value)
    if len(shape) != 3:
        raise ValueError(f"{arg}: a convolutional network needs an image shape (C, H, W), got {value!r}")
    return shape  # type: ignore[return-value]


def conv_grid_shape(image_shape, num_downsamples: int) -> tuple[int, int]:
    """The (h, w) grid after `num_downsamples` stride-2 convolutions (kernel 4, padding 1) of an
    image of shape (C, H, W); H and W must be divisible by 2**num_downsamples.

    >>> conv_grid_shape((1, 28, 28), 2), conv_grid_shape((1, 8, 8), 2)
    ((7, 7), (2, 2))
    """
    _, height, width = _image_shape("image_shape", image_shape)
    factor = 2**num_downsamples
    if height % factor or width % factor:
        raise ValueError(
            f"image_shape: {num_downsamples} stride-2 layers need H and W divisible by {factor}, "
            f"got {tuple(image_shape)}; use fewer channels entries or pad the images"
        )
    return height // factor, width // factor


def _conv_stack(in_channels: int, channels: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_channels, *channels[:-1]], channels):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), activation()]
    return nn.Sequential(*layers)


def _deconv_stack(channels: Sequence[int], out_channels: int, activation: type[nn.Module]) -> nn.Sequential:
    # len(channels) stride-2 transposed convolutions: channels[0] -> ... -> channels[-1] -> out.
    layers: list[nn.Module] = []
    targets = [*channels[1:], out_channels]
    for i, (c_in, c_out) in enumerate(zip(channels, targets)):
        layers.append(nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1))
        if i < len(channels) - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


def _flat_batch(x: torch.Tensor, event_shape: tuple[int, ...], what: str) -> tuple[torch.Size, torch.Tensor]:
    """Split `x` of shape (*lead, *event_shape) into its leading shape and a (N, *event_shape) view."""
    k = len(event_shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != event_shape:
        raise ValueError(f"{what}: expected inputs of shape (batch, *{event_shape}), got {tuple(x.shape)}")
    lead = x.shape[: x.dim() - k]
    return lead, x.reshape((-1, *event_shape))


# ---------------------------------------------------------------------------------------------
# VAE encoders: x -> (loc, scale) of a diagonal Gaussian over z
# ---------------------------------------------------------------------------------------------
class GaussianEncoder(nn.Module):
    """MLP encoder `x -> (loc, scale)`, each of shape (*lead, z_dim).

    Inputs have shape (*lead, *in_shape) and are flattened; `scale` is `softplus` (default) or
    `exp` of the second head, plus `min_scale`.

    >>> enc = GaussianEncoder((1, 8, 8), 2, hidden_dims=(16,))
    >>> loc, scale = enc(torch.zeros(5, 1, 8, 8))
    >>> loc.shape, bool((scale > 0).all())
    (torch.Size([5, 2]), True)
    """

    def __init__(self, in_shape, z_dim: int, hidden_dims: Sequence[int] = (400,), *, scale: str = "softplus", min_scale: float = 1e-4, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.in_shape = _shape("in_shape", in_shape)
        self.z_dim, self.scale = checks.positive_int("z_dim", z_dim), _check_scale_kind(scale)
        self.min_scale = checks.finite_float("min_scale", min_scale, nonnegative=True)
        in_dim = 1
        for v in self.in_shape:
            in_dim *= v
        self.net = MLP(in_dim, hidden_dims, (self.z_dim, self.z_dim), activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead, flat = _flat_batch(x, self.in_shape, "GaussianEncoder")
        loc, raw = self.net(flat.reshape(flat.shape[0], -1))
        scale = positive(raw, self.scale, self.min_scale)
        return loc.reshape(*lead, self.z_dim), scale.reshape(*lead, self.z_dim)


class ConvGaussianEncoder(nn.Module):
    """Convolutional encoder for images `(C, H, W) -> (loc, scale)`, each (*lead, z_dim).

    `len(channels)` stride-2 convolutions (kernel 4, padding 1) halve H and W each time (so
    (1, 28, 28) -> (64, 7, 7) and (1, 8, 8) -> (64, 2, 2) with the default channels), then a linear
    layer gives both heads.

    >>> enc = ConvGaussianEncoder((1, 8, 8), 3)
    >>> [t.shape for t in enc(torch.zeros(4, 1, 8, 8))]
    [torch.Size([4, 3]), torch.Size([4, 3])]
    """

    def __init__(self, in_shape, z_dim: int, channels: Sequence[int] = (32, 64), *, scale: str = "softplus", min_scale: float = 1e-4, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.in_shape = _image_shape("in_shape", in_shape)
        channels = checks.dims("channels", channels, min_len=1)
        _check_activation(activation)
        h, w = conv_grid_shape(self.in_shape, len(channels))
        self.z_dim, self.scale = checks.positive_int("z_dim", z_dim), _check_scale_kind(scale)
        self.min_scale = checks.finite_float("min_scale", min_scale, nonnegative=True)
        self.features = _conv_stack(self.in_shape[0], channels, activation)
        self.head = nn.Linear(channels[-1] * h * w, 2 * self.z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead, flat = _flat_batch(x, self.in_shape, "ConvGaussianEncoder")
        loc, raw = self.head(self.features(flat).flatten(1)).split(self.z_dim, dim=-1)
        scale = positive(raw, self.scale, self.min_scale)
        return loc.reshape(*lead, self.z_dim), scale.reshape(*lead, self.z_dim)


# ---------------------------------------------------------------------------------------------
# VAE decoders: z -> distribution parameters of shape (*lead, num_params, *out_shape)
# ---------------------------------------------------------------------------------------------
class MLPDecoder(nn.Module):
    """MLP decoder `z (*lead, z_dim) -> parameters (*lead, num_params, *out_shape)`.

    `num_params` is how many parameter tensors the likelihood takes per datum (1 for Bernoulli
    logits, 2 for a Gaussian's mean and raw scale, K for a K-way categorical's logits).

    >>> MLPDecoder(2, (1, 8, 8), (16,), num_params=2)(torch.zeros(3, 5, 2)).shape
    torch.Size([3, 5, 2, 1, 8, 8])
    """

    def __init__(self, z_dim: int, out_shape, hidden_dims: Sequence[int] = (400,), *, num_params: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.z_dim, self.out_shape = checks.positive_int("z_dim", z_dim), _shape("out_shape", out_shape)
        self.num_params = checks.positive_int("num_params", num_params)
        out_dim = self.num_params
        for v in self.out_shape:
            out_dim *= v
        self.net = MLP(self.z_dim, hidden_dims, out_dim, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(z, (self.z_dim,), "MLPDecoder")
        return self.net(flat).reshape(*lead, self.num_params, *self.out_shape)


class ConvDecoder(nn.Module):
    """Convolutional decoder `z (*lead, z_dim) -> parameters (*lead, num_params, C, H, W)`.

    A linear layer maps z to a (channels[0], H / 2**n, W / 2**n) grid, then n = len(channels)
    stride-2 transposed convolutions (kernel 4, padding 1) double it back to (H, W); the last one
    gives C * num_params channels. (1, 28, 28): z -> (64, 7, 7) -> (32, 14, 14) -> (P, 28, 28).

    >>> ConvDecoder(3, (1, 8, 8))(torch.zeros(4, 3)).shape
    torch.Size([4, 1, 1, 8, 8])
    """

    def __init__(self, z_dim: int, out_shape, channels: Sequence[int] = (64, 32), *, num_params: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.z_dim, self.out_shape = checks.positive_int("z_dim", z_dim), _image_shape("out_shape", out_shape)
        self.num_params = checks.positive_int("num_params", num_params)
        channels = checks.dims("channels", channels, min_len=1)
        _check_activation(activation)
        self.grid = (channels[0], *conv_grid_shape(self.out_shape, len(channels)))
        self.project = nn.Sequential(nn.Linear(self.z_dim, self.grid[0] * self.grid[1] * self.grid[2]), activation())
        self.deconv = _deconv_stack(channels, self.out_shape[0] * self.num_params, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(z, (self.z_dim,), "ConvDecoder")
        out = self.deconv(self.project(flat).reshape(-1, *self.grid))
        return out.reshape(*lead, self.num_params, *self.out_shape)


# ---------------------------------------------------------------------------------------------
# VQ-VAE: encoders to a grid of code vectors, decoders from one, and the codebook
# ---------------------------------------------------------------------------------------------
class GridEncoder(nn.Module):
    """MLP encoder `x (*lead, *in_shape) -> z_e (*lead, num_latents, code_dim)`: a row of
    `num_latents` continuous code vectors (channel last), for flat data.

    >>> GridEncoder(64, 4, 3, (32,))(torch.zeros(5, 64)).shape
    torch.Size([5, 4, 3])
    """

    def __init__(self, in_shape, num_latents: int, code_dim: int, hidden_dims: Sequence[int] = (400,), activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.in_shape = _shape("in_shape", in_shape)
        self.grid_shape = (checks.positive_int("num_latents", num_latents),)
        self.code_dim = checks.positive_int("code_dim", code_dim)
        in_dim = 1
        for v in self.in_shape:
            in_dim *= v
        self.net = MLP(in_dim, hidden_dims, self.grid_shape[0] * self.code_dim, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(x, self.in_shape, "GridEncoder")
        return self.net(flat.reshape(flat.shape[0], -1)).reshape(*lead, *self.grid_shape, self.code_dim)


class GridDecoder(nn.Module):
    """MLP decoder `z_q (*lead, num_latents, code_dim) -> parameters (*lead, num_params, *out_shape)`.

    >>> GridDecoder(4, 3, 64, (32,))(torch.zeros(5, 4, 3)).shape
    torch.Size([5, 1, 64])
    """

    def __init__(self, num_latents: int, code_dim: int, out_shape, hidden_dims: Sequence[int] = (400,), *, num_params: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.grid_shape = (checks.positive_int("num_latents", num_latents),)
        self.code_dim = checks.positive_int("code_dim", code_dim)
        self.out_shape, self.num_params = _shape("out_shape", out_shape), checks.positive_int("num_params", num_params)
        out_dim = self.num_params
        for v in self.out_shape:
            out_dim *= v
        self.net = MLP(self.grid_shape[0] * self.code_dim, hidden_dims, out_dim, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(z, (*self.grid_shape, self.code_dim), "GridDecoder")
        return self.net(flat.flatten(1)).reshape(*lead, self.num_params, *self.out_shape)


class ConvGridEncoder(nn.Module):
    """Convolutional encoder `x (*lead, C, H, W) -> z_e (*lead, h, w, code_dim)` (channel last),
    with h, w = H, W / 2**len(channels): stride-2 convolutions then a 1x1 convolution to code_dim.
    (1, 28, 28) -> (7, 7, D); (1, 8, 8) -> (2, 2, D).

    >>> ConvGridEncoder((1, 8, 8), 5)(torch.zeros(3, 1, 8, 8)).shape
    torch.Size([3, 2, 2, 5])
    """

    def __init__(self, in_shape, code_dim: int, channels: Sequence[int] = (32, 64), activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.in_shape = _image_shape("in_shape", in_shape)
        channels = checks.dims("channels", channels, min_len=1)
        _check_activation(activation)
        self.grid_shape = conv_grid_shape(self.in_shape, len(channels))
        self.code_dim = checks.positive_int("code_dim", code_dim)
        self.net = nn.Sequential(_conv_stack(self.in_shape[0], channels, activation), nn.Conv2d(channels[-1], self.code_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(x, self.in_shape, "ConvGridEncoder")
        return self.net(flat).permute(0, 2, 3, 1).reshape(*lead, *self.grid_shape, self.code_dim)


class ConvGridDecoder(nn.Module):
    """Convolutional decoder `z_q (*lead, h, w, code_dim) -> parameters (*lead, num_params, C, H, W)`:
    a 3x3 convolution to channels[0], then len(channels) stride-2 transposed convolutions.

    >>> ConvGridDecoder(5, (1, 8, 8), num_params=2)(torch.zeros(3, 2, 2, 5)).shape
    torch.Size([3, 2, 1, 8, 8])
    """

    def __init__(self, code_dim: int, out_shape, channels: Sequence[int] = (64, 32), *, num_params: int = 1, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.out_shape, self.code_dim = _image_shape("out_shape", out_shape), checks.positive_int("code_dim", code_dim)
        self.num_params = checks.positive_int("num_params", num_params)
        channels = checks.dims("channels", channels, min_len=1)
        _check_activation(activation)
        self.grid_shape = conv_grid_shape(self.out_shape, len(channels))
        self.net = nn.Sequential(
            nn.Conv2d(self.code_dim, channels[0], 3, padding=1),
            activation(),
            _deconv_stack(channels, self.out_shape[0] * self.num_params, activation),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead, flat = _flat_batch(z, (*self.grid_shape, self.code_dim), "ConvGridDecoder")
        out = self.net(flat.permute(0, 3, 1, 2))
        return out.reshape(*lead, self.num_params, *self.out_shape)


class VectorQuantizer(nn.Module):
    """A codebook of `num_codes` vectors of `code_dim` dims and nearest-neighbour lookup.

    `codebook` is a parameter of shape (K, D), initialised uniformly in [-1/K, 1/K] (van den Oord
    et al. 2017). Inputs are channel last: `z_e` of shape (..., D) gives codes of shape (...).

    >>> vq = VectorQuantizer(4, 2)
    >>> with torch.no_grad():
    ...     _ = vq.codebook.copy_(torch.tensor([[0., 0.], [1., 0.], [0., 1.], [1., 1.]]))
    >>> vq.nearest(torch.tensor([[0.9, 0.2], [0.1, 0.8]]))
    tensor([1, 2])
    """

    def __init__(self, num_codes: int, code_dim: int):
        super().__init__()
        self.num_codes, self.code_dim = checks.positive_int("num_codes", num_codes), checks.positive_int("code_dim", code_dim)
        self.codebook = nn.Parameter(torch.empty(self.num_codes, self.code_dim).uniform_(-1.0 / self.num_codes, 1.0 / self.num_codes))

    def distances(self, z_e: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances (..., K) from each input vector to each code."""
        flat = z_e.reshape(-1, self.code_dim)
        book = self.codebook
        d = flat.pow(2).sum(-1, keepdim=True) - 2.0 * flat @ book.t() + book.pow(2).sum(-1)
        return d.reshape(*z_e.shape[:-1], self.num_codes)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each input vector: int64 of shape z_e.shape[:-1]."""
        with torch.no_grad():
            return self.distances(z_e).argmin(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The code vectors (..., D) of integer (or integer-valued float) indices (...)."""
        return nn.functional.embedding(codes.long(), self.codebook)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, z_q): nearest indices and their code vectors (differentiable in the codebook)."""
        codes = self.nearest(z_e)
        return codes, self.lookup(codes)
