"""Fully visible sigmoid belief net (FVSBN): one logistic regression per unit on the units before it."""

from __future__ import annotations

import torch
from torch import nn

from models.autoregressive import AutoregressiveModel, bernoulli
from models import checks
from models.masked_nets import order_and_rank
from models.registry import register

__all__ = ["FVSBN"]


@register("fvsbn", x_dim=6,
          train=dict(engine="mle", data="digits", data_settings=dict(binarize=True), epochs=100, batch_size=64, lr=1e-2))
class FVSBN(AutoregressiveModel):
    """Fully visible sigmoid belief net over `x_dim` binary units:
    p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_k + sum_{j<k} W_kj x_{o_j}), in the ordering `order`
    (default 0..D-1). D(D+1)/2 parameters.

    >>> import pgm
    >>> g = pgm.graph_of(FVSBN(x_dim=3), level="unit")
    >>> sorted(g.directed_edges)
    [('x[0]', 'x[1]'), ('x[0]', 'x[2]'), ('x[1]', 'x[2]')]
    """

    def __init__(self, x_dim: int, *, order=None, init_scale: float = 0.01) -> None:
        super().__init__()
        x_dim = checks.positive_int("x_dim", x_dim)
        init_scale = checks.finite_float("init_scale", init_scale, nonnegative=True)
        self.x_dim = x_dim
        self.event_shape = (x_dim,)
        order, rank = order_and_rank(order, x_dim)
        self.register_buffer("order", order)
        self.register_buffer("rank", rank)
        self.register_buffer("tril", torch.ones(x_dim, x_dim).tril(-1))
        self.W = nn.Parameter(init_scale * torch.randn(x_dim, x_dim))
        self.b = nn.Parameter(torch.zeros(x_dim))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of p(x_u = 1 | x_<u) for every unit u, in one pass: shape like x."""
        xp = x[..., self.order]
        return (xp @ (self.W * self.tril).T + self.b)[..., self.rank]

    def conditionals(self, x: torch.Tensor):
        return bernoulli(self.logits(x))
