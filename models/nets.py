"""Neural networks that implement the conditionals of zoo models. They are not part of any
graph: programs call them to get distribution parameters, and callers may pass their own.

Shapes are batch first. Every network follows the device and dtype of its parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["MLP"]


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
        self.heads = tuple(out_dim) if isinstance(out_dim, (tuple, list)) else None
        total = sum(self.heads) if self.heads else int(out_dim)
        dims = [int(in_dim), *map(int, hidden_dims)]
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
