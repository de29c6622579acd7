"""Neural autoregressive distribution estimator (NADE, Larochelle & Murray 2011)."""

from __future__ import annotations

import torch
from torch import nn

from models.autoregressive import AutoregressiveModel, bernoulli, sequential_sample
from models.masked_nets import check_order
from models.registry import register

__all__ = ["NADE"]


@register("nade", x_dim=6, h_dim=4,
          train=dict(settings=dict(h_dim=100), engine="mle", data="digits", data_settings=dict(binarize=True),
                     epochs=100, batch_size=64, lr=5e-3))
class NADE(AutoregressiveModel):
    """NADE over `x_dim` binary units with `h_dim` hidden units shared by all conditionals:
    h_k = sigmoid(c + W[:, <k] x_{o_<k}),  p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_k + V_k . h_k).

    Evaluation is O(DH) (the pre-activations are a cumulative sum); so is sampling
    (`sample(..., method="incremental")`, the default), which updates the pre-activation by one
    column of W per unit, against O(D^2 H) for the naive sampler (`method="naive"`, one full
    pass per unit). `noise` (n, D) uniforms make the draws reproducible: x_u = [noise_u < p_u].

    >>> m = NADE(x_dim=5, h_dim=3)
    >>> u = torch.rand(4, 5)
    >>> torch.equal(m.sample(4, noise=u), m.sample(4, noise=u, method="naive"))
    True
    """

    def __init__(self, x_dim: int, h_dim: int = 32, *, order=None, init_scale: float = 0.1) -> None:
        super().__init__()
        for name, v in (("x_dim", x_dim), ("h_dim", h_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        self.x_dim, self.h_dim = x_dim, h_dim
        self.event_shape = (x_dim,)
        order = check_order(order, x_dim)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(x_dim)
        self.register_buffer("order", order)
        self.register_buffer("rank", rank)
        self.W = nn.Parameter(init_scale * torch.randn(h_dim, x_dim))   # columns in generation order
        self.c = nn.Parameter(torch.zeros(h_dim))
        self.V = nn.Parameter(init_scale * torch.randn(x_dim, h_dim))
        self.b = nn.Parameter(torch.zeros(x_dim))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of p(x_u = 1 | x_<u) for every unit u in one O(DH) pass: shape like x."""
        xp = x[..., self.order]                                         # (N, D), generation order
        contrib = xp.unsqueeze(-1) * self.W.T                           # (N, D, H)
        pre = self.c + torch.cumsum(contrib, dim=-2) - contrib          # exclusive cumulative sum
        h = torch.sigmoid(pre)
        return (self.b + (h * self.V).sum(-1))[..., self.rank]

    def conditional(self, x: torch.Tensor):
        return bernoulli(self.logits(x))

    def _sampler(self):
        return lambda n: self._incremental(torch.rand(n, self.x_dim, dtype=self.dtype, device=self.device))

    def _incremental(self, noise: torch.Tensor) -> torch.Tensor:
        n = noise.shape[0]
        x = noise.new_zeros(n, self.x_dim)
        a = self.c.expand(n, self.h_dim).clone()
        for k in range(self.x_dim):
            u = int(self.order[k])
            logit = self.b[k] + torch.sigmoid(a) @ self.V[k]
            x[:, u] = (noise[:, u] < torch.sigmoid(logit)).to(x.dtype)
            a += x[:, u, None] * self.W[:, k]
        return x

    def _naive(self, noise: torch.Tensor) -> torch.Tensor:
        x = noise.new_zeros(noise.shape[0], self.x_dim)
        for k in range(self.x_dim):
            u = int(self.order[k])
            x[:, u] = (noise[:, u] < torch.sigmoid(self.logits(x)[:, u])).to(x.dtype)
        return x

    @torch.no_grad()
    def sample(self, n: int, *, noise: torch.Tensor | None = None, method: str = "incremental") -> torch.Tensor:
        """`n` exact draws (n, x_dim); see the class docstring for `noise` and `method`."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if method not in ("incremental", "naive"):
            raise ValueError(f"method: expected 'incremental' or 'naive', got {method!r}")
        if noise is None:
            noise = torch.rand(n, self.x_dim, dtype=self.dtype, device=self.device)
        elif tuple(noise.shape) != (n, self.x_dim):
            raise ValueError(f"noise: expected shape ({n}, {self.x_dim}), got {tuple(noise.shape)}")
        return (self._incremental if method == "incremental" else self._naive)(noise)
