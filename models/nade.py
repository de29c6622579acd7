"""Neural autoregressive distribution estimator (NADE, Larochelle & Murray 2011)."""

from __future__ import annotations

import torch
from torch import nn

from models.autoregressive import AutoregressiveModel, bernoulli
from models import checks
from models.masked_nets import order_and_rank
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
        x_dim, h_dim = checks.positive_int("x_dim", x_dim), checks.positive_int("h_dim", h_dim)
        init_scale = checks.finite_float("init_scale", init_scale, nonnegative=True)
        self.x_dim, self.h_dim = x_dim, h_dim
        self.event_shape = (x_dim,)
        order, rank = order_and_rank(order, x_dim)
        self.register_buffer("order", order)
        self.register_buffer("rank", rank)
        self.W = nn.Parameter(init_scale * torch.randn(h_dim, x_dim))   # columns in generation order
        self.c = nn.Parameter(torch.zeros(h_dim))
        self.V = nn.Parameter(init_scale * torch.randn(x_dim, h_dim))
        self.b = nn.Parameter(torch.zeros(x_dim))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of p(x_u = 1 | x_<u) for every unit u in one O(DH) pass: shape like x.

        Training and evaluation go through `nade_logits` (blocks of units, a hand-written
        backward); when x itself needs gradients (the unit graph's Jacobian) the same numbers
        come from plain autograd over the cumulative sum (`logits_reference`)."""
        if x.requires_grad:
            return self.logits_reference(x)
        xp = x[..., self.order]
        flat = xp.reshape(-1, self.x_dim).to(self.W.dtype)
        out = nade_logits(flat, self.W, self.c, self.V, self.b)
        return out.reshape(xp.shape)[..., self.rank]

    def logits_reference(self, x: torch.Tensor) -> torch.Tensor:
        """`logits` by autograd over an exclusive cumulative sum (one (N, D, H) tensor)."""
        xp = x[..., self.order]                                         # (N, D), generation order
        contrib = xp.unsqueeze(-1) * self.W.T                           # (N, D, H)
        pre = self.c + torch.cumsum(contrib, dim=-2) - contrib          # exclusive cumulative sum
        h = torch.sigmoid(pre)
        return (self.b + (h * self.V).sum(-1))[..., self.rank]

    def conditionals(self, x: torch.Tensor):
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


# ---------------------------------------------------------------------------------------------
# NADE's logits in blocks of units. Plain autograd over the cumulative sum materialises several
# (N, D, H) tensors (157 MB each for N=100, D=784, H=500), so a step is memory bound; here each
# block of B units holds an (N, B, H) slab that stays in cache, and the backward recomputes the
# hidden units of a block from the pre-activation saved at its start instead of storing them.
# ---------------------------------------------------------------------------------------------


def _block_size(n: int, h: int) -> int:
    return max(1, min(64, 400_000 // max(1, n * h)))


def _block_pre(a: torch.Tensor, xb: torch.Tensor, Wb: torch.Tensor) -> torch.Tensor:
    """Pre-activations of a block's units: a + sum over the block's earlier units j of x_j W_j."""
    n = xb.shape[1]
    before = torch.ones(n, n, dtype=xb.dtype, device=xb.device).tril(-1)
    return a.unsqueeze(1) + (xb.unsqueeze(1) * before) @ Wb.T          # (N, B, H)


def _nade_forward(x, W, c, V, b, B):
    N, D = x.shape
    a = c.expand(N, -1).contiguous()
    out = x.new_empty(N, D)
    starts = []
    for s in range(0, D, B):
        e = min(s + B, D)
        starts.append(a)
        xb, Wb = x[:, s:e], W[:, s:e]
        out[:, s:e] = (torch.sigmoid(_block_pre(a, xb, Wb)) * V[s:e]).sum(-1)
        a = torch.addmm(a, xb, Wb.T)
    return out + b, starts


class _NADELogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W, c, V, b, B):
        out, starts = _nade_forward(x, W, c, V, b, B)
        ctx.save_for_backward(x, W, V, *starts)
        ctx.B = B
        return out

    @staticmethod
    def backward(ctx, g):
        x, W, V, *starts = ctx.saved_tensors
        B, D = ctx.B, x.shape[1]
        dW, dV = torch.empty_like(W), torch.empty_like(V)
        later = torch.zeros_like(starts[0])            # sum of d pre over the units of later blocks
        for i in reversed(range(len(starts))):
            s, e = i * B, min((i + 1) * B, D)
            xb, Wb = x[:, s:e], W[:, s:e]
            h = torch.sigmoid(_block_pre(starts[i], xb, Wb))
            gb = g[:, s:e].unsqueeze(-1)
            dV[s:e] = (gb * h).sum(0)
            dpre = h.mul_(1 - h).mul_(gb * V[s:e])                     # (N, B, H)
            after = torch.ones(e - s, e - s, dtype=x.dtype, device=x.device).triu(1)
            S = torch.matmul(after, dpre)                              # S[:, j] = sum over k > j of dpre[:, k]
            S += later.unsqueeze(1)
            dW[:, s:e] = torch.einsum("nj,njh->hj", xb, S)
            later = later + dpre.sum(1)
        return None, dW, later.sum(0), dV, g.sum(0), None


def nade_logits(x: torch.Tensor, W: torch.Tensor, c: torch.Tensor, V: torch.Tensor, b: torch.Tensor,
                block: int | None = None) -> torch.Tensor:
    """NADE's logits for x (N, D) in generation order: b_k + V_k . sigmoid(c + W[:, <k] x_<k),
    computed `block` units at a time (default: an (N, block, H) slab of about 400k numbers), with a
    hand-written backward for W, c, V, b (x gets no gradient: use `NADE.logits_reference`)."""
    B = block or _block_size(x.shape[0], W.shape[0])
    if torch.is_grad_enabled() and any(t.requires_grad for t in (W, c, V, b)):
        return _NADELogits.apply(x, W, c, V, b, B)
    return _nade_forward(x, W, c, V, b, B)[0]
