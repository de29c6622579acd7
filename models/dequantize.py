"""Pre-processing of discrete data for flows: dequantization, the logit transform, bits/dim.

A flow is a density over real vectors; data with `levels` grey levels (k / (levels - 1), k in
{0, ..., levels - 1}, as `pgm.data` stores them in [0, 1]) are made continuous by adding noise
inside each quantization cell: y = (k + u) / levels with u in [0, 1)^D. Then for any density p on
[0, 1]^D and any noise density q(u | x) (Theis et al. 2016; Ho et al. 2019):

    log P(k) >= E_q[ log p(y) - log q(u | x) ] - D log(levels),

with q uniform (`UniformDequantization`, log q = 0) or learned (`VariationalDequantization`, a
conditional flow squashed into the unit cube). Bits per dimension of the *discrete* data are
``-log P(k) / (D log 2)``: uniform 8-bit noise gives 8 bits/dim, as the literature reports.

The logit transform (RealNVP) maps [0, 1] to the real line away from its ends:
logit(alpha + (1 - 2 alpha) y); `logit_transforms` gives it as Pyro transforms from the real line
to [0, 1] (sigmoid, then an affine map), so a flow ending with them is a density on the cube and
its log-determinant counts the pre-processing.

>>> deq = UniformDequantization(levels=17)
>>> y, log_q = deq(torch.tensor([[0.0, 1.0]]))
>>> bool((y >= 0).all() and (y < 1).all()), log_q.shape
(True, torch.Size([1]))
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import transforms as T
from pyro.nn import ConditionalDenseNN
from torch import nn
from torch.distributions.transforms import AffineTransform, IndependentTransform, SigmoidTransform

__all__ = ["UniformDequantization", "VariationalDequantization", "logit_transforms", "bits_per_dim", "quantize",
           "DEQUANTIZATIONS"]

DEQUANTIZATIONS = ("uniform", "variational")


def _levels(levels) -> int:
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"levels: expected the number of grey levels (an int >= 2), got {levels!r}")
    return levels


def bits_per_dim(nll: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Negative log-likelihood in nats per datum -> bits per dimension."""
    return nll / (math.log(2.0) * num_dims)


def quantize(y: torch.Tensor, levels: int) -> torch.Tensor:
    """Continuous values y in [0, 1] -> data on the grid k / (levels - 1) (the cell y falls in)."""
    k = torch.floor(y * levels).clamp(0, levels - 1)
    return k / (levels - 1)


def logit_transforms(event_dim: int, alpha: float = 0.05) -> list:
    """Pyro transforms from the real line to [0, 1]^event (inverse of the logit pre-processing
    u = logit(alpha + (1 - 2 alpha) y)): a sigmoid, then y = (s - alpha) / (1 - 2 alpha)."""
    if not 0 <= alpha < 0.5:
        raise ValueError(f"alpha: expected 0 <= alpha < 0.5, got {alpha!r}")
    sigmoid = IndependentTransform(SigmoidTransform(), event_dim) if event_dim else SigmoidTransform()
    return [sigmoid, AffineTransform(-alpha / (1 - 2 * alpha), 1 / (1 - 2 * alpha), event_dim=event_dim)]


class UniformDequantization(nn.Module):
    """y = (k + u) / levels with u ~ Uniform[0, 1)^D; returns (y, log q = 0 per datum)."""

    def __init__(self, levels: int, event_dim: int = 1):
        super().__init__()
        self.levels, self.event_dim = _levels(levels), int(event_dim)

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """The integer cells k of data x on the grid k / (levels - 1)."""
        return torch.round(x * (self.levels - 1)).clamp(0, self.levels - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand_like(x)
        return (self.cells(x) + u) / self.levels, x.new_zeros(x.shape[: x.dim() - self.event_dim])


class VariationalDequantization(UniformDequantization):
    """u ~ q(u | x): a conditional flow of `num_layers` Pyro affine couplings (context: the datum)
    over a standard Normal, squashed into (0, 1) by a sigmoid. Returns (y, log q(u | x))."""

    def __init__(self, levels: int, x_shape: Sequence[int], hidden_dims: Sequence[int] = (64,), num_layers: int = 2):
        shape = (int(x_shape),) if isinstance(x_shape, int) else tuple(int(v) for v in x_shape)
        super().__init__(levels, event_dim=len(shape))
        self.x_shape, self.dim = shape, math.prod(shape)
        if self.dim < 2:
            raise ValueError(f"x_shape: variational dequantization needs at least 2 values per datum, got {shape}")
        split = self.dim // 2
        hidden = [int(h) for h in hidden_dims]
        self.layers = nn.ModuleList(
            T.ConditionalAffineCoupling(split, ConditionalDenseNN(split, self.dim, hidden, [self.dim - split] * 2))
            for _ in range(int(num_layers))
        )

    def distribution(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """q(u | x) over the unit cube, flat (*batch, D), for data x (*batch, *x_shape)."""
        lead = x.shape[: x.dim() - self.event_dim]
        context = x.reshape(*lead, self.dim) * 2 - 1
        reverse = T.Permute(torch.arange(self.dim - 1, -1, -1, device=x.device))
        chain: list = []
        for i, layer in enumerate(self.layers):
            if i:
                chain.append(reverse)
            chain.append(layer.condition(context))
        chain.append(SigmoidTransform())
        base = dist.Normal(torch.zeros_like(context), torch.ones_like(context)).to_event(1)
        return dist.TransformedDistribution(base, chain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.distribution(x)
        u = q.rsample()
        log_q = q.log_prob(u)  # served by the transforms' caches: no inverse pass
        u = u.clamp(max=1 - torch.finfo(u.dtype).eps).reshape(x.shape)
        return (self.cells(x) + u) / self.levels, log_q
