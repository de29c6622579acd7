"""MADE (Germain et al. 2015): a masked autoencoder whose outputs are autoregressive conditionals."""

from __future__ import annotations

from typing import Sequence

import torch
import pyro.distributions as dist
from pyro.distributions import constraints

from models.autoregressive import Autoregressive, AutoregressiveModel, MaskEnsemble, bernoulli, sequential_sample
from models import checks
from models.masked_nets import MADENet, check_order
from models.registry import register

__all__ = ["MADE", "MixtureMADE"]

LIKELIHOODS = ("bernoulli", "gaussian_mixture")


@register("made", x_dim=6, hidden_dims=(8, 8),
          train=dict(settings=dict(hidden_dims=(256, 256)), engine="mle", data="digits",
                     data_settings=dict(binarize=True), epochs=60, batch_size=64, lr=2e-3))
class MADE(AutoregressiveModel):
    """MADE over `x_dim` units: a `MADENet` with `hidden_dims` (one or more layers) gives each
    unit's conditional from the units before it in its ordering.

    - `likelihood`: "bernoulli" (binary units, one logit each) or "gaussian_mixture" (real units,
      a mixture of `num_components` Gaussians each: 2D toys).
    - `num_masks`: the masks (ordering + connectivity) used in training, one drawn per step
      (`train_log_prob`); 1 is the plain MADE with a fixed ordering (`order`, default 0..D-1).
      With `order_agnostic`, every mask also draws a random ordering; otherwise masks differ only
      in connectivity (connectivity-agnostic training).
    - `ensemble`: how many of those masks `log_prob` and `sample` average over (default all of
      them, up to 16): log p(x) = log mean_k p_k(x), the log of the mean probability.
    - `seed`: masks are a function of (seed, k), so a saved model rebuilds them.

    `complete(x, mask)` samples the missing units exactly from the (ensemble's) conditional: an
    order-agnostic MADE uses orderings that put the observed units first, so any mask works.

    >>> import pgm
    >>> _ = torch.manual_seed(1)
    >>> m = MADE(x_dim=3, hidden_dims=(8,))
    >>> edges = set(pgm.graph_of(m, level="unit").directed_edges)
    >>> edges == {(f"x[{j}]", f"x[{i}]") for i, j in m.net.connectivity().nonzero().tolist()}
    True
    """

    def __init__(self, x_dim: int, hidden_dims: Sequence[int] = (256,), *, num_masks: int = 1,
                 order_agnostic: bool = False, ensemble: int | None = None, order=None,
                 likelihood: str = "bernoulli", num_components: int = 5, direct: bool = False, seed: int = 0) -> None:
        super().__init__()
        x_dim, num_masks = checks.positive_int("x_dim", x_dim), checks.positive_int("num_masks", num_masks)
        hidden_dims = checks.dims("hidden_dims", hidden_dims)
        if ensemble is None:
            ensemble = min(num_masks, 16)
        if not isinstance(ensemble, int) or not 1 <= ensemble <= num_masks:
            raise ValueError(f"ensemble: expected an int in 1..num_masks={num_masks}, got {ensemble!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
        num_components = checks.positive_int("num_components", num_components)
        self.x_dim, self.event_shape = x_dim, (x_dim,)
        self.num_masks, self.order_agnostic, self.ensemble = num_masks, bool(order_agnostic), ensemble
        self.likelihood, self.num_components, self.seed = likelihood, num_components, int(seed)
        per_unit = 1 if likelihood == "bernoulli" else 3 * num_components
        self.register_buffer("base_order", check_order(order, x_dim), persistent=False)
        self.net = MADENet(x_dim, hidden_dims, per_unit, order=self.base_order, direct=direct)
        self._mask = None
        self.use_mask(0)

    # ------------------------------------------------------------------ masks
    def _generator(self, k: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + k)

    def use_mask(self, k: int, order=None) -> None:
        """Set the network's masks to mask `k` (its ordering and connectivity), or to the
        connectivity of mask k with the ordering `order`."""
        key = (k, None if order is None else tuple(torch.as_tensor(order).tolist()))
        if key == self._mask:
            return
        g = self._generator(k)
        if order is None:
            order = torch.randperm(self.x_dim, generator=g) if self.order_agnostic else self.base_order.cpu()
        self.net.set_masks(order=order, generator=g)
        self._mask = key

    @property
    def order(self) -> torch.Tensor:
        """The ordering of the current mask."""
        return self.net.order

    # ------------------------------------------------------------------ conditionals
    def conditionals(self, x: torch.Tensor):
        out = self.net(x)                                              # (N, P, D)
        if self.likelihood == "bernoulli":
            return bernoulli(out[:, 0])
        K = self.num_components
        logits, loc, log_scale = out.reshape(out.shape[0], 3, K, self.x_dim).movedim(-1, -2).unbind(1)
        scale = torch.nn.functional.softplus(log_scale) + 1e-3
        return dist.MixtureSameFamily(dist.Categorical(logits=logits, validate_args=False),
                                      dist.Normal(loc, scale, validate_args=False), validate_args=False)

    @property
    def support(self):
        if self.likelihood == "bernoulli":
            return constraints.independent(constraints.boolean, 1)
        return constraints.independent(constraints.real, 1)

    def member(self, k: int, batch_size: int, order=None) -> Autoregressive:
        """The autoregressive distribution of mask `k` (optionally with ordering `order`)."""
        def conditional(x):
            self.use_mask(k, order)
            return self.conditionals(x)

        self.use_mask(k, order)
        return Autoregressive(conditional, self.event_shape, self.net.order.reshape(-1, 1).cpu().clone(), self.support,
                              (batch_size,), dtype=self.dtype, device=self.device)

    def distribution(self, batch_size: int):
        if self.ensemble == 1:
            return self.member(0, batch_size)
        return MaskEnsemble([self.member(k, batch_size) for k in range(self.ensemble)], (batch_size,))

    def unit_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_u | x_<u) per unit under mask 0 (a mask ensemble has no per-unit factors)."""
        self._check_data(x)
        return self.member(0, x.shape[0]).unit_log_prob(x)

    def train_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The training objective's log-likelihood: under one mask drawn uniformly from the
        `num_masks` (order- and connectivity-agnostic training); the ensemble is for testing."""
        self._check_data(x)
        k = int(torch.randint(self.num_masks, ())) if self.num_masks > 1 else 0
        return self.member(k, x.shape[0]).log_prob(x)

    # ------------------------------------------------------------------ completion
    def completion_distribution(self, observed: torch.Tensor, batch_size: int = 1):
        """The distribution whose conditional `complete` samples for the observed units
        `observed` (a boolean (D,)): the ensemble of masks whose ordering puts the observed units
        first (order-agnostic), or the model's own (fixed order: observed must be a prefix)."""
        observed = observed.reshape(-1).cpu()
        if self.order_agnostic:
            base = self.base_order.cpu()
            order = torch.cat([base[observed[base]], base[~observed[base]]])
        else:
            self._check_prefix(observed.reshape(1, -1), self.base_order.reshape(-1, 1).cpu())
            order = None
        members = [self.member(k, batch_size, order) for k in range(self.ensemble)]
        return members[0] if len(members) == 1 else MaskEnsemble(members, (batch_size,))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, mask) -> torch.Tensor:
        """Fill the missing units of `x` by exact sampling from p(missing | observed) (see
        `completion_distribution`); mask as for `AutoregressiveModel.complete`."""
        mask = self._given_mask(x, mask)
        out = x.clone()
        patterns, which = mask.reshape(x.shape[0], -1).unique(dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows = (which == p).nonzero().flatten()
            xs, ms = x[rows], mask[rows]
            d = self.completion_distribution(pattern, len(rows))
            members = d.members if isinstance(d, MaskEnsemble) else [d]
            # member k is chosen with probability proportional to p_k(observed): its prefix marginal
            obs_lp = torch.stack([(m.unit_log_prob(xs) * ms).sum(-1) for m in members], -1)   # (R, K)
            pick = torch.distributions.Categorical(logits=obs_lp).sample()
            for k in pick.unique().tolist():
                sub = (pick == k).nonzero().flatten()
                m = members[k]
                out[rows[sub]] = sequential_sample(m.conditional, m.steps, xs[sub], given=xs[sub], mask=ms[sub])
        self._mask = None
        self.use_mask(0)
        return out


@register("made_mog", x_dim=2, hidden_dims=(16,), num_components=3,
          train=dict(settings=dict(hidden_dims=(64, 64), num_components=8), engine="mle", data="moons",
                     epochs=60, batch_size=128, lr=3e-3))
class MixtureMADE(MADE):
    """MADE for real-valued data: each conditional p(x_i | x_<i) is a mixture of
    `num_components` Gaussians (the 2D toys: exact density, drawn on a grid).

    >>> MixtureMADE(x_dim=2, hidden_dims=(8,), num_components=2).sample(3).shape
    torch.Size([3, 2])
    """

    def __init__(self, x_dim: int, hidden_dims: Sequence[int] = (64, 64), *, num_components: int = 8, **kwargs) -> None:
        super().__init__(x_dim, hidden_dims, likelihood="gaussian_mixture", num_components=num_components, **kwargs)
