"""Exact maximum likelihood: minimise the mean negative log-likelihood of the data.

For models with an exact `log_prob` (latent-free programs, finite latents summed out, flows,
autoregressive models).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from inference.engine import Engine, as_args, register_engine

__all__ = ["MaximumLikelihood", "make_optimizer", "check_optim", "check_lr", "OPTIMIZERS"]

#: Optimisers by name, for `make_optimizer` (and the command line).
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


def check_optim(optim: Any, *, factories: bool = False) -> Any:
    """Refuse an unknown optimiser when an engine is built, not at its first step: `optim` must be
    a name in `OPTIMIZERS` (any case), a `torch.optim.Optimizer` subclass, or, with
    `factories=True`, a callable `params -> optimizer`. Returns `optim` unchanged.

    >>> check_optim("adamm")
    Traceback (most recent call last):
    ...
    ValueError: optim: unknown optimiser 'adamm'; expected one of adagrad, adam, adamw, rmsprop, sgd, or a torch.optim.Optimizer class
    """
    if isinstance(optim, str):
        if optim.lower() not in OPTIMIZERS:
            raise ValueError(
                f"optim: unknown optimiser {optim!r}; expected one of {', '.join(sorted(OPTIMIZERS))}, "
                f"or a torch.optim.Optimizer class{' or a callable params -> optimizer' if factories else ''}"
            )
        return optim
    if isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer):
        return optim
    if factories and callable(optim) and not isinstance(optim, type):
        return optim
    raise TypeError(
        f"optim: expected a name ({', '.join(sorted(OPTIMIZERS))}) or a torch.optim.Optimizer subclass"
        f"{' or a callable params -> optimizer' if factories else ''}, got {optim!r}"
    )


def check_lr(lr: Any, name: str = "lr") -> float:
    """A learning rate: a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{name}: expected a positive finite learning rate, got {lr!r}")
    return float(lr)


def make_optimizer(optim: str | type[torch.optim.Optimizer], params, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """A torch optimiser over `params`: `optim` is a name in `OPTIMIZERS` or an Optimizer class."""
    check_optim(optim)
    if isinstance(optim, str):
        optim = OPTIMIZERS[optim.lower()]
    check_lr(lr)
    params = list(params)
    if not params:
        raise ValueError("the model has no trainable parameters to optimise")
    return optim(params, lr=lr, **kwargs)


@register_engine("mle", "ml")
class MaximumLikelihood(Engine):
    """Maximum likelihood by gradient descent on ``-model.log_prob(*batch).mean()``.

    `optim`: an optimiser name (``"adam"``, ``"sgd"``, ...; see `OPTIMIZERS`) or a
    `torch.optim.Optimizer` class; `lr` its learning rate; further keyword arguments go to it.
    A model's ``train_log_prob`` replaces ``log_prob`` in the objective where it exists.
    `lr_half_life`: optional step count over which the learning rate halves (lr * 0.5 ** (step /
    lr_half_life), from the engine's step count and the `lr` it was built with, so a resumed run
    continues the same decay).
    `step` returns ``loss`` (= ``nll``, nats per datum) and, when the model's data are
    discrete, ``bits_per_dim``.
    """

    requires = frozenset({"log_prob"})

    def __init__(self, model: Any, guide: Callable | None = None, *, optim="adam", lr: float = 1e-3,
                 lr_half_life: float | None = None, **optim_kwargs) -> None:
        super().__init__(model, guide)
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)
        if lr_half_life is not None and (isinstance(lr_half_life, bool) or not isinstance(lr_half_life, (int, float))
                                         or not (math.isfinite(lr_half_life) and lr_half_life > 0)):
            raise ValueError(f"lr_half_life: expected a positive number of steps, got {lr_half_life!r}")
        self.lr_half_life = None if lr_half_life is None else float(lr_half_life)
        self._base_lr = [g["lr"] for g in self.optimizer.param_groups]
        # discrete data, or a flow scoring discrete data through dequantization (`quantized`)
        self.discrete = self.model.missing("discrete") is None or bool(getattr(self.model, "quantized", False))

    def loss(self, batch) -> torch.Tensor:
        # A model may train on a randomised log-likelihood (MADE's order-agnostic training draws
        # one mask per step); `train_log_prob`, where it exists, is that objective.
        log_prob = getattr(self.model, "train_log_prob", None) or self.model.log_prob
        return -log_prob(*as_args(batch)).mean()

    def step(self, batch) -> dict[str, float]:
        if self.lr_half_life is not None:
            decay = 0.5 ** (self.num_steps / self.lr_half_life)
            for group, base in zip(self.optimizer.param_groups, self._base_lr):
                group["lr"] = base * decay
        nll = self._apply(self.loss(batch), self.optimizer)
        metrics = {"loss": nll, "nll": nll}
        if self.discrete:
            x = as_args(batch)[0]
            metrics["bits_per_dim"] = nll / (math.log(2) * max(x[0].numel(), 1))
        return metrics

