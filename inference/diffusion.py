"""The simplified diffusion objective (Ho et al. 2020), with an exponential moving average.

``inference.SVI(ddpm)`` maximises the DDPM's true ELBO (its guide is the fixed forward process),
but needs all T sites per datum. In practice one trains with the *simplified* objective: draw
one step t ~ U{1..T} and one noise eps ~ N(0, I) per datum, form x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps, and regress the network's output on its target,

    L_simple = E_{t, x_0, eps} mean_d (target - net(x_t, t, y))^2,

where the target is what the model's network predicts (``model.prediction``): the noise eps, the
data x_0, or the velocity v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0. Up to a weight per
step this is the ELBO, and it is multi-level denoising score matching (the score of q(x_t) is
-eps / sqrt(1 - alpha_bar_t)).

Every step also reports an unbiased one-draw estimate of the ELBO from the same network output,
``elbo`` = -(L_T + T * L_{t-1}) (nats per datum; the KL term in closed form at the drawn t),
and ``bits_per_dim`` = -elbo / (D ln 2). `DDPM.elbo(x)` evaluates the bound with every step.

- `label_dropout` p: for a conditional model (batches ``(x, y)``), each label is replaced by the
  "no label" token with probability p, so one network learns p(x | y) and p(x) (classifier-free
  guidance, Ho & Salimans 2022).
- `ema_decay`: an exponential moving average of the model's parameters (None: none), with the
  warm-up decay_n = min(decay, (1 + n) / (10 + n)) at update n. It is engine state (saved and
  resumed exactly); `averaged()` swaps it into the model for sampling or evaluation, and
  `ema_model_state(checkpoint)` reads it back from a run's checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch

import pgm
from inference.engine import Engine, as_args, register_engine
from inference.evaluate import register_method
from inference.maximum_likelihood import make_optimizer

__all__ = ["Diffusion", "ema_model_state"]  # and the evaluation method "elbo" (inference.evaluate)


@register_engine("diffusion", "ddpm_simple")
class Diffusion(Engine):
    """Train a diffusion model (`models.DDPM`) with the simplified objective (module docstring).

    - `optim`, `lr`, further keywords: the optimiser (`make_optimizer`);
    - `ema_decay`: the weights' moving average (None: no average);
    - `label_dropout`: the probability of dropping a label (conditional models);
    - `grad_clip`: clip the gradient's norm to this value (None: no clipping).

    >>> import torch, models
    >>> ddpm = models.DDPM(x_dim=2, num_steps=10, hidden_dim=8, num_layers=1)
    >>> engine = Diffusion(ddpm, lr=1e-3)
    >>> sorted(engine.step(torch.randn(16, 2)))
    ['bits_per_dim', 'elbo', 'loss']
    """

    requires = frozenset({"program"})

    def __init__(self, model: Any, guide: Callable | None = None, *, optim="adam", lr: float = 2e-4,
                 ema_decay: float | None = 0.999, label_dropout: float = 0.1, grad_clip: float | None = 1.0,
                 **optim_kwargs: Any) -> None:
        super().__init__(model, guide)
        if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and not isinstance(ema_decay, bool) and 0.0 <= ema_decay < 1.0):
            raise ValueError(f"ema_decay: expected None or a number in [0, 1), got {ema_decay!r}")
        if not (isinstance(label_dropout, (int, float)) and not isinstance(label_dropout, bool) and 0.0 <= label_dropout <= 1.0):
            raise ValueError(f"label_dropout: expected a probability in [0, 1], got {label_dropout!r}")
        if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            raise ValueError(f"grad_clip: expected None or a positive number, got {grad_clip!r}")
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.label_dropout = float(label_dropout)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)
        self.ema_updates = 0
        self.ema: dict[str, torch.Tensor] | None = None
        self._ema_lists: tuple[list, list] | None = None  # (averages, parameters), in one order, for the fused update
        if self.ema_decay is not None:
            self.ema = {name: p.detach().clone() for name, p in self._named_params()}
        self._clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]

    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        needed = ("q_sample", "target", "vlb_term", "prior_kl", "num_steps")
        if not all(hasattr(model, name) for name in needed):
            return (f"it needs a diffusion model (a forward process q_sample, a network target and the ELBO's "
                    f"terms, as models.DDPM has), and {type(model).__name__} is not one")
        return None

    def validate(self, data) -> None:
        """Reject bad data before training; a conditional model must be given labels, (x, y)."""
        args = as_args(data)
        if getattr(self.model, "num_classes", None) is not None and len(args) < 2:
            raise ValueError(f"data: {type(self.model).__name__} is conditional (num_classes={self.model.num_classes}): "
                             "train it on (x, y) batches with the labels y")
        super().validate(data)

    def _named_params(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    # ------------------------------------------------------------------ the objective
    def _terms(self, batch):
        args = as_args(batch)
        m = self.model
        x = args[0].to(device=m.device, dtype=m.dtype)
        y = args[1] if len(args) > 1 else None
        if y is not None:
            y = m._labels(y, x.shape[0], x.device)
            if self.label_dropout > 0:
                drop = torch.rand(y.shape, device=y.device) < self.label_dropout
                y = torch.where(drop, torch.full_like(y, m.num_classes), y)
        x0 = m.from_data(x)
        t = torch.randint(1, m.num_steps + 1, (x.shape[0],), device=x.device)
        eps = torch.randn_like(x0)
        x_t = m.q_sample(x0, t, eps)
        out = m._net(x_t, t, y)
        return x0, x_t, t, out, m.target(x0, eps, t)

    def loss(self, batch) -> torch.Tensor:
        """L_simple on `batch` (mean over data and dimensions)."""
        _, _, _, out, target = self._terms(batch)
        return (out - target).pow(2).mean()

    def step(self, batch) -> dict[str, float]:
        x0, x_t, t, out, target = self._terms(batch)
        loss = (out - target).pow(2).mean()
        backward = None
        if self.grad_clip is not None:
            params = self._clip_params

            def backward():
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

            # fresh gradients (as without a closure), so that _apply has no buffers to zero in place
            self.optimizer.zero_grad(set_to_none=True)
        value = self._apply(loss, self.optimizer, backward=backward)
        with torch.no_grad():
            m = self.model
            elbo = -float((m.prior_kl(x0) + m.num_steps * m.vlb_term(x0, x_t, t, out.detach())).mean())
        self._update_ema()
        d = math.prod(x0.shape[1:])
        return {"loss": value, "elbo": elbo, "bits_per_dim": -elbo / (d * math.log(2))}

    # ------------------------------------------------------------------ the moving average
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        n = self.ema_updates
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        if self._ema_lists is None:  # built once (and again after load_state_dict / to)
            names, params = zip(*self._named_params())
            self._ema_lists = ([self.ema[k] for k in names], list(params))
        torch._foreach_lerp_(*self._ema_lists, 1.0 - decay)  # one fused pass
        self.ema_updates += 1

    @contextlib.contextmanager
    def averaged(self):
        """Within the block the model holds the averaged weights (restored afterwards)."""
        if self.ema is None:
            yield self.model
            return
        saved = {}
        with torch.no_grad():
            for name, p in self._named_params():
                saved[name] = p.detach().clone()
                p.copy_(self.ema[name])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, p in self._named_params():
                    p.copy_(saved[name])

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged weights in place of the parameters."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            state.update({k: v.clone() for k, v in self.ema.items()})
        return state

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["ema_updates"] = self.ema_updates
        state["ema"] = None if self.ema is None else dict(self.ema)  # references, as torch state dicts hold
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema_updates = int(state.get("ema_updates", 0))
        ema = state.get("ema")
        if (ema is None) != (self.ema is None):
            raise ValueError("state: the checkpoint's moving average does not match this engine's ema_decay setting")
        if ema is not None:
            missing = sorted(set(self.ema) - set(ema))
            if missing:
                raise ValueError(f"state: the checkpoint's moving average lacks parameters {missing[:3]}")
            self.ema = {k: ema[k].to(device=self.ema[k].device, dtype=self.ema[k].dtype).clone() for k in self.ema}
            self._ema_lists = None

    def to(self, device=None, dtype=None) -> "Diffusion":
        super().to(device, dtype)
        if self.ema is not None:
            self.ema = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in self.ema.items()}
            self._ema_lists = None
        return self

    def __repr__(self) -> str:
        return f"Diffusion({type(self.model).__name__}, ema_decay={self.ema_decay})"


def ema_model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """From a checkpoint written by `inference.fit` with a `Diffusion` engine: the model's state
    dict with the averaged weights in place of the parameters (None when it holds no average)."""
    engine_state = checkpoint.get("engine") or {}
    ema = engine_state.get("ema") if isinstance(engine_state, dict) else None
    if ema is None or "model" not in checkpoint:
        return None
    return {**checkpoint["model"], **ema}


@register_method("elbo")
def _elbo(model, guide, x: torch.Tensor) -> torch.Tensor:
    """`log_likelihood(model, x, method="elbo")`: the evidence lower bound of each datum from the
    model's own closed-form bound, ``model.elbo(x)`` (a DDPM: L_T and the KL terms in closed form,
    one draw of x_t per step). `pgm eval` picks it for diffusion models
    (`inference.choice.default_eval_method`); bits/dim follow as -ELBO / (D ln 2). For a model
    with a guide but no closed-form bound, ``method="iwae", num_samples=1`` is its ELBO. A
    conditional DDPM is scored without labels: the bound of p(x) under the "no label" model that
    label dropout trains (``model.elbo(x, y)`` gives the conditional one)."""
    bound = getattr(model, "elbo", None)
    if not callable(bound):
        raise ValueError(f"method: 'elbo' needs a model with its own bound elbo(x), and {type(model).__name__} has none; "
                         "use method='iwae' with num_samples=1 for the ELBO through its guide")
    return bound(x)


from inference.choice import add_engine_preset  # noqa: E402

add_engine_preset("diffusion", "diffusion")
