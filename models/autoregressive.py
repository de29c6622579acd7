"""Autoregressive models: the chain rule p(x) = prod_k p(x_{o_k} | x_{o_<k}) over an ordering o.

Every autoregressive model of the zoo (`FVSBN`, `NADE`, `MADE`, `PixelCNN`) is a program with ONE
data site whose distribution is an `Autoregressive` distribution:

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(x.shape[0]), obs=x)

`Autoregressive.log_prob` scores all units in one parallel pass of the model's network
(`conditionals(x)`: the per-unit conditionals p(x_u | x_<u), computed from x with the
autoregressive property), and `sample` draws the units one step at a time in the model's order.
`unit_log_prob(x)` gives log p(x_u | x_<u) per unit, which is how `pgm.graph_of(m,
level="unit")` finds the unit graph by autograd.

`AutoregressiveModel` is the shared base: `log_prob`, `energy`, `sample` and `complete(x, mask)`
(fill the missing units given the observed ones) from a subclass's `conditionals` and `steps`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from pgm import Model

__all__ = ["Autoregressive", "MaskEnsemble", "AutoregressiveModel", "named_mask", "sequential_sample"]


def sequential_sample(conditional: Callable, steps: torch.Tensor, like: torch.Tensor,
                      given: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Draw units one step at a time: `steps` (K, G) holds the flat unit indices generated at each
    of K steps; `like` (B, *event) gives shape, dtype and device. Units where the boolean `mask`
    (B, *event) is True keep their value in `given`. One network pass per step that has a missing
    unit."""
    B = like.shape[0]
    x = (given.clone() if given is not None else torch.zeros_like(like)).reshape(B, -1)
    keep = mask.reshape(B, -1) if mask is not None else torch.zeros_like(x, dtype=torch.bool)
    for step in steps.tolist():
        k = keep[:, step]
        if bool(k.all()):
            continue
        draw = conditional(x.reshape(like.shape)).sample().reshape(B, -1)[:, step].to(x.dtype)
        x[:, step] = torch.where(k, x[:, step], draw)
    return x.reshape(like.shape)


class Autoregressive(TorchDistribution):
    """An autoregressive distribution over `event_shape`: p(x) = prod_u p(x_u | x_<u).

    `conditional(x)` maps a batch x (B, *event_shape) to the per-unit conditionals, a torch
    distribution with batch shape (B, *event_shape) whose parameters at unit u depend only on
    the units generated before u. `steps` (K, G) lists the flat unit indices generated at each
    step (G > 1 for units drawn together, e.g. a pixel's channels). `support` is the data's
    support (with the event dims). `sampler(B)`, when given, replaces the generic sequential
    sampler (NADE's incremental one).

    >>> import torch
    >>> W = torch.tensor([[0., 0.], [2., 0.]])          # unit 1 depends on unit 0
    >>> cond = lambda x: torch.distributions.Bernoulli(logits=x @ W.T)
    >>> d = Autoregressive(cond, (2,), torch.tensor([[0], [1]]), constraints.independent(constraints.boolean, 1))
    >>> d.log_prob(torch.tensor([[0., 0.], [1., 1.]])).exp()
    tensor([0.2500, 0.4404])
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, conditional: Callable, event_shape: Sequence[int], steps: torch.Tensor, support,
                 batch_shape: Sequence[int] = (), *, sampler: Callable | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | None = None) -> None:
        self.conditional = conditional
        self.steps = steps
        self._support = support
        self.sampler = sampler
        self._dtype = dtype or torch.get_default_dtype()
        self._device = device
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self._support

    def expand(self, batch_shape, _instance=None):
        return Autoregressive(self.conditional, self.event_shape, self.steps, self._support, batch_shape,
                              sampler=self.sampler, dtype=self._dtype, device=self._device)

    def _flat(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        n = len(self.event_shape)
        if tuple(value.shape[value.dim() - n:]) != tuple(self.event_shape):
            raise ValueError(f"value: expected shape (..., {', '.join(map(str, self.event_shape))}), got {tuple(value.shape)}")
        lead = value.shape[: value.dim() - n]
        return value.reshape(-1, *self.event_shape), lead

    def unit_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_u | x_<u) for every unit u: shape (..., *event_shape)."""
        flat, lead = self._flat(value)
        return self.conditional(flat).log_prob(flat).reshape(*lead, *self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lp = self.unit_log_prob(value)
        return lp.reshape(*lp.shape[: lp.dim() - len(self.event_shape)], -1).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        B = math.prod(shape)
        if self.sampler is not None:
            x = self.sampler(B)
        else:
            like = torch.zeros(B, *self.event_shape, dtype=self._dtype, device=self._device)
            x = sequential_sample(self.conditional, self.steps, like)
        return x.reshape(*shape, *self.event_shape)


class MaskEnsemble(TorchDistribution):
    """The uniform mixture of K autoregressive distributions (a MADE's mask ensemble):
    log p(x) = log (1/K) sum_k p_k(x), the log of the mean probability; a sample picks a member
    uniformly, then draws from it (exact for the mixture)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, members: Sequence[Autoregressive], batch_shape: Sequence[int] = ()) -> None:
        if not members:
            raise ValueError("members: expected at least one autoregressive distribution")
        self.members = list(members)
        super().__init__(torch.Size(batch_shape), members[0].event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self.members[0].support

    def expand(self, batch_shape, _instance=None):
        return MaskEnsemble([m.expand(batch_shape) for m in self.members], batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lps = torch.stack([m.log_prob(value) for m in self.members])
        return torch.logsumexp(lps, 0) - math.log(len(self.members))

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        B = math.prod(shape)
        which = torch.randint(len(self.members), (B,))
        out = None
        for k in which.unique().tolist():
            rows = (which == k).nonzero().flatten()
            drawn = self.members[k].expand(torch.Size([len(rows)])).sample()
            if out is None:
                out = drawn.new_zeros(B, *self.event_shape)
            out[rows.to(out.device)] = drawn
        return out.reshape(*shape, *self.event_shape)


def named_mask(name: str, event_shape: Sequence[int]) -> torch.Tensor:
    """A boolean mask of observed units by name: "top", "bottom", "left" or "right" half of an
    image (flat square images included: 64 units are 8x8), or "first" / "last" half of the units.

    >>> named_mask("top", (1, 2, 2)).long().tolist()
    [[[1, 1], [0, 0]]]
    """
    shape = tuple(event_shape)
    D = math.prod(shape)
    if name in ("first", "last"):
        m = torch.arange(D) < D // 2
        return (m if name == "first" else ~m).reshape(shape)
    if name not in ("top", "bottom", "left", "right"):
        raise ValueError(f"mask: expected a boolean tensor or one of 'top', 'bottom', 'left', 'right', 'first', "
                         f"'last', got {name!r}")
    if len(shape) >= 2:
        H, W = shape[-2], shape[-1]
    else:
        side = math.isqrt(D)
        if side * side != D:
            raise ValueError(f"mask: {name!r} needs an image; {D} units are not a square image")
        H = W = side
    rows = torch.arange(H)[:, None].expand(H, W)
    cols = torch.arange(W)[None, :].expand(H, W)
    m = {"top": rows < H // 2, "bottom": rows >= H // 2, "left": cols < W // 2, "right": cols >= W // 2}[name]
    return m.expand(*shape[:-2], H, W).reshape(shape) if len(shape) >= 2 else m.reshape(shape)


class AutoregressiveModel(Model):
    """Base of the autoregressive zoo: a subclass sets `event_shape`, `support`, and implements
    `conditionals(x)` (per-unit conditionals, batch (B, *event_shape)) and `steps()` ((K, G) flat
    unit indices in generation order). The program has one data site "x" whose distribution is
    `self.distribution(batch_size)`."""

    event_shape: tuple[int, ...] = ()

    # ------------------------------------------------------------------ to implement
    def conditionals(self, x: torch.Tensor):
        raise NotImplementedError

    def steps(self) -> torch.Tensor:
        """(K, G) flat unit indices generated at each step; default: one unit a step, in `order`."""
        return self.order.reshape(-1, 1).cpu().clone()

    @property
    def support(self):
        return constraints.independent(constraints.boolean, len(self.event_shape))

    def _sampler(self):
        return None

    # ------------------------------------------------------------------ the program
    def distribution(self, batch_size: int):
        """The distribution of the data site for a batch of `batch_size`."""
        return Autoregressive(self.conditionals, self.event_shape, self.steps(), self.support, (batch_size,),
                              sampler=self._sampler(), dtype=self.dtype, device=self.device)

    def model(self, x: torch.Tensor):
        self._check_data(x)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("x", self.distribution(x.shape[0]), obs=x)

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.event_shape, dtype=self.dtype, device=self.device),)

    def _check_data(self, x) -> None:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a tensor of data, got {type(x).__name__}")
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(f"x: expected shape (batch, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")

    # ------------------------------------------------------------------ capabilities
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-likelihood of each datum, one parallel pass: shape (batch,)."""
        self._check_data(x)
        return self.distribution(x.shape[0]).log_prob(x)

    def unit_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_u | x_<u) of every unit: shape like x."""
        self._check_data(x)
        return self.distribution(x.shape[0]).unit_log_prob(x)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x) (the density is normalised)."""
        return -self.log_prob(x)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """`n` exact draws, generated one step at a time: shape (n, *event_shape)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        return self.distribution(n).sample()

    # ------------------------------------------------------------------ completion
    def _given_mask(self, x: torch.Tensor, mask) -> torch.Tensor:
        self._check_data(x)
        if isinstance(mask, str):
            mask = named_mask(mask, self.event_shape)
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise TypeError(f"mask: expected a boolean tensor (True = observed) or a name, got {type(mask).__name__}"
                            + (f" of dtype {mask.dtype}" if torch.is_tensor(mask) else ""))
        try:
            return mask.to(x.device).expand(x.shape).clone()
        except RuntimeError:
            raise ValueError(f"mask: expected a shape that broadcasts to {tuple(x.shape)}, got {tuple(mask.shape)}") from None

    def _check_prefix(self, mask: torch.Tensor, steps: torch.Tensor) -> None:
        """Observed units must be a prefix of the generation order (whole steps)."""
        flat = mask.reshape(mask.shape[0], -1)[:, steps.to(mask.device)]  # (B, K, G)
        whole = flat.all(-1)
        partial = (flat.any(-1) & ~whole).any()
        later = (whole[:, 1:] & ~whole[:, :-1]).any()
        if bool(partial) or bool(later):
            raise ValueError(
                f"mask: {type(self).__name__} generates its units in a fixed order, so exact completion needs the "
                "observed units to come first in that order (a prefix, e.g. mask='top' for raster order); "
                "an order-agnostic MADE completes any mask")

    @torch.no_grad()
    def complete(self, x: torch.Tensor, mask) -> torch.Tensor:
        """Fill the missing units of `x` by exact sampling from p(missing | observed).

        `mask`: boolean, broadcastable to x, True where a unit is observed (or a name: "top",
        "left", ... see `named_mask`). Observed units are returned unchanged. Fixed-order models
        need the observed units to be a prefix of their order (else ValueError).
        """
        mask = self._given_mask(x, mask)
        steps = self.steps()
        self._check_prefix(mask, steps)
        return sequential_sample(self.conditionals, steps, x, given=x, mask=mask)


def bernoulli(logits: torch.Tensor):
    """Per-unit Bernoulli conditionals (no validation: unit graphs probe off the support)."""
    return dist.Bernoulli(logits=logits, validate_args=False)
