"""Restricted Boltzmann machines, declared as undirected programs of `pyro.factor` potentials.

`RBM`: visible units v in {0,1}^V and hidden units h in {0,1}^H with energy
E(v, h) = -v^T W h - b^T v - c^T h, so p(v, h) = exp(-E(v, h)) / Z. Each unit is declared under
the Bernoulli(1/2) base measure and each term of -E is a potential (a factor).

`GaussianRBM`: real visible units with E(v, h) = |v - b|^2 / (2 sigma^2) - (v / sigma)^T W h - c^T h
(unit variance, or a learned sigma per visible unit); v is declared under the flat measure.

Both offer closed forms that the program implies (and tests check against the derived ones):

- ``energy(v)`` = the free energy F(v) = -log sum_h exp(-E(v, h)), shape (batch,). The program's
  derived energy also counts the Bernoulli(1/2) base measures, so it equals
  F(v) + (V + H) log 2 for the RBM (H log 2 for the Gaussian RBM): a constant, which cancels
  in log p(v) = -energy(v) - log Z as long as Z is computed from the same energy;
- ``p_h_given_v(v)`` and ``p_v_given_h(h)`` (conditional means), and ``gibbs_conditionals()``,
  the site-wise conditional distributions `inference.Gibbs` uses instead of autograd;
- ``free_energy_and_hidden(v)``: F(v) and p(h | v) together, from one product with W (the
  hidden units' input is what both need): contrastive divergence's positive phase and its
  first Gibbs draw from the data share it;
- ``free_energy_backward(v, scale, hidden)``: the gradient of scale * sum_i F(v_i) with respect
  to the parameters, added to their ``.grad`` as ``backward()`` would, in closed form. The energy
  is linear in its parameters given h, so dF/dtheta = E_{h|v}[dE(v, h)/dtheta]: for the RBM
  -v^T p(h|v), -v and -p(h|v) for W, b and c (the Boltzmann learning rule, whose data and model
  terms contrastive divergence subtracts). One product per call and no autograd graph;
- ``sample(n)`` by block Gibbs from noise.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn

from models import checks
from models.registry import register
from pgm import Model

__all__ = ["RBM", "GaussianRBM", "VisibleHidden"]


def _check_batch(arg: str, x, width: int) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{arg}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != width:
        raise ValueError(f"{arg}: expected shape (batch, {width}), got {tuple(x.shape)}")


class VisibleHidden(Model):
    """Base of the Boltzmann machines: `v_dim` visible and `h_dim` hidden units, the
    visible-hidden weights `W` (v_dim, h_dim) drawn with standard deviation `init_scale`, and the
    biases `b` (v_dim,) and `c` (h_dim,). Subclasses write the program and the closed forms."""

    def __init__(self, v_dim: int, h_dim: int, init_scale: float = 0.01) -> None:
        super().__init__()
        v_dim, h_dim = checks.positive_int("v_dim", v_dim), checks.positive_int("h_dim", h_dim)
        init_scale = checks.finite_float("init_scale", init_scale, nonnegative=True)
        self.v_dim, self.h_dim = v_dim, h_dim
        self.W = nn.Parameter(init_scale * torch.randn(v_dim, h_dim))
        self.b = nn.Parameter(torch.zeros(v_dim))
        self.c = nn.Parameter(torch.zeros(h_dim))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.v_dim, dtype=self.dtype, device=self.device),)


class _IndependentHidden:
    """What RBMs share, given `hidden_input(v)` (the logits of p(h | v)) and `visible_energy(v)`
    (the terms of E(v, h) without h): the free energy, p(h | v), and `sample(n)` by block Gibbs
    with the model's closed-form conditionals."""

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = visible_energy(v) - sum_j softplus(hidden_input(v)_j), shape (batch,)."""
        _check_batch("v", v, self.v_dim)
        return self.visible_energy(v) - F.softplus(self.hidden_input(v)).sum(-1)

    def free_energy_and_hidden(self, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The free energy F(v), shape (batch,), and {"h": p(h | v)} (independent Bernoullis,
        batch shape (batch, h_dim)), from one product with W."""
        _check_batch("v", v, self.v_dim)
        a = self.hidden_input(v)
        return self.visible_energy(v) - F.softplus(a).sum(-1), {"h": dist.Bernoulli(logits=a, validate_args=False)}

    def energy(self, v: torch.Tensor) -> torch.Tensor:
        """The free energy of the visible units (hidden units summed out), shape (batch,)."""
        return self.free_energy(v)

    @torch.no_grad()
    def free_energy_backward(self, v: torch.Tensor, scale: float = 1.0, hidden: dict | None = None) -> None:
        """Add the gradient of ``scale * free_energy(v).sum()`` to each trainable parameter's
        ``.grad`` (created where None), as ``backward()`` would, from the closed form
        dF(v)/dtheta = E_{h|v}[dE(v, h)/dtheta] (`_energy_grads`). `v`: (batch, v_dim);
        `hidden`: {"h": p(h | v)} as `free_energy_and_hidden(v)` returns it (computed if None)."""
        _check_batch("v", v, self.v_dim)
        if hidden is None:
            hidden = self.free_energy_and_hidden(v)[1]
        for param, term in self._energy_grads(v, hidden["h"].probs):
            if not param.requires_grad:
                continue
            term = term()
            if isinstance(term, tuple):  # a product a @ b, accumulated in place
                a, b = term
                if param.grad is None:
                    param.grad = torch.mm(a, b * scale)
                else:
                    param.grad.addmm_(a, b, alpha=scale)
            elif param.grad is None:
                param.grad = term.mul_(scale)
            else:
                param.grad.add_(term, alpha=scale)

    def p_h_given_v(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigmoid(hidden_input(v)), shape (batch, h_dim)."""
        return torch.sigmoid(self.hidden_input(v))

    def _hidden_conditional(self, chains) -> dist.Bernoulli:
        return dist.Bernoulli(logits=self.hidden_input(chains["v"]), validate_args=False)

    @torch.no_grad()
    def sample(self, n: int, num_steps: int = 1000, mean: bool = False) -> torch.Tensor:
        """`n` visible samples (n, v_dim) after `num_steps` block-Gibbs sweeps (h | v, then
        v | h) from noise; `mean=True` returns the conditional means E[v | h] of the last sweep."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
        conditionals = self.gibbs_conditionals()
        v = self._initial_visible(n)
        for _ in range(num_steps):
            h = conditionals["h"]({"v": v}).sample()
            pv = conditionals["v"]({"h": h})
            v = pv.sample()
        return pv.mean if mean else v


@register("rbm", v_dim=6, h_dim=4,
          train=dict(settings=dict(h_dim=128), engine="cd", data="digits", epochs=80, batch_size=64, lr=2e-3))
class RBM(_IndependentHidden, VisibleHidden):
    """Bernoulli-Bernoulli RBM with `v_dim` visible and `h_dim` hidden units.

    >>> import pgm
    >>> g = pgm.graph_of(RBM(v_dim=4, h_dim=3), level="unit")
    >>> g.kind, len(g.undirected_edges)
    ('undirected', 12)
    >>> rbm = RBM(v_dim=4, h_dim=3)
    >>> rbm.energy(torch.ones(2, 4)).shape, rbm.sample(5, num_steps=10).shape
    (torch.Size([2]), torch.Size([5, 4]))
    """

    def model(self, v=None):
        n = v.shape[0] if v is not None else 1
        half = torch.full((), 0.5, dtype=self.dtype, device=self.device)
        with pyro.plate("data", n):
            v = pyro.sample("v", dist.Bernoulli(half).expand([self.v_dim]).to_event(1), obs=v)
            h = pyro.sample("h", dist.Bernoulli(half).expand([self.h_dim]).to_event(1))
            pyro.factor("interaction", ((v @ self.W) * h).sum(-1))
            pyro.factor("visible_bias", v @ self.b)
            pyro.factor("hidden_bias", h @ self.c)

    # ------------------------------------------------------------------ closed forms
    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = -v^T W h - b^T v - c^T h per row, shape (batch,)."""
        return -((v @ self.W) * h).sum(-1) - v @ self.b - h @ self.c

    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """c + v W: the logits of p(h_j = 1 | v), shape (batch, h_dim)."""
        return torch.addmm(self.c, v, self.W) if v.dim() == 2 else v @ self.W + self.c

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        """-b^T v: the terms of E(v, h) without h, shape (batch,)."""
        return -(v @ self.b)

    def _energy_grads(self, v: torch.Tensor, p: torch.Tensor):
        """(parameter, thunk of sum_i dF(v_i)/dparameter) pairs, with p = p(h | v); a thunk may
        give a pair (a, b) for the product a @ b, which the caller accumulates in place."""
        return [(self.W, lambda: (v.T, -p)), (self.b, lambda: -v.sum(0)), (self.c, lambda: -p.sum(0))]

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        """-log sum_v exp(-E(v, h)) = -c^T h - sum_i softplus(b_i + W_i: h), shape (batch,)."""
        _check_batch("h", h, self.h_dim)
        return -(h @ self.c) - F.softplus(h @ self.W.T + self.b).sum(-1)

    def p_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        """p(v_i = 1 | h) = sigmoid(b + W h), shape (batch, v_dim)."""
        return torch.sigmoid(h @ self.W.T + self.b)

    def gibbs_conditionals(self) -> dict:
        """Site name -> (chains -> the site's conditional distribution given the other site)."""
        return {
            "h": self._hidden_conditional,
            "v": lambda chains: dist.Bernoulli(logits=torch.addmm(self.b, chains["h"], self.W.T), validate_args=False),
        }

    def _initial_visible(self, n: int) -> torch.Tensor:
        return torch.bernoulli(torch.full((n, self.v_dim), 0.5, dtype=self.dtype, device=self.device))


@register("gaussian_rbm", v_dim=2, h_dim=8,
          train=dict(settings=dict(h_dim=64, sigma=0.3), engine="cd", data="moons", epochs=60, batch_size=128, lr=1e-2))
class GaussianRBM(_IndependentHidden, VisibleHidden):
    """Gaussian-Bernoulli RBM: `v_dim` real visible units, `h_dim` binary hidden units.

    E(v, h) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - sum_ij (v_i / sigma_i) W_ij h_j - c^T h, so
    v | h ~ Normal(b + sigma * (W h), sigma^2) and p(h_j = 1 | v) = sigmoid(c_j + (v / sigma)^T W_:j).
    `sigma` (default 1: standardised data) is the visible units' standard deviation given h,
    fixed with `learn_sigma=False` (default) and its starting value with True (log sigma learned).
    A small fixed sigma makes the model a mixture of many narrow Gaussians (2D toys).

    >>> m = GaussianRBM(v_dim=3, h_dim=2)
    >>> m.energy(torch.zeros(4, 3)).shape, sorted(m.gibbs_conditionals())
    (torch.Size([4]), ['h', 'v'])
    """

    def __init__(self, v_dim: int, h_dim: int, init_scale: float = 0.01, learn_sigma: bool = False,
                 sigma: float = 1.0) -> None:
        super().__init__(v_dim, h_dim, init_scale)
        sigma = checks.finite_float("sigma", sigma, positive=True)
        self.log_sigma = nn.Parameter(torch.full((v_dim,), math.log(sigma)),
                                      requires_grad=checks.boolean("learn_sigma", learn_sigma))

    @property
    def sigma(self) -> torch.Tensor:
        """Standard deviation of each visible unit given h, shape (v_dim,)."""
        return self.log_sigma.exp()

    def model(self, v=None):
        n = v.shape[0] if v is not None else 1
        half = torch.full((), 0.5, dtype=self.dtype, device=self.device)
        sigma = self.sigma
        with pyro.plate("data", n):
            flat = dist.ImproperUniform(constraints.real, (), (self.v_dim,))
            if v is None:
                v = torch.zeros(n, self.v_dim, dtype=self.dtype, device=self.device)
            v = pyro.sample("v", flat, obs=v)
            h = pyro.sample("h", dist.Bernoulli(half).expand([self.h_dim]).to_event(1))
            pyro.factor("interaction", (((v / sigma) @ self.W) * h).sum(-1))
            pyro.factor("visible_quadratic", -((v - self.b) ** 2 / (2 * sigma**2)).sum(-1))
            pyro.factor("hidden_bias", h @ self.c)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row, shape (batch,)."""
        s = self.sigma
        return ((v - self.b) ** 2 / (2 * s**2)).sum(-1) - (((v / s) @ self.W) * h).sum(-1) - h @ self.c

    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """c + (v / sigma) W: the logits of p(h_j = 1 | v), shape (batch, h_dim)."""
        return (v / self.sigma) @ self.W + self.c

    def visible_energy(self, v: torch.Tensor) -> torch.Tensor:
        """sum_i (v_i - b_i)^2 / (2 sigma_i^2): the terms of E(v, h) without h, shape (batch,)."""
        return ((v - self.b) ** 2 / (2 * self.sigma**2)).sum(-1)

    def _energy_grads(self, v: torch.Tensor, p: torch.Tensor):
        """(parameter, thunk of sum_i dF(v_i)/dparameter) pairs, with p = p(h | v) (see RBM's):
        dF/dW = -(v / sigma)^T p, dF/db = -(v - b) / sigma^2, dF/dc = -p and
        dF/dlog sigma = (v / sigma) * (p W^T) - (v - b)^2 / sigma^2."""
        s = self.sigma
        return [
            (self.W, lambda: ((v / s).T, -p)),
            (self.b, lambda: -((v - self.b) / s**2).sum(0)),
            (self.c, lambda: -p.sum(0)),
            (self.log_sigma, lambda: ((v / s) * (p @ self.W.T) - ((v - self.b) / s) ** 2).sum(0)),
        ]

    def p_v_given_h(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] = b + sigma * (W h), shape (batch, v_dim)."""
        return self.b + self.sigma * (h @ self.W.T)

    def gibbs_conditionals(self) -> dict:
        """Site name -> (chains -> the site's conditional distribution given the other site)."""
        return {
            "h": self._hidden_conditional,
            "v": lambda chains: dist.Normal(self.p_v_given_h(chains["h"]), self.sigma.expand(chains["h"].shape[0], -1)),
        }

    def log_partition(self) -> torch.Tensor:
        """Exact log Z of `energy` (a scalar): the Gaussian integral over v in closed form for each
        of the 2^h_dim hidden states (h_dim <= 20), then a logsumexp over them."""
        if self.h_dim > 20:
            raise ValueError(f"h_dim: exact log Z enumerates 2^h_dim hidden states; h_dim={self.h_dim} > 20")
        from pgm.enumerate import joint_support

        h = joint_support(dist.Bernoulli(torch.full((), 0.5, dtype=self.dtype, device=self.device)).expand([self.h_dim]).to_event(1))
        s = self.sigma
        m = self.b + s * (h @ self.W.T)  # mean of v given h
        # integral over v of exp(-|v-b|^2/(2s^2) + (v/s)^T W h) = (2 pi)^(V/2) prod(s) exp((|m|^2 - |b|^2)/(2 s^2))
        log_int = 0.5 * self.v_dim * math.log(2 * math.pi) + self.log_sigma.sum() + ((m**2 - self.b**2) / (2 * s**2)).sum(-1)
        return torch.logsumexp(h @ self.c + log_int, dim=0)

    def _initial_visible(self, n: int) -> torch.Tensor:
        return self.b.detach() + self.sigma.detach() * torch.randn(n, self.v_dim, dtype=self.dtype, device=self.device)
