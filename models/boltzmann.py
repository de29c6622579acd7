"""Boltzmann machine with lateral connections, declared as an undirected program.

Visible units v in {0,1}^V and hidden units h in {0,1}^H with energy
E(v, h) = -v^T W h - (1/2) v^T L v - (1/2) h^T J h - b^T v - c^T h,
where L and J are symmetric with zero diagonal (each unit pair once: sum_{i<j} L_ij v_i v_j).
Each term of -E is a `pyro.factor` potential; units are declared under Bernoulli(1/2).
With L = J = 0 it is an RBM. Its energy (free energy of v) is derived by enumerating the
2^H hidden states; sampling is by `inference.Gibbs`, whose colouring of the Markov network
needs more than two blocks once there are lateral connections.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models import checks
from models.rbm import VisibleHidden
from models.registry import register

__all__ = ["BoltzmannMachine"]


@register("boltzmann_machine", v_dim=6, h_dim=3,
          train=dict(settings=dict(h_dim=12), engine="cd", data="digits", epochs=40, batch_size=64, lr=2e-3))
class BoltzmannMachine(VisibleHidden):
    """General (semi-restricted when `hidden_lateral=False`) Boltzmann machine.

    - `visible_lateral` / `hidden_lateral`: whether v-v / h-h connections exist;
    - `init_scale`: standard deviation of the initial weights.

    >>> import pgm
    >>> bm = BoltzmannMachine(v_dim=3, h_dim=2)
    >>> g = pgm.graph_of(bm, level="unit")
    >>> len(g.undirected_edges)  # 3*2 visible-hidden, 3 visible-visible, 1 hidden-hidden
    10
    >>> bm.energy(torch.ones(4, 3)).shape
    torch.Size([4])
    """

    def __init__(self, v_dim: int, h_dim: int, init_scale: float = 0.01, visible_lateral: bool = True,
                 hidden_lateral: bool = True) -> None:
        super().__init__(v_dim, h_dim, init_scale)
        self.visible_lateral = checks.boolean("visible_lateral", visible_lateral)
        self.hidden_lateral = checks.boolean("hidden_lateral", hidden_lateral)
        # Only the strict upper triangle is used: symmetric with zero diagonal by construction.
        self.L_raw = nn.Parameter(init_scale * torch.randn(v_dim, v_dim), requires_grad=self.visible_lateral)
        self.J_raw = nn.Parameter(init_scale * torch.randn(h_dim, h_dim), requires_grad=self.hidden_lateral)

    @staticmethod
    def _symmetric(raw: torch.Tensor) -> torch.Tensor:
        upper = torch.triu(raw, diagonal=1)
        return upper + upper.T

    @property
    def L(self) -> torch.Tensor:
        """Visible-visible weights (v_dim, v_dim): symmetric, zero diagonal (zero if not lateral)."""
        return self._symmetric(self.L_raw) if self.visible_lateral else torch.zeros_like(self.L_raw)

    @property
    def J(self) -> torch.Tensor:
        """Hidden-hidden weights (h_dim, h_dim): symmetric, zero diagonal (zero if not lateral)."""
        return self._symmetric(self.J_raw) if self.hidden_lateral else torch.zeros_like(self.J_raw)

    def model(self, v=None):
        n = v.shape[0] if v is not None else 1
        half = torch.full((), 0.5, dtype=self.dtype, device=self.device)
        with pyro.plate("data", n):
            v = pyro.sample("v", dist.Bernoulli(half).expand([self.v_dim]).to_event(1), obs=v)
            h = pyro.sample("h", dist.Bernoulli(half).expand([self.h_dim]).to_event(1))
            pyro.factor("interaction", ((v @ self.W) * h).sum(-1))
            if self.visible_lateral:
                pyro.factor("visible_lateral", 0.5 * ((v @ self.L) * v).sum(-1))
            if self.hidden_lateral:
                pyro.factor("hidden_lateral", 0.5 * ((h @ self.J) * h).sum(-1))
            pyro.factor("visible_bias", v @ self.b)
            pyro.factor("hidden_bias", h @ self.c)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) per row, shape (batch,) (no base-measure constant)."""
        return -(((v @ self.W) * h).sum(-1) + 0.5 * ((v @ self.L) * v).sum(-1) + 0.5 * ((h @ self.J) * h).sum(-1)
                 + v @ self.b + h @ self.c)
