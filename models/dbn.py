"""Deep belief network (Hinton, Osindero & Teh 2006): a stack of RBMs trained greedily.

With layers v = h0, h1, ..., hL, the top two layers form an RBM (undirected) and every lower
layer is generated from the one above through a sigmoid belief net (directed):
p(h_{l-1} = 1 | h_l) = sigmoid(b_l + W_l h_l), with W_l and b_l the weights and visible biases of
the l-th RBM of the stack. The program declares exactly that: the top RBM's `pyro.factor`
potentials and Bernoulli sample sites below it, so its graph is a chain graph (undirected
top, directed down to v). A one-layer DBN is an RBM.

Training is greedy (`DBN.pretrain`): RBM l is trained by `inference.ContrastiveDivergence`
through `inference.fit` on the hidden probabilities p(h_{l-1} | ...) that the trained layers
below give the data. Sampling is top-down: block Gibbs in the top RBM, then one directed pass.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models import checks
from models.rbm import RBM
from models.registry import register
from pgm import Model

__all__ = ["DBN"]


@register("dbn", v_dim=6, hidden_dims=(4, 3),
          train=dict(settings=dict(hidden_dims=(128, 64)), engine="cd", data="digits", epochs=40, batch_size=64, lr=2e-3))
class DBN(Model):
    """Deep belief net with `v_dim` visible units and hidden layers of sizes `hidden_dims`.

    `layers[l]` is the RBM between layer l and layer l + 1 (layer 0 the visible units).

    >>> dbn = DBN(v_dim=6, hidden_dims=(4, 3))
    >>> [tuple(r.W.shape) for r in dbn.layers], dbn.sample(5, num_steps=10).shape
    ([(6, 4), (4, 3)], torch.Size([5, 6]))
    >>> import pgm
    >>> pgm.graph_of(dbn).kind
    'mixed'
    """

    def __init__(self, v_dim: int, hidden_dims: Sequence[int] = (4, 3), init_scale: float = 0.01) -> None:
        super().__init__()
        v_dim = checks.positive_int("v_dim", v_dim)
        dims = checks.dims("hidden_dims", hidden_dims, min_len=1)
        init_scale = checks.finite_float("init_scale", init_scale, nonnegative=True)
        self.v_dim, self.hidden_dims = v_dim, dims
        sizes = [v_dim, *dims]
        self.layers = nn.ModuleList(RBM(a, b, init_scale=init_scale) for a, b in zip(sizes[:-1], sizes[1:]))

    @property
    def sizes(self) -> list[int]:
        return [self.v_dim, *self.hidden_dims]

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.v_dim, dtype=self.dtype, device=self.device),)

    def model(self, v=None):
        n = v.shape[0] if v is not None else 1
        L = len(self.layers)
        half = torch.full((), 0.5, dtype=self.dtype, device=self.device)
        top = self.layers[-1]
        names = ["v"] + [f"h{l}" for l in range(1, L + 1)]
        with pyro.plate("data", n):
            # the top RBM, between layers L-1 and L
            below = pyro.sample(names[L - 1], dist.Bernoulli(half).expand([self.sizes[L - 1]]).to_event(1),
                                obs=v if L == 1 else None)
            above = pyro.sample(names[L], dist.Bernoulli(half).expand([self.sizes[L]]).to_event(1))
            pyro.factor("top_interaction", ((below @ top.W) * above).sum(-1))
            pyro.factor("top_visible_bias", below @ top.b)
            pyro.factor("top_hidden_bias", above @ top.c)
            # the directed layers down to v
            h = below
            for l in range(L - 1, 0, -1):
                rbm = self.layers[l - 1]
                h = pyro.sample(names[l - 1], dist.Bernoulli(logits=h @ rbm.W.T + rbm.b).to_event(1),
                                obs=v if l == 1 else None)
        return h

    # ------------------------------------------------------------------ training and sampling
    def pretrain(self, data: torch.Tensor, *, epochs: int = 10, batch_size: int | None = 100, k: int = 1,
                 persistent: bool = False, lr: float = 1e-3, optim: str = "adam", seed: int | None = None,
                 progress: bool = False, **cd_kwargs: Any) -> list:
        """Greedy layer-wise training: each RBM by contrastive divergence (`inference.fit`) on the
        hidden probabilities the layers below give the data. Returns one `History` per layer."""
        from inference.contrastive_divergence import ContrastiveDivergence
        from inference.fit import fit

        x = getattr(data, "train", data)
        if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != self.v_dim:
            raise ValueError(f"data: expected a tensor of shape (n, {self.v_dim}), got {tuple(getattr(x, 'shape', ()))}")
        x = x.to(device=self.device, dtype=self.dtype)
        histories = []
        for rbm in self.layers:
            engine = ContrastiveDivergence(rbm, k=k, persistent=persistent, lr=lr, optim=optim, **cd_kwargs)
            histories.append(fit(engine, x, epochs=epochs, batch_size=batch_size, device=self.device, seed=seed,
                                 progress=progress, validate=False))
            with torch.no_grad():
                x = rbm.p_h_given_v(x)
        return histories

    @torch.no_grad()
    def sample(self, n: int, num_steps: int = 1000, mean: bool = False) -> torch.Tensor:
        """`n` visible samples (n, v_dim): `num_steps` Gibbs sweeps in the top RBM, then one
        directed pass down; `mean=True` gives p(v = 1 | h1) of that pass instead of a draw."""
        h = self.layers[-1].sample(n, num_steps=num_steps)
        if len(self.layers) == 1:
            return self.layers[0].sample(n, num_steps=num_steps, mean=True) if mean else h
        for l in range(len(self.layers) - 1, 0, -1):
            p = self.layers[l - 1].p_v_given_h(h)
            h = torch.bernoulli(p)
        return p if mean else h
