"""Langevin samplers for continuous models: unadjusted (ULA), Metropolis-adjusted (MALA) and
annealed Langevin dynamics over a sequence of noise levels (Song & Ermon 2019).

All three move real-valued data along the model's score s(x) = grad_x log p(x) = -grad_x E(x):

- ULA: x <- x + eps s(x) + noise_scale sqrt(2 eps) N(0, I). Exact as eps -> 0; at a finite step
  it samples a slightly wider distribution (for a Gaussian of variance v, v / (1 - eps / (2 v))).
  ``noise_scale < 1`` gives the "SGLD-style" dynamics used to train deep EBMs (Du & Mordatch
  2019; Grathwohl et al. 2019), which no longer sample exp(-E) but train well.
- MALA: the same proposal, accepted or rejected by Metropolis-Hastings, so exp(-E) is exactly
  invariant; the acceptance rate is tracked, and with ``adapt_step_size=True`` the step size
  follows a Robbins-Monro rule toward ``target_accept`` (0.574, optimal for MALA; Roberts &
  Rosenthal 1998). Adaptation breaks detailed balance: use it during burn-in, then set
  ``sampler.adapt_step_size = False``.
- Annealed: for each noise level sigma_i of a decreasing sequence `sigmas`, `num_steps` ULA
  steps of size alpha_i = eps sigma_i^2 / sigma_L^2 using the score at that noise level. One
  `step` of the annealed sampler is one whole pass through the levels (the way NCSN samples).

How a model gives its score (`score_of`), in order of preference:

1. a method ``model.score(x, sigma=None)`` (a score network, e.g. a noise-conditional one:
   `sigma` is a tensor of shape (batch,), one noise level per datum; a ``score(x)`` without a
   sigma argument is called without it);
2. an energy that takes a noise level, ``model.energy(x, sigma=...)``: the score is
   ``-grad energy(x, sigma=sigma)``;
3. ``-grad model.energy(x)`` (the noise level then only sets the annealed step sizes).

A bare score network (an ``nn.Module`` that is not a `pgm.Model`) is wrapped by `ScoreNetwork`
(give its data shape: ``Langevin(net, x_shape=(2,), ...)``).

Gradients are taken with respect to x only (`torch.autograd.grad`): sampling never accumulates
gradients in the model's parameters. Discrete models are refused (use `inference.Gibbs`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

import pgm
from inference.engine import EngineError, as_args
from inference.sampler import Chains, Sampler
from pgm.program import isolated

__all__ = ["Langevin", "ScoreNetwork", "score_of", "has_score", "accepts_sigma", "energy_and_score", "check_sigmas"]

METHODS = ("ula", "mala", "annealed")
INITS = ("noise", "data", "persistent")


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
def accepts_sigma(fn: Callable, *, named_only: bool = False) -> bool:
    """Whether `fn` takes a noise level: a parameter named ``sigma``, or (unless `named_only`)
    a second positional parameter."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.name == "sigma" for p in params):
        return True
    if named_only:
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def _call_with_sigma(fn: Callable, x: torch.Tensor, sigma: torch.Tensor | None, *, named_only: bool = False) -> torch.Tensor:
    if sigma is None or not accepts_sigma(fn, named_only=named_only):
        return fn(x)
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        named = "sigma" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        named = False
    return fn(x, sigma=sigma) if named else fn(x, sigma)


def has_score(model: Any) -> bool:
    """Whether `model` gives its score directly (a callable ``score`` attribute)."""
    return callable(getattr(model, "score", None))


def _sigma_tensor(sigma, x: torch.Tensor) -> torch.Tensor | None:
    """A noise level as a tensor of shape (batch,) in x's dtype and device."""
    if sigma is None:
        return None
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma


def score_of(model: Any, x: torch.Tensor, sigma=None, *, create_graph: bool = False, energy_fn: Callable | None = None) -> torch.Tensor:
    """The score grad_x log p(x) of each datum (shape of x), at noise level `sigma` (None, a
    float, or a tensor of shape (batch,)) where the model takes one (see the module docstring).

    `create_graph=False` (sampling): x is detached, the result too, and no parameter gradient is
    built. `create_graph=True` (score matching): x must require grad and the result stays a
    differentiable function of x and of the parameters. `energy_fn` replaces the model's energy.
    """
    sigma = _sigma_tensor(sigma, x)
    if energy_fn is None and has_score(model):
        if create_graph:
            return _call_with_sigma(model.score, x, sigma)
        with torch.no_grad():
            return _call_with_sigma(model.score, x.detach(), sigma).detach()
    energy = energy_fn if energy_fn is not None else model.energy
    if create_graph:
        if not x.requires_grad:
            raise ValueError("score_of(create_graph=True): x must require grad")
        e = _call_with_sigma(energy, x, sigma, named_only=True)
        (grad,) = torch.autograd.grad(e.sum(), x, create_graph=True)
        return -grad
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = _call_with_sigma(energy, x, sigma, named_only=True)
        (grad,) = torch.autograd.grad(e.sum(), x)
    return -grad.detach()


def energy_and_score(energy_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(x), -grad_x E(x)), both detached; gradients with respect to x only."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy_fn(x)
        if e.shape != x.shape[:1]:
            raise ValueError(f"energy: expected one value per chain, shape ({x.shape[0]},), got {tuple(e.shape)}")
        (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), -grad.detach()


def check_sigmas(sigmas, argname: str = "sigmas") -> list[float]:
    """Noise levels as a list of positive floats in strictly decreasing order."""
    if torch.is_tensor(sigmas):
        sigmas = sigmas.detach().flatten().tolist()
    try:
        values = [float(s) for s in sigmas]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{argname}: expected a sequence of positive noise levels, got {sigmas!r}") from error
    if not values or any(not math.isfinite(s) or s <= 0 for s in values):
        raise ValueError(f"{argname}: expected a non-empty sequence of positive noise levels, got {values}")
    if any(a <= b for a, b in zip(values[:-1], values[1:])):
        raise ValueError(f"{argname}: expected strictly decreasing noise levels (largest first), got {values}")
    return values


# ---------------------------------------------------------------------------------------------
# A bare score network as a model
# ---------------------------------------------------------------------------------------------
class ScoreNetwork(pgm.Model):
    """A score network `net` (``net.score(x, sigma=None)``, or ``net(x)`` / ``net(x, sigma)``)
    as a `pgm.Model` over data of shape `x_shape`: its program declares x under the flat
    measure, and it offers `score` but no energy, log density or sampler of its own.

    >>> import torch
    >>> m = ScoreNetwork(torch.nn.Linear(2, 2), x_shape=2)
    >>> m.score(torch.zeros(3, 2)).shape, "energy" in m.capabilities()
    (torch.Size([3, 2]), False)
    """

    def __init__(self, net: nn.Module | Callable, x_shape) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a score network (an nn.Module), got {type(net).__name__}")
        if x_shape is None:
            raise ValueError("x_shape: a bare score network needs the data's shape, e.g. x_shape=(2,)")
        self.x_shape = (int(x_shape),) if isinstance(x_shape, int) else tuple(int(v) for v in x_shape)
        if not self.x_shape or any(v < 1 for v in self.x_shape):
            raise ValueError(f"x_shape: expected a positive int or a tuple of positive ints, got {x_shape!r}")
        self.net = net

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.x_shape, dtype=self.dtype, device=self.device),)

    def model(self, x: torch.Tensor):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.ImproperUniform(constraints.real, (), self.x_shape), obs=x)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        fn = self.net.score if callable(getattr(self.net, "score", None)) else self.net
        return _call_with_sigma(fn, x, sigma)

    def missing(self, capability: str) -> str | None:
        if capability in ("energy", "log_prob", "sample"):
            return "it is a score network: it gives the gradient of the log density, not the density"
        return super().missing(capability)


def as_score_model(model: Any, x_shape=None) -> Any:
    """`model` itself, or a bare score network (an nn.Module that is not a `pgm.Model`) wrapped
    as a `ScoreNetwork`."""
    if isinstance(model, nn.Module) and not isinstance(model, pgm.Model):
        return ScoreNetwork(model, x_shape)
    return model


def _refuse_unless_continuous(who: str, model: pgm.Model, *, need_energy: bool = False) -> None:
    name = type(model).__name__
    reason = model.missing("continuous")
    if reason is not None:
        raise EngineError(
            f"{who} cannot sample {name}: {reason}. Langevin dynamics move real-valued data along "
            "the gradient of the energy; for discrete (binary) models use inference.Gibbs."
        )
    if need_energy:
        reason = model.missing("energy")
        if reason is not None:
            raise EngineError(f"{who} needs the model's energy (for the Metropolis-Hastings test), and {name} lacks it: {reason}")
    elif not has_score(model):
        reason = model.missing("energy")
        if reason is not None:
            raise EngineError(
                f"{who} cannot sample {name}: it needs a differentiable energy or a `score(x, sigma=None)` method, "
                f"and {reason}"
            )


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------
class Langevin(Sampler):
    """Langevin dynamics for a continuous model (see the module docstring).

    - `step_size` eps; `num_steps`: the default length of `run` and `sample` (for
      ``method="annealed"``: the steps at each noise level, T);
    - `method`: ``"ula"``, ``"mala"`` or ``"annealed"`` (which needs `sigmas`, decreasing);
    - `noise_scale`: multiplies the sqrt(2 eps) noise (1: true Langevin dynamics);
    - `init`: where `initial_chains` / `sample` start: ``"noise"`` (init_scale * N(0, I);
      `init_scale` defaults to 1, or to sigmas[0] when annealing), ``"data"`` (the given data)
      or ``"persistent"`` (the chains of the previous `sample` call, kept in `state_dict`);
    - `adapt_step_size`, `target_accept`, `adapt_rate`: MALA's step-size adaptation;
    - `final_denoise`: annealed only, end each pass with the denoising step
      x + sigma_L^2 s(x, sigma_L) (Song & Ermon 2020);
    - `energy_fn`: a callable x -> energies (batch,) replacing the model's energy (e.g. the
      tempered energies of annealed importance sampling); it may be changed between steps;
    - `x_shape`: the data shape, only for a bare score network;
    - `progress`: a progress bar (tqdm) over the steps of `run` (over the levels when annealing).

    Chains are ``{site: x}`` with the model's observed site name (``model.structure().observed[0]``).

    >>> import torch
    >>> from models.ebm import GaussianEBM
    >>> sampler = Langevin(GaussianEBM(2), step_size=0.1, num_steps=200, method="mala")
    >>> x = sampler.sample(1000)
    >>> x.shape, 0.3 < sampler.acceptance_rate <= 1.0
    (torch.Size([1000, 2]), True)
    """

    requires = frozenset({"continuous"})

    def __init__(
        self,
        model: Any,
        *,
        step_size: float = 0.01,
        num_steps: int = 100,
        method: str = "ula",
        noise_scale: float = 1.0,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        init: str = "noise",
        init_scale: float | None = None,
        adapt_step_size: bool = False,
        target_accept: float = 0.574,
        adapt_rate: float = 0.05,
        final_denoise: bool = False,
        energy_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        x_shape=None,
        progress: bool = False,
    ) -> None:
        model = as_score_model(model, x_shape)
        if not isinstance(model, pgm.Model):
            raise TypeError(f"model: expected a pgm.Model (or a score network with x_shape=), got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        if energy_fn is None:
            _refuse_unless_continuous("Langevin", model, need_energy=(method == "mala"))
        elif not callable(energy_fn):
            raise TypeError(f"energy_fn: expected a callable x -> energies, got {type(energy_fn).__name__}")
        super().__init__(model)
        _positive("step_size", step_size)
        _positive("noise_scale", noise_scale, allow_zero=True)
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
            raise ValueError(f"num_steps: expected a non-negative int, got {num_steps!r}")
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if not 0.0 < float(target_accept) < 1.0:
            raise ValueError(f"target_accept: expected a probability in (0, 1), got {target_accept!r}")
        self.method = method
        self.step_size = float(step_size)
        self.num_steps = num_steps
        self.noise_scale = float(noise_scale)
        self.sigmas: list[float] | None = None
        if method == "annealed":
            if sigmas is None:
                raise ValueError("sigmas: method='annealed' needs a decreasing sequence of noise levels")
            if num_steps < 1:
                raise ValueError("num_steps: annealed Langevin needs at least 1 step per noise level")
            self.sigmas = check_sigmas(sigmas)
        elif sigmas is not None:
            raise ValueError(f"sigmas: only method='annealed' uses noise levels (method={method!r})")
        if final_denoise and method != "annealed":
            raise ValueError("final_denoise: only for method='annealed'")
        self.init_mode = init
        if init_scale is None:
            init_scale = self.sigmas[0] if self.sigmas else 1.0
        _positive("init_scale", init_scale)
        self.init_scale = float(init_scale)
        self.adapt_step_size = bool(adapt_step_size)
        self.target_accept = float(target_accept)
        self.adapt_rate = float(adapt_rate)
        self.final_denoise = bool(final_denoise)
        self.progress = bool(progress)
        self.energy_fn = energy_fn
        self.num_accepted = 0
        self.num_proposed = 0
        self.last_acceptance_rate: float | None = None
        self._persistent: Chains | None = None
        observed = model.structure().observed
        if not observed:
            raise ValueError(f"{type(model).__name__}: its program observes no site: nothing to sample")
        self.site = observed[0]
        with isolated(), torch.no_grad():
            value = model.trace().nodes[self.site]["value"]
        self.x_shape = tuple(value.shape[1:])

    # ------------------------------------------------------------------ scores and energies
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """The energy the chains target, per chain (`energy_fn` or the model's)."""
        return (self.energy_fn or self.model.energy)(x)

    def score(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """The score at x (at noise level `sigma`), detached."""
        return score_of(self.model, x, sigma, energy_fn=self.energy_fn)

    # ------------------------------------------------------------------ the Sampler protocol
    def init(self, data) -> Chains:
        """Chains started at the data (a copy)."""
        x = as_args(data)[0] if not torch.is_tensor(data) else data
        if not torch.is_tensor(x) or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"data: expected a tensor of shape (n, *{self.x_shape}), got {tuple(getattr(x, 'shape', ()))}")
        return {self.site: x.detach().to(device=self.model.device, dtype=self.model.dtype).clone()}

    def init_random(self, n: int) -> Chains:
        """`n` chains started from noise, init_scale * N(0, I)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive number of chains, got {n!r}")
        x = torch.randn(n, *self.x_shape, device=self.model.device, dtype=self.model.dtype)
        return {self.site: self.init_scale * x}

    def initial_chains(self, n: int | None = None, data=None) -> Chains:
        """Chains started as `init` says: noise (`n` of them), the `data`, or the persistent chains
        of the previous `sample` call (noise when there are none, or not `n` of them)."""
        if self.init_mode == "data":
            if data is None:
                raise ValueError("data: init='data' starts the chains at data; pass data=")
            return self.init(data)
        if data is not None:
            return self.init(data)
        if n is None:
            raise ValueError("n: the number of chains is needed (or pass data=)")
        if self.init_mode == "persistent" and self._persistent is not None and self.visible(self._persistent).shape[0] == n:
            return self._persistent
        return self.init_random(n)

    def visible(self, chains: Chains) -> torch.Tensor:
        return chains[self.site]

    @torch.no_grad()
    def step(self, chains: Chains) -> Chains:
        """One transition: one ULA or MALA update, or one whole annealed pass."""
        x = chains[self.site]
        if self.method == "ula":
            x = self._ula(x, self.step_size)
        elif self.method == "mala":
            x = self._mala(x)
        else:
            x = self._annealed(x)
        return {**chains, self.site: x}

    def run(self, chains: Chains, num_steps: int | None = None) -> Chains:
        """`num_steps` transitions (default: `num_steps` for ULA/MALA, one pass when annealing)."""
        if num_steps is None:
            num_steps = 1 if self.method == "annealed" else self.num_steps
        if self.progress and self.method != "annealed":
            if not isinstance(num_steps, int) or num_steps < 0:
                raise ValueError(f"num_steps: expected a non-negative int, got {num_steps!r}")
            from tqdm.auto import tqdm

            with torch.no_grad():
                for _ in tqdm(range(num_steps), desc=f"Langevin ({self.method})", leave=False):
                    chains = self.step(chains)
            return chains
        return super().run(chains, num_steps)

    @torch.no_grad()
    def sample(self, n: int | None = None, data=None, num_steps: int | None = None) -> torch.Tensor:
        """Run chains from `initial_chains(n, data)` and return their final states (n, *x_shape)."""
        chains = self.run(self.initial_chains(n, data), num_steps)
        if self.init_mode == "persistent":
            self._persistent = chains
        return self.visible(chains)

    @property
    def acceptance_rate(self) -> float | None:
        """MALA: the fraction of proposals accepted so far (None before any)."""
        return self.num_accepted / self.num_proposed if self.num_proposed else None

    def step_sizes(self) -> list[float]:
        """Annealed: the step size at each noise level, eps sigma_i^2 / sigma_L^2."""
        if self.sigmas is None:
            return [self.step_size]
        last = self.sigmas[-1] ** 2
        return [self.step_size * s**2 / last for s in self.sigmas]

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_size": self.step_size,
            "num_accepted": self.num_accepted,
            "num_proposed": self.num_proposed,
            "chains": None if self._persistent is None else {k: v.clone() for k, v in self._persistent.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_size = float(state["step_size"])
        self.num_accepted = int(state["num_accepted"])
        self.num_proposed = int(state["num_proposed"])
        chains = state.get("chains")
        self._persistent = None if chains is None else {k: v.to(device=self.model.device) for k, v in chains.items()}

    def __repr__(self) -> str:
        return f"Langevin({type(self.model).__name__}, method={self.method!r}, step_size={self.step_size:g})"

    # ------------------------------------------------------------------ the updates
    def _noise(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        return self.noise_scale * math.sqrt(2.0 * eps) * torch.randn_like(x)

    def _ula(self, x: torch.Tensor, eps: float, sigma=None) -> torch.Tensor:
        return x + eps * self.score(x, sigma) + self._noise(x, eps)

    def _mala(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.step_size
        var = 2.0 * eps * self.noise_scale**2  # proposal variance per coordinate
        dims = tuple(range(1, x.dim()))
        e_x, s_x = energy_and_score(self.energy, x)
        y = x + eps * s_x + math.sqrt(var) * torch.randn_like(x)
        e_y, s_y = energy_and_score(self.energy, y)
        log_q_forward = -(y - x - eps * s_x).pow(2).sum(dims) / (2 * var)
        log_q_backward = -(x - y - eps * s_y).pow(2).sum(dims) / (2 * var)
        log_alpha = (e_x - e_y) + log_q_backward - log_q_forward
        log_u = torch.rand_like(log_alpha).log()
        accept = (log_u < log_alpha) & torch.isfinite(log_alpha)
        x = torch.where(accept.reshape(-1, *([1] * (x.dim() - 1))), y, x)
        rate = float(accept.float().mean())
        self.num_accepted += int(accept.sum())
        self.num_proposed += accept.numel()
        self.last_acceptance_rate = rate
        if self.adapt_step_size:
            self.step_size *= math.exp(self.adapt_rate * (rate - self.target_accept))
        return x

    def _annealed(self, x: torch.Tensor) -> torch.Tensor:
        levels = zip(self.sigmas, self.step_sizes())
        if self.progress:
            from tqdm.auto import tqdm

            levels = tqdm(list(levels), desc="annealed Langevin (levels)", leave=False)
        for sigma, alpha in levels:
            for _ in range(self.num_steps):
                x = self._ula(x, alpha, sigma)
        if self.final_denoise:
            sigma = self.sigmas[-1]
            x = x + sigma**2 * self.score(x, sigma)
        return x


def _positive(arg: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{arg}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
