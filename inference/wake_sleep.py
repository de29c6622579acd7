"""Reweighted wake-sleep (Bornschein & Bengio 2015) on Pyro's `ReweightedWakeSleep`, as an `Engine`.

The model and the guide are trained by their own objectives, estimated from `num_particles`
importance samples of the guide per datum:

- wake-theta (model): minimise ``-log (1/K) sum_k p(x, z_k) / q(z_k | x)`` (the negative IWAE
  bound, whose gradient reaches the model's parameters only);
- wake-phi (guide): minimise ``-sum_k w_k log q(z_k | x)`` with the self-normalised weights
  ``w_k``, which fits q to the posterior in the inclusive direction KL(p || q); with
  ``insomnia < 1`` it is mixed with the sleep-phi loss ``-log q(z | x)`` on dreams
  ``(x, z) ~ p``.

Pyro's estimator detaches what each objective must not move, so one backward pass of their sum
gives every parameter the gradient of its own objective; one optimiser (two parameter groups,
`lr` for the model and `guide_lr` for the guide) applies them. Discrete latents need no
reparameterisation here.

`step` returns ``loss`` (the wake-theta loss per datum, i.e. minus the IWAE bound) and
``guide_loss`` (per datum).
"""

from __future__ import annotations

from typing import Any, Callable

import pyro
import torch
from pyro.infer import ReweightedWakeSleep
from pyro.infer.autoguide import AutoNormal
from torch import nn

import pgm
from inference.engine import Engine, EngineError, as_args, register_engine
from inference.engine import move_optimizer_state
from inference.maximum_likelihood import check_lr, check_optim, make_optimizer

__all__ = ["WakeSleep"]


@register_engine("rws", "wake_sleep")
class WakeSleep(Engine):
    """Reweighted wake-sleep (see the module docstring).

    Args:
        model: a `pgm.Model` or a Pyro program (the data are its positional arguments).
        guide: a guide program; default the model's own guide, else an `AutoNormal` (continuous
            latents only).
        num_particles: importance samples per datum (K >= 2).
        insomnia: weight of wake-phi against sleep-phi in the guide's loss (1: wake only; a
            guide used with ``insomnia < 1`` must accept an ``observations`` keyword).
        optim, lr, guide_lr: the optimiser (a name in `inference.maximum_likelihood.OPTIMIZERS`
            or a class) and the learning rates of the model and the guide (`guide_lr`
            defaults to `lr`).
        max_plate_nesting: depth of the program's plates (guessed when None).
    """

    requires = frozenset({"program", "latents", "normalized"})

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        num_particles: int = 5,
        insomnia: float = 1.0,
        optim="adam",
        lr: float = 1e-3,
        guide_lr: float | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        if guide is not None and isinstance(model, pgm.Model):
            super().__init__(model)
            own = guide
        else:
            super().__init__(model, guide)
            own = self.model.guide
        if guide is not None and not callable(guide):
            raise TypeError(f"guide: expected None or a guide program (callable), got {type(guide).__name__}")
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(f"num_particles: reweighted wake-sleep needs an integer >= 2, got {num_particles!r}")
        if not 0.0 <= float(insomnia) <= 1.0:
            raise ValueError(f"insomnia: expected a number in [0, 1], got {insomnia!r}")
        check_optim(optim)  # refused now, not when the optimiser is built on the first batch
        check_lr(lr)
        if guide_lr is not None:
            check_lr(guide_lr, "guide_lr")
        self.num_particles = num_particles
        self.guide = own if own is not None else AutoNormal(self.model.model)
        self.optim, self.lr = optim, float(lr)
        self.guide_lr = self.lr if guide_lr is None else float(guide_lr)
        self.rws = ReweightedWakeSleep(
            num_particles=num_particles,
            insomnia=float(insomnia),
            vectorize_particles=True,
            max_plate_nesting=float("inf") if max_plate_nesting is None else int(max_plate_nesting),
        )
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict | None = None

    # ------------------------------------------------------------------ building
    def _setup(self, args: tuple) -> None:
        with torch.random.fork_rng(), pyro.validation_enabled(False):
            with pyro.poutine.trace(param_only=True) as capture:
                self.rws._loss(self.model.model, self.guide, args, {})  # builds lazy parameters
        model_params = {id(p): p for p in self.model.parameters() if p.requires_grad}
        guide_params = {}
        if isinstance(self.guide, nn.Module):
            guide_params = {id(p): p for p in self.guide.parameters() if p.requires_grad and id(p) not in model_params}
        for site in capture.trace.nodes.values():
            value = site["value"]
            raw = value.unconstrained() if hasattr(value, "unconstrained") else value
            if torch.is_tensor(raw) and raw.requires_grad and id(raw) not in model_params:
                guide_params.setdefault(id(raw), raw)
        groups = [{"params": list(model_params.values()), "lr": self.lr},
                  {"params": list(guide_params.values()), "lr": self.guide_lr}]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise EngineError(f"WakeSleep: {type(self.model).__name__} and its guide have no parameters to train")
        self._model_param_ids = set(model_params)
        self.optimizer = make_optimizer(self.optim, groups, self.lr)
        if self._pending is not None:
            self._load(self._pending)
            self._pending = None

    # ------------------------------------------------------------------ the protocol
    def _losses(self, args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        if self.optimizer is None:
            self._setup(args)
        with pyro.validation_enabled(False):
            theta_loss, phi_loss = self.rws._loss(self.model.model, self.guide, args, {})
        n = args[0].shape[0] if torch.is_tensor(args[0]) and args[0].dim() else 1
        return theta_loss / n, phi_loss / n

    def loss(self, batch) -> torch.Tensor:
        """wake-theta + guide loss, per datum (each parameter's gradient is its own objective's)."""
        theta, phi = self._losses(as_args(batch))
        return theta + phi

    def step(self, batch) -> dict[str, float]:
        theta, phi = self._losses(as_args(batch))
        self._apply(theta + phi, self.optimizer)
        return {"loss": float(theta.detach()), "guide_loss": float(phi.detach())}

    def evidence_bound(self, batch, num_particles: int | None = None) -> float:
        """The IWAE bound per datum with `num_particles` samples (default the engine's), no
        gradients."""
        args = as_args(batch)
        if self.optimizer is None:
            self._setup(args)
        saved = self.rws.num_particles
        self.rws.num_particles = saved if num_particles is None else int(num_particles)
        try:
            with torch.no_grad():
                theta, _ = self._losses(args)
        finally:
            self.rws.num_particles = saved
        return -float(theta)

    def parameters(self) -> list[torch.Tensor]:
        if self.optimizer is None:
            return super().parameters()
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"num_steps": self.num_steps}
        if self.optimizer is None:
            return {**(self._pending or {}), **state}
        state["optimizer"] = self.optimizer.state_dict()
        state["guide_params"] = [p.detach().clone() for p in self.optimizer.param_groups[-1]["params"]
                                 if id(p) not in self._model_param_ids]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.optimizer is None:
            self._pending = dict(state)
        else:
            self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        guide_params = [p for p in self.optimizer.param_groups[-1]["params"] if id(p) not in self._model_param_ids]
        saved = state.get("guide_params") or []
        if saved and len(saved) != len(guide_params):
            raise ValueError(f"state: {len(saved)} guide parameters saved, this engine's guide has {len(guide_params)}")
        with torch.no_grad():
            for p, v in zip(guide_params, saved):
                p.copy_(v)
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def to(self, device=None, dtype=None) -> "WakeSleep":
        super().to(device, dtype)
        if isinstance(self.guide, nn.Module):
            self.guide.to(device=device, dtype=dtype)
        if self.optimizer is not None:
            move_optimizer_state(self.optimizer, device, dtype)
        return self
