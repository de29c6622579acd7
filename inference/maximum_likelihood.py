"""Exact maximum likelihood: minimise the mean negative log-likelihood of the data.

For models with an exact `log_prob` (latent-free programs, finite latents summed out, flows,
autoregressive models).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from inference.engine import Engine, as_args, register_engine

__all__ = ["MaximumLikelihood", "make_optimizer", "OPTIMIZERS"]

#: Optimisers by name, for `make_optimizer` (and the command line).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def make_optimizer(optim: str | type[torch.optim.Optimizer], params, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """A torch optimiser over `params`: `optim` is a name in `OPTIMIZERS` or an Optimizer class."""
    if isinstance(optim, str):
        if optim.lower() not in OPTIMIZERS:
            raise ValueError(f"optim: expected one of {sorted(OPTIMIZERS)} or a torch.optim class, got {optim!r}")
        optim = OPTIMIZERS[optim.lower()]
    elif not (isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer)):
        raise TypeError(f"optim: expected a name or a torch.optim.Optimizer subclass, got {optim!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr: expected a positive learning rate, got {lr!r}")
    params = list(params)
    if not params:
        raise ValueError("the model has no trainable parameters to optimise")
    return optim(params, lr=lr, **kwargs)


@register_engine("mle", "ml")
class MaximumLikelihood(Engine):
    """Maximum likelihood by gradient descent on ``-model.log_prob(*batch).mean()``.

    `optim`: an optimiser name (``"adam"``, ``"sgd"``, ...; see `OPTIMIZERS`) or a
    `torch.optim.Optimizer` class; `lr` its learning rate; further keyword arguments go to it.
    `step` returns ``loss`` (= ``nll``, nats per datum) and, when the model's data are
    discrete, ``bits_per_dim``.
    """

    requires = frozenset({"log_prob"})

    def __init__(self, model: Any, guide: Callable | None = None, *, optim="adam", lr: float = 1e-3, **optim_kwargs) -> None:
        super().__init__(model, guide)
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)
        # discrete data, or a flow scoring discrete data through dequantization (`quantized`)
        self.discrete = self.model.missing("discrete") is None or bool(getattr(self.model, "quantized", False))

    def loss(self, batch) -> torch.Tensor:
        return -self.model.log_prob(*as_args(batch)).mean()

    def step(self, batch) -> dict[str, float]:
        nll = self._apply(self.loss(batch), self.optimizer)
        metrics = {"loss": nll, "nll": nll}
        if self.discrete:
            x = as_args(batch)[0]
            metrics["bits_per_dim"] = nll / (math.log(2) * max(x[0].numel(), 1))
        return metrics

