"""Restricted Boltzmann machine, declared as an undirected program of `pyro.factor` potentials.

Visible units v in {0,1}^V and hidden units h in {0,1}^H with energy
E(v, h) = -v^T W h - b^T v - c^T h, so p(v, h) = exp(-E(v, h)) / Z. Each unit is declared
under the Bernoulli(1/2) base measure and each term of -E is a potential (a factor).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models.registry import register
from pgm import Model

__all__ = ["RBM"]


@register("rbm", v_dim=6, h_dim=4)
class RBM(Model):
    """Bernoulli-Bernoulli RBM with `v_dim` visible and `h_dim` hidden units.

    >>> import pgm
    >>> g = pgm.graph_of(RBM(v_dim=4, h_dim=3), level="unit")
    >>> g.kind, len(g.undirected_edges)
    ('undirected', 12)
    """

    def __init__(self, v_dim: int, h_dim: int, init_scale: float = 0.01) -> None:
        super().__init__()
        for arg, value in (("v_dim", v_dim), ("h_dim", h_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected a positive int, got {value!r}")
        self.v_dim, self.h_dim = v_dim, h_dim
        self.W = nn.Parameter(init_scale * torch.randn(v_dim, h_dim))
        self.b = nn.Parameter(torch.zeros(v_dim))
        self.c = nn.Parameter(torch.zeros(h_dim))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.v_dim, dtype=self.dtype, device=self.device),)

    def model(self, v=None):
        n = v.shape[0] if v is not None else 1
        half = torch.full((), 0.5, dtype=self.dtype, device=self.device)
        with pyro.plate("data", n):
            v = pyro.sample("v", dist.Bernoulli(half).expand([self.v_dim]).to_event(1), obs=v)
            h = pyro.sample("h", dist.Bernoulli(half).expand([self.h_dim]).to_event(1))
            pyro.factor("interaction", ((v @ self.W) * h).sum(-1))
            pyro.factor("visible_bias", v @ self.b)
            pyro.factor("hidden_bias", h @ self.c)
