"""Masked networks for autoregressive models: masked linear layers, the MADE network, masked
convolutions and the PixelCNN networks (plain and gated). Networks only: the programs that use
them live in `models/fvsbn.py`, `models/nade.py`, `models/made.py`, `models/pixelcnn.py`.

`MADENet` is the reusable conditioner (also for MAF / IAF):

    net = MADENet(input_dim, hidden_dims=(64, 64), params_per_unit=2, order=None, context_dim=0)
    out = net(x)                       # x (N, D) -> out (N, params_per_unit, D)
    out = net(x, context)              # with context_dim > 0: context (N, context_dim)

    out[:, p, i] depends only on x[:, j] for the units j before i in `net.order` (order[k] is
    the unit at position k; the default is 0, 1, ..., D-1), and on the whole context.
    net.order, net.rank (rank[i] = position of unit i), net.degrees (hidden degrees per layer)
    net.set_masks(order=..., seed=...) redraws the ordering and/or the connectivity;
    net.draw_masks(generator, order_agnostic=True) draws both at random (MADE's agnostic training).

The masks are buffers that are not saved in state dicts: they are a function of the constructor
arguments (and of `set_masks` calls, which the owner replays).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MaskedLinear",
    "MADENet",
    "MaskedConv2d",
    "PixelCNNNet",
    "GatedPixelCNNNet",
    "check_order",
    "order_and_rank",
]


def check_order(order, dim: int, name: str = "order") -> torch.Tensor:
    """`order` as a long tensor holding a permutation of range(dim); None gives the identity."""
    if order is None:
        return torch.arange(dim)
    t = torch.as_tensor(order).long().reshape(-1).cpu()
    if t.numel() != dim or not torch.equal(t.sort().values, torch.arange(dim)):
        raise ValueError(f"{name}: expected a permutation of 0..{dim - 1}, got {t.tolist()}")
    return t


def order_and_rank(order, dim: int, name: str = "order") -> tuple[torch.Tensor, torch.Tensor]:
    """(`order` checked as by `check_order`, its inverse `rank`): unit `order[i]` comes i-th in
    the ordering and `rank[order[i]] = i`.

    >>> order_and_rank([2, 0, 1], 3)
    (tensor([2, 0, 1]), tensor([1, 2, 0]))
    """
    order = check_order(order, dim, name)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(dim)
    return order, rank


def _check_sizes(in_channels: int, hidden: int, num_layers: int, params_per_unit: int) -> None:
    for name, v in (("in_channels", in_channels), ("hidden", hidden), ("params_per_unit", params_per_unit)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if not isinstance(num_layers, int) or num_layers < 0:
        raise ValueError(f"num_layers: expected a non-negative int, got {num_layers!r}")


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features), persistent=False)

    def set_mask(self, mask: torch.Tensor) -> None:
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"mask: expected shape {tuple(self.weight.shape)}, got {tuple(mask.shape)}")
        self.mask.copy_(mask.to(self.mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADENet(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015): an MLP from x (N, D)
    to (N, params_per_unit, D) whose output for unit i depends only on the units before i in
    `order`.

    `hidden_dims`: widths of the hidden layers (one or more); `params_per_unit`: outputs per unit
    (1 logit for Bernoulli units, 3K for a K-component Gaussian mixture, 2 for an affine flow);
    `order`: the units in the order they are generated (default 0..D-1); `context_dim`: width of
    an optional context input that every unit may depend on (conditional flows); `direct`: add
    masked direct connections from the inputs to the outputs; `activation`: an nn.Module class.
    Hidden degrees are spread evenly (layer l unit k has degree 1 + k mod (D-1)) unless `seed`
    is given, which draws them at random as in the paper.

    >>> net = MADENet(3, hidden_dims=(8, 8), params_per_unit=2)
    >>> net(torch.zeros(5, 3)).shape
    torch.Size([5, 2, 3])
    >>> net.connectivity().long().tolist()      # [i, j] = 1: output i may depend on input j
    [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (64,),
        params_per_unit: int = 1,
        *,
        order=None,
        context_dim: int = 0,
        direct: bool = False,
        activation: type[nn.Module] = nn.ReLU,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim: expected a positive int, got {input_dim!r}")
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims or not all(isinstance(h, int) and h > 0 for h in hidden_dims):
            raise ValueError(f"hidden_dims: expected one or more positive ints, got {hidden_dims!r}")
        if not isinstance(params_per_unit, int) or params_per_unit < 1:
            raise ValueError(f"params_per_unit: expected a positive int, got {params_per_unit!r}")
        if not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim: expected a non-negative int, got {context_dim!r}")
        self.input_dim, self.hidden_dims, self.params_per_unit = input_dim, hidden_dims, params_per_unit
        self.context_dim = context_dim
        dims = (input_dim,) + hidden_dims
        self.layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.output = MaskedLinear(hidden_dims[-1], params_per_unit * input_dim)
        self.direct = MaskedLinear(input_dim, params_per_unit * input_dim, bias=False) if direct else None
        self.context = nn.Linear(context_dim, hidden_dims[0]) if context_dim else None
        self.activation = activation()
        self.register_buffer("order", torch.arange(input_dim), persistent=False)
        self.register_buffer("rank", torch.arange(input_dim), persistent=False)
        self.degrees: list[torch.Tensor] = []
        self.set_masks(order=order, seed=seed)

    # ------------------------------------------------------------------ masks
    def set_masks(self, order=None, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        """Set the ordering (`order`, default 0..D-1) and the hidden degrees: evenly spread, or
        drawn at random from `generator` (or a generator seeded with `seed`)."""
        D = self.input_dim
        order, rank = order_and_rank(order, D)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        in_degree = rank + 1  # 1..D
        degrees, previous = [], in_degree
        top = max(D - 1, 1)
        for h in self.hidden_dims:
            low = min(int(previous.min()), top)
            if generator is None:
                d = low + torch.arange(h) % (top - low + 1)
            else:
                d = torch.randint(low, top + 1, (h,), generator=generator)
            degrees.append(d)
            previous = d
        masks = [(degrees[0][:, None] >= in_degree[None, :])]
        masks += [(b[:, None] >= a[None, :]) for a, b in zip(degrees[:-1], degrees[1:])]
        out_degree = in_degree.repeat(self.params_per_unit)  # output p*D + i is unit i
        out_mask = out_degree[:, None] > degrees[-1][None, :]
        for layer, m in zip(self.layers, masks):
            layer.set_mask(m)
        self.output.set_mask(out_mask)
        if self.direct is not None:
            self.direct.set_mask(out_degree[:, None] > in_degree[None, :])
        self.order.copy_(order.to(self.order.device))
        self.rank.copy_(rank.to(self.rank.device))
        self.degrees = degrees

    def draw_masks(self, generator: torch.Generator | None = None, order_agnostic: bool = True) -> None:
        """Draw new random hidden degrees (connectivity-agnostic training) and, with
        `order_agnostic`, a new random ordering, from `generator` (default torch's global RNG)."""
        order = torch.randperm(self.input_dim, generator=generator) if order_agnostic else self.order.cpu()
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        self.set_masks(order=order, generator=generator)

    def connectivity(self) -> torch.Tensor:
        """Boolean (D, D): entry [i, j] is True when output i can depend on input j (the product
        of the masks is nonzero)."""
        path = self.layers[0].mask.double()
        for layer in self.layers[1:]:
            path = layer.mask.double() @ path
        path = self.output.mask.double() @ path
        if self.direct is not None:
            path = path + self.direct.mask.double()
        D = self.input_dim
        return path.reshape(self.params_per_unit, D, D).sum(0) > 0

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"x: expected last dim {self.input_dim}, got shape {tuple(x.shape)}")
        h = self.layers[0](x)
        if self.context is not None:
            if context is None:
                raise ValueError(f"context: this MADENet takes a context of width {self.context_dim}, got None")
            h = h + self.context(context)
        elif context is not None:
            raise ValueError("context: this MADENet was built with context_dim=0 and takes no context")
        h = self.activation(h)
        for layer in self.layers[1:]:
            h = self.activation(layer(h))
        out = self.output(h)
        if self.direct is not None:
            out = out + self.direct(x)
        return out.reshape(*x.shape[:-1], self.params_per_unit, self.input_dim)


# ---------------------------------------------------------------------- PixelCNN
class MaskedConv2d(nn.Conv2d):
    """A 2D convolution masked so that each output pixel sees only the pixels above it and to its
    left (raster order): type "A" excludes the centre pixel (first layer), type "B" includes it.
    All channels of a pixel are treated together (a pixel's channels are one unit group)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str = "B", **kwargs) -> None:
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type: expected 'A' or 'B', got {mask_type!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd positive int, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kwargs)
        c = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[c, c + (mask_type == "B"):] = 0
        mask[c + 1:] = 0
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None].expand_as(self.weight).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class _Head(nn.Sequential):
    def __init__(self, hidden: int, out: int) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, out, 1))


class PixelCNNNet(nn.Module):
    """PixelCNN (van den Oord et al. 2016): a 7x7-ish type-A masked convolution, then residual
    blocks of type-B masked convolutions, then 1x1 convolutions to `params_per_unit` outputs per
    channel and pixel: (N, C, H, W) -> (N, params_per_unit, C, H, W). Has the blind spot: pixels
    up and to the right of the receptive field's diagonal are never seen.

    >>> net = PixelCNNNet(1, hidden=8, num_layers=2, first_kernel=3)
    >>> net(torch.zeros(2, 1, 5, 5)).shape
    torch.Size([2, 1, 1, 5, 5])
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, num_layers: int = 5, params_per_unit: int = 1,
                 first_kernel: int = 7, kernel: int = 3) -> None:
        super().__init__()
        _check_sizes(in_channels, hidden, num_layers, params_per_unit)
        self.in_channels, self.params_per_unit = in_channels, params_per_unit
        self.first = MaskedConv2d(in_channels, hidden, first_kernel, "A")
        self.blocks = nn.ModuleList(MaskedConv2d(hidden, hidden, kernel, "B") for _ in range(num_layers))
        self.head = _Head(hidden, params_per_unit * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x)
        for block in self.blocks:
            h = h + block(F.relu(h))
        out = self.head(h)
        return out.reshape(x.shape[0], self.params_per_unit, self.in_channels, *x.shape[-2:])


class _GatedLayer(nn.Module):
    """One gated layer with a vertical stack (rows above) and a horizontal stack (pixels to the
    left in the same row), so that together they see every earlier pixel: no blind spot."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, first: bool) -> None:
        super().__init__()
        c = kernel // 2
        self.first = first
        # vertical: kernel rows 0..c (the centre row included: the stack is shifted down by one
        # row before it feeds the horizontal stack)
        self.vertical = nn.Conv2d(in_channels, 2 * hidden, (c + 1, kernel), padding=0)
        # horizontal: the row's pixels left of the centre (and the centre for later layers)
        self.horizontal = nn.Conv2d(in_channels, 2 * hidden, (1, c + (0 if first else 1)), padding=0)
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.h_out = nn.Conv2d(hidden, hidden, 1)
        self.c = c

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.c
        v_pre = self.vertical(F.pad(v, (c, c, c, 0)))                       # row i sees rows i-c..i
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]                      # row i sees rows < i
        if self.first:
            h_pre = self.horizontal(F.pad(h, (c, 0, 0, 0)))[..., :-1]        # col j sees cols j-c..j-1
        else:
            h_pre = self.horizontal(F.pad(h, (c, 0, 0, 0)))                 # col j sees cols j-c..j
        h_pre = h_pre + self.v_to_h(v_down)
        v_new = _gate(v_pre)
        h_new = self.h_out(_gate(h_pre))
        if not self.first:
            h_new = h_new + h
        return v_new, h_new


def _gate(t: torch.Tensor) -> torch.Tensor:
    a, b = t.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedPixelCNNNet(nn.Module):
    """Gated PixelCNN (van den Oord et al. 2016, "Conditional image generation with PixelCNN
    decoders"): gated layers with a vertical and a horizontal stack, which removes the blind spot;
    (N, C, H, W) -> (N, params_per_unit, C, H, W).

    >>> net = GatedPixelCNNNet(1, hidden=8, num_layers=2)
    >>> net(torch.zeros(2, 1, 5, 5)).shape
    torch.Size([2, 1, 1, 5, 5])
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, num_layers: int = 5, params_per_unit: int = 1,
                 first_kernel: int = 7, kernel: int = 3) -> None:
        super().__init__()
        _check_sizes(in_channels, hidden, num_layers, params_per_unit)
        for name, k in (("first_kernel", first_kernel), ("kernel", kernel)):
            if not isinstance(k, int) or k < 3 or k % 2 == 0:
                raise ValueError(f"{name}: expected an odd int >= 3, got {k!r}")
        self.in_channels, self.params_per_unit = in_channels, params_per_unit
        self.first = _GatedLayer(in_channels, hidden, first_kernel, first=True)
        self.layers = nn.ModuleList(_GatedLayer(hidden, hidden, kernel, first=False) for _ in range(num_layers))
        self.head = _Head(hidden, params_per_unit * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, h = self.first(x, x)
        for layer in self.layers:
            v, h = layer(v, h)
        out = self.head(h)
        return out.reshape(x.shape[0], self.params_per_unit, self.in_channels, *x.shape[-2:])
