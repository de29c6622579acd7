"""Reverse KL: fit a flow to an unnormalised target density, with no data from it.

The flow q (any model with ``rsample`` and ``log_prob``: the zoo's flows) is the variational
distribution of a target p(x) = exp(-E(x)) / Z known up to Z; the engine minimises

    KL(q || p) - log Z = E_q[ log q(x) - log p~(x) ],   x = f(u), u ~ N(0, I),

by reparameterised gradients. Its negative is a lower bound on log Z (reported as ``log_z_bound``),
with equality when q = p. The target is a Pyro program of the data x with `pyro.factor`
potentials (an energy-based model written as the project writes them: a base measure on x and
factors), a `pgm.Model` with an energy, or a callable ``log_density(x) -> (n,)``.

The same flow object trains by maximum likelihood on samples (forward KL) with
``inference.MaximumLikelihood(flow)``: swapping the engine is changing one argument. Each step
draws as many flow samples as the batch has rows; the batch's values are not used
(`ReverseKL.placeholder(n)` makes a batch of that many rows).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

import pgm
from inference.engine import Engine, EngineError, as_args, register_engine
from inference.maximum_likelihood import make_optimizer

__all__ = ["ReverseKL"]


@register_engine("rkl", "reverse_kl")
class ReverseKL(Engine):
    """Minimise KL(q || p) of the flow `model` to an unnormalised `target` (see the module
    docstring); `optim`, `lr` and further keywords set the optimiser.

    `step` returns ``loss`` (E_q[log q - log p~] per draw) and ``log_z_bound`` (its negative).

    >>> import pyro, pyro.distributions as dist, torch, models
    >>> def target(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    >>> engine = ReverseKL(models.RealNVP(x_dim=2, num_layers=2, hidden_dims=(8,)), target=target)
    >>> sorted(engine.step(engine.placeholder(16)))
    ['log_z_bound', 'loss']
    """

    requires = frozenset({"log_prob", "sample"})

    def __init__(self, model: Any, guide: Callable | None = None, *, target: Any = None, optim="adam", lr: float = 1e-3,
                 **optim_kwargs) -> None:
        super().__init__(model, guide)
        if not callable(getattr(self.model, "rsample", None)):
            raise EngineError(f"ReverseKL needs reparameterised samples: {type(self.model).__name__} has no rsample(n); "
                              "use a flow (models.RealNVP, models.IAF, ...)")
        self.log_target = self._target(target)
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)

    def _target(self, target) -> Callable[[torch.Tensor], torch.Tensor]:
        if target is None:
            raise ValueError("target: expected the unnormalised target (a Pyro program of x with pyro.factor "
                             "potentials, a pgm.Model with an energy, or a callable log density), got None")
        if isinstance(target, pgm.Model):
            reason = target.missing("energy")
            if reason is not None:
                raise ValueError(f"target: {type(target).__name__} has no energy: {reason}")
            return lambda x: -target.energy(x)
        if not callable(target):
            raise TypeError(f"target: expected a Pyro program, a pgm.Model or a callable, got {type(target).__name__}")
        example = self.placeholder(2)
        if _is_program(target, example):
            program = pgm.Model.from_program(target, example_args=(example,))
            return lambda x: -program.energy(x)
        return target

    def placeholder(self, n: int) -> torch.Tensor:
        """A batch of `n` rows (zeros shaped like the flow's data) for `inference.fit`."""
        return torch.zeros(n, *self.model.example_inputs(1)[0].shape[1:], dtype=self.model.dtype, device=self.model.device)

    def _draws(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised draws and their log q (one pass where the flow keeps its transforms'
        caches: the density of a draw is then read off the sampling pass)."""
        m = self.model
        if callable(getattr(m, "distribution", None)) and getattr(m, "dequantizer", None) is None:
            q = m.distribution()
            x = q.rsample((n,))
            return x, q.log_prob(x)
        x = m.rsample(n)
        return x, m.log_prob(x)

    def loss(self, batch) -> torch.Tensor:
        n = as_args(batch)[0].shape[0]
        x, log_q = self._draws(n)
        log_p = self.log_target(x)
        if log_p.shape != log_q.shape:
            raise ValueError(f"target: expected one log density per draw, shape {tuple(log_q.shape)}, got {tuple(log_p.shape)}")
        return (log_q - log_p).mean()

    def step(self, batch) -> dict[str, float]:
        value = self._apply(self.loss(batch), self.optimizer)
        return {"loss": value, "log_z_bound": -value}

    def validate(self, data) -> None:
        x = as_args(data)[0]
        if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError(f"data: expected a tensor whose rows set the draws per step, got {getattr(x, 'shape', type(x).__name__)}")

    def __repr__(self) -> str:
        return f"ReverseKL({type(self.model).__name__})"


def _is_program(fn: Callable, example: torch.Tensor) -> bool:
    """Whether `fn(x)` is a Pyro program (it records sample or factor sites) rather than a
    function returning a log density."""
    import pyro.poutine as poutine

    try:
        with torch.no_grad():
            trace = poutine.trace(fn).get_trace(example)
    except Exception:  # a log density that cannot run under trace is not a program either
        return False
    return any(site["type"] == "sample" for site in trace.nodes.values())


from inference.choice import add_engine_preset  # noqa: E402

add_engine_preset("rkl", "rkl")
