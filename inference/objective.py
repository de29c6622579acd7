"""The model's own objective: minimise `model.loss(batch)` by gradient steps.

For models trained by an objective that is not a likelihood bound of their program, such as the
VQ-VAE (reconstruction through the straight-through estimator, plus codebook and commitment
terms: the code assignment is an argmin, so no ELBO gradient reaches the encoder). The model
states the objective as a method ``loss(*batch) -> (batch,) or scalar`` (and optionally
``loss_terms(*batch) -> dict`` of per-datum terms, reported as metrics); the engine owns the
optimiser, steps through `Engine._apply` (finiteness check, gradient averaging under torchrun),
and fits into `inference.fit` like every other engine.

>>> import torch, models, inference
>>> vq = models.VQVAE(x_dim=16, num_codes=8, code_dim=2, num_latents=2, hidden_dims=(16,))
>>> engine = inference.Objective(vq, lr=1e-2)
>>> sorted(engine.step(torch.bernoulli(torch.full((4, 16), 0.5))))
['codebook', 'commitment', 'loss', 'reconstruction']
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import pgm
from inference.engine import Engine, as_args, register_engine
from inference.maximum_likelihood import make_optimizer

__all__ = ["Objective"]


@register_engine("objective", "loss")
class Objective(Engine):
    """Minimise the model's own `loss(*batch)` (mean over the batch) with `optim` at `lr`.

    `reset_dead_codes_every`: for models with ``reset_dead_codes(x)`` (the VQ-VAE), call it on
    the current batch every that many steps (None: never); the count of codes reset is
    reported as the metric ``"codes_reset"``.
    """

    def __init__(self, model: Any, guide: Callable | None = None, *, optim="adam", lr: float = 1e-3,
                 reset_dead_codes_every: int | None = None, **optim_kwargs: Any) -> None:
        super().__init__(model, guide)
        if reset_dead_codes_every is not None:
            if not isinstance(reset_dead_codes_every, int) or reset_dead_codes_every < 1:
                raise ValueError(f"reset_dead_codes_every: expected a positive int or None, got {reset_dead_codes_every!r}")
            if not callable(getattr(self.model, "reset_dead_codes", None)):
                raise ValueError(f"reset_dead_codes_every: {type(self.model).__name__} has no reset_dead_codes(x)")
        self.reset_dead_codes_every = reset_dead_codes_every
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)

    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        if not callable(getattr(model, "loss", None)):
            return f"it needs the model's own objective, a method loss(batch), and {type(model).__name__} has none"
        return None

    def loss(self, batch) -> torch.Tensor:
        value = self.model.loss(*as_args(batch))
        return value.mean() if value.dim() else value

    def step(self, batch) -> dict[str, float]:
        args = as_args(batch)
        metrics: dict[str, float] = {}
        terms_fn = getattr(self.model, "loss_terms", None)
        value = self._apply(self.loss(batch), self.optimizer)
        metrics["loss"] = value
        if callable(terms_fn):
            with torch.no_grad():
                for name, term in terms_fn(*args).items():
                    if torch.is_tensor(term) and term.is_floating_point():
                        metrics[name] = float(term.mean())
        if self.reset_dead_codes_every and self.num_steps % self.reset_dead_codes_every == 0:
            with torch.no_grad():
                metrics["codes_reset"] = float(self.model.reset_dead_codes(args[0]))
        return metrics
