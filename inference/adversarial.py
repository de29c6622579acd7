"""Adversarial training of implicit models: the engine owns the discriminator.

A GAN's program is z ~ p(z), x = G(z) (the observed x a Delta at G(z)): it has no likelihood, so
ELBO engines refuse it. `Adversarial` trains it against a discriminator D, a learned two-sample
test between the data and the program's samples. D belongs to the engine: it is in neither the
model's parameters, its state, nor its graph; its weights, its optimiser and the generator's
moving average are in the engine's `state_dict`, so `inference.fit` resumes exactly.

The losses, with r = D(x_real) and f = D(G(z)) the discriminator's outputs (logits for the first
two, scores otherwise), and what each minimises at the optimal D:

=================  ====================================  ===========================  ==========================
loss               discriminator minimises               generator minimises          divergence
=================  ====================================  ===========================  ==========================
``minimax``        softplus(-r) + softplus(f)            -softplus(f) = log(1 - D)    Jensen-Shannon (2 JS - log 4)
``nonsaturating``  softplus(-r) + softplus(f)            softplus(-f) = -log D        same fixed points, strong early gradients
``lsgan``          ((r - 1)^2 + f^2) / 2                 (f - 1)^2 / 2                Pearson chi^2 (Mao et al. 2017)
``hinge``          relu(1 - r) + relu(1 + f)             -f                           (Lim & Ye 2017; Miyato et al. 2018)
``wgan-gp``        f - r + gp_weight * GP                -f                           Wasserstein-1 (Gulrajani et al. 2017)
=================  ====================================  ===========================  ==========================

(means over the batch). GP is ``E (|grad D(x_hat)| - 1)^2`` at ``x_hat = e x_real + (1 - e) x_fake``,
e ~ U(0, 1) per example; ``r1=gamma`` adds ``gamma / 2 * E |grad D(x_real)|^2`` (Mescheder et al.
2018) to any loss.

>>> import models
>>> engine = Adversarial(models.GAN(x_dim=2, z_dim=2, hidden_dims=(8,)), loss="hinge", hidden_dims=(8,))
>>> sorted(engine.step(torch.randn(16, 2)))
['d_fake', 'd_loss', 'd_real', 'loss']
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import pyro.poutine as poutine
import torch
from torch import nn

import pgm
from inference.choice import add_engine_preset
from inference.discriminators import default_discriminator, spectral_norm as apply_spectral_norm
from inference.engine import Engine, as_args, move_optimizer_state, register_engine

__all__ = ["Adversarial", "LOSSES", "discriminator_loss", "generator_loss", "gradient_penalty", "r1_penalty"]

LOSSES = ("minimax", "nonsaturating", "lsgan", "hinge", "wgan-gp")
_softplus = nn.functional.softplus


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    return loss


def discriminator_loss(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss (without penalties) from its outputs on real and generated data."""
    _check_loss(loss)
    if loss in ("minimax", "nonsaturating"):
        return _softplus(-real).mean() + _softplus(fake).mean()
    if loss == "lsgan":
        return 0.5 * ((real - 1).square().mean() + fake.square().mean())
    if loss == "hinge":
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    return fake.mean() - real.mean()


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's outputs on generated data."""
    _check_loss(loss)
    if loss == "minimax":
        return -_softplus(fake).mean()
    if loss == "nonsaturating":
        return _softplus(-fake).mean()
    if loss == "lsgan":
        return 0.5 * (fake - 1).square().mean()
    return -fake.mean()


def _input_gradient(critic: Callable, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0], -1)


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's ``E (|grad_x critic(x_hat)|_2 - 1)^2`` at ``x_hat = eps real + (1 - eps) fake``,
    `eps` (N,) uniform on [0, 1] unless given; differentiable in the critic's parameters."""
    if eps is None:
        eps = torch.rand(real.shape[0], dtype=real.dtype, device=real.device)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return (_input_gradient(critic, x_hat).norm(dim=1) - 1).square().mean()


def r1_penalty(critic: Callable, real: torch.Tensor) -> torch.Tensor:
    """R1: ``E |grad_x critic(x)|^2`` on real data (the engine adds ``r1 / 2`` times it)."""
    return _input_gradient(critic, real).square().sum(1).mean()


@register_engine("adversarial")
class Adversarial(Engine):
    """Adversarial training of an implicit program z -> x (x a deterministic function of z).

    - `loss`: one of `LOSSES` (table in the module docstring);
    - `discriminator`: a module ``x (N, *x_shape) -> (N,)``, or ``"auto"`` (default), ``"mlp"``,
      ``"conv"`` (`inference.discriminators.default_discriminator`, sized by `hidden_dims` /
      `channels`); it is moved to the model's device and dtype;
    - `d_steps`: discriminator updates per generator update (each on fresh samples, the same real
      batch); `lr`, `d_lr` (default `lr`), `betas`: the two Adam optimisers (TTUR: `d_lr` > `lr`);
    - `gp_weight` (wgan-gp), `r1` (R1 weight gamma, any loss), `spectral_norm` (on every layer of
      the discriminator);
    - `ema`: decay of the moving average of the model's (the generator's) weights, used by
      `sample` and `averaged()`; None or 0 turns it off. The decay ramps up as
      ``min(ema, (1 + t) / (10 + t))`` over generator steps t, so short runs average recent weights.

    `step` returns ``loss`` (the generator's), ``d_loss`` (the discriminator's, penalties
    included), ``d_real`` and ``d_fake`` (mean outputs), and ``gp`` / ``r1`` when on. Models that
    offer ``rsample(n)`` (differentiable draws of x, like `models.GAN`) are sampled through it;
    other programs by running them unconditioned on the batch (Pyro's ``uncondition``).
    """

    requires = frozenset({"program", "latents"})

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        loss: str = "nonsaturating",
        discriminator: nn.Module | str = "auto",
        d_steps: int = 1,
        lr: float = 2e-4,
        d_lr: float | None = None,
        betas: Sequence[float] = (0.5, 0.999),
        gp_weight: float = 10.0,
        r1: float = 0.0,
        spectral_norm: bool = False,
        ema: float | None = 0.999,
        hidden_dims: Sequence[int] = (256, 256),
        channels: int = 32,
    ) -> None:
        super().__init__(model, guide)
        self.loss_name = _check_loss(loss)
        if not isinstance(d_steps, int) or isinstance(d_steps, bool) or d_steps < 1:
            raise ValueError(f"d_steps: expected a positive integer, got {d_steps!r}")
        for name, value in (("lr", lr), ("d_lr", lr if d_lr is None else d_lr)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name}: expected a positive learning rate, got {value!r}")
        if len(tuple(betas)) != 2 or not all(0 <= float(b) < 1 for b in betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas!r}")
        if not gp_weight >= 0 or not r1 >= 0:
            raise ValueError(f"gp_weight, r1: expected non-negative weights, got {gp_weight!r}, {r1!r}")
        if ema is not None and not 0 <= ema < 1:
            raise ValueError(f"ema: expected a decay in [0, 1) or None, got {ema!r}")
        self.d_steps, self.gp_weight, self.r1 = d_steps, float(gp_weight), float(r1)
        self.ema_decay = float(ema) if ema else 0.0
        self.lr, self.d_lr = float(lr), float(lr if d_lr is None else d_lr)
        betas = tuple(float(b) for b in betas)

        params = self.parameters()
        if not params:
            raise ValueError(f"model: {type(self.model).__name__} has no parameters to train")
        example = as_args(self.model.example_inputs(2))[0]
        self.data_shape = tuple(example.shape[1:])
        if isinstance(discriminator, str):
            discriminator = default_discriminator(self.data_shape, discriminator, hidden_dims, channels)
        elif not isinstance(discriminator, nn.Module):
            raise TypeError(f"discriminator: expected an nn.Module or 'auto', 'mlp', 'conv', got {type(discriminator).__name__}")
        if spectral_norm:
            discriminator = apply_spectral_norm(discriminator)
        self.discriminator = discriminator.to(device=self.model.device, dtype=self.model.dtype)
        self.optimizer = torch.optim.Adam(params, lr=self.lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr, betas=betas)
        self.generator_steps = 0
        self._params = params
        self._ema = [p.detach().clone() for p in params] if self.ema_decay else []
        self._fast = callable(getattr(self.model, "rsample", None))
        self._observed = self._data_site()

    # ------------------------------------------------------------------ applicability
    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        reason = super().supports(model)
        if reason is not None:
            return reason
        s = model.structure()
        if len(s.observed) != 1:
            return f"it trains programs with one observed site, and {type(model).__name__} has {len(s.observed)}"
        if not s.point_mass:
            return (f"its observed site {s.observed[0]!r} has a density: Adversarial trains implicit programs, "
                    "whose data are a deterministic function of the latents (a Delta)")
        return None

    def _data_site(self) -> str:
        return self.model.structure().observed[0]

    # ------------------------------------------------------------------ sampling
    def generate(self, batch) -> torch.Tensor:
        """Draws of the program's x, one per datum of `batch`, differentiable in the model's
        parameters."""
        args = as_args(batch)
        if self._fast:
            return self.model.rsample(args[0].shape[0])
        trace = poutine.trace(poutine.uncondition(self.model.model)).get_trace(*args)
        return trace.nodes[self._observed]["value"]

    @contextlib.contextmanager
    def averaged(self):
        """Within this context the model holds the moving average of its weights (no-op without
        `ema`); its own weights come back on exit."""
        if not self._ema:
            yield self.model
            return
        params = self._params
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self._ema):
                p.copy_(a)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)

    def sample(self, n: int) -> torch.Tensor:
        """`n` samples of the model with the averaged weights (`averaged`)."""
        with self.averaged(), torch.no_grad():
            return self.model.sample(n)

    def use_averaged(self) -> None:
        """Copy the averaged weights into the model for good (e.g. before saving it on its own)."""
        if self._ema:
            with torch.no_grad():
                for p, a in zip(self._params, self._ema):
                    p.copy_(a)

    # ------------------------------------------------------------------ training
    def loss(self, batch) -> torch.Tensor:
        """The generator's loss on fresh samples, one per datum of `batch`."""
        return generator_loss(self.loss_name, self.discriminator(self.generate(batch)))

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, metrics: dict) -> torch.Tensor:
        d = self.discriminator
        out_real, out_fake = d(real), d(fake)
        value = discriminator_loss(self.loss_name, out_real, out_fake)
        if self.loss_name == "wgan-gp" and self.gp_weight:
            gp = gradient_penalty(d, real, fake)
            metrics["gp"] = float(gp.detach())
            value = value + self.gp_weight * gp
        if self.r1:
            r1 = r1_penalty(d, real)
            metrics["r1"] = float(r1.detach())
            value = value + 0.5 * self.r1 * r1
        metrics["d_real"], metrics["d_fake"] = torch.stack([out_real.detach().mean(), out_fake.detach().mean()]).tolist()
        return value

    def step(self, batch) -> dict[str, float]:
        real = as_args(batch)[0]
        metrics: dict[str, float] = {}
        for _ in range(self.d_steps):
            with torch.no_grad():
                fake = self.generate(batch)
            metrics["d_loss"] = self._apply(self._discriminator_loss(real, fake, metrics), self.d_optimizer)
        g_loss = generator_loss(self.loss_name, self.discriminator(self.generate(batch)))
        metrics["loss"] = self._apply(g_loss, self.optimizer)
        self.generator_steps += 1
        if self._ema:
            t = self.generator_steps
            decay = min(self.ema_decay, (1 + t) / (10 + t))
            with torch.no_grad():
                torch._foreach_lerp_(self._ema, self._params, 1 - decay)
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            loss=self.loss_name,
            generator_steps=self.generator_steps,
            d_optimizer=self.d_optimizer.state_dict(),
            discriminator=self.discriminator.state_dict(),
            ema=[a.clone() for a in self._ema],
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("loss", self.loss_name) != self.loss_name:
            raise ValueError(f"state: written with loss {state['loss']!r}, this engine uses {self.loss_name!r}")
        if len(state.get("ema", [])) != len(self._ema):
            raise ValueError(f"state: holds {len(state.get('ema', []))} averaged tensors, expected {len(self._ema)} "
                             "(was ema set differently?)")
        super().load_state_dict(state)
        self.generator_steps = int(state["generator_steps"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        with torch.no_grad():
            for a, saved in zip(self._ema, state["ema"]):
                a.copy_(saved)

    def to(self, device=None, dtype=None) -> "Adversarial":
        super().to(device, dtype)
        self.discriminator.to(device=device, dtype=dtype)
        move_optimizer_state(self.d_optimizer, device, dtype)
        self._ema = [a.to(device=device, dtype=dtype) for a in self._ema]
        return self


# Command-line names (`pgm train --engine NAME`); "gan" is the default engine of implicit programs.
add_engine_preset("adversarial", "adversarial")
add_engine_preset("gan", "adversarial", prefer_before="mcmc", loss="nonsaturating")
add_engine_preset("gan-hinge", "adversarial", loss="hinge")
add_engine_preset("lsgan", "adversarial", loss="lsgan")
add_engine_preset("wgan-gp", "adversarial", loss="wgan-gp", d_steps=5, betas=(0.5, 0.9))
