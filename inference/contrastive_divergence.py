"""Contrastive divergence: train an energy by lowering it on data and raising it on samples.

The gradient of the mean negative log-likelihood of an energy-based model is
E_data[grad E(x)] - E_model[grad E(x)]; the loss ``mean E(data) - mean E(negatives)`` (with
the negatives held fixed) has exactly that gradient when the negatives are model samples. For
models with hidden units E is the free energy (hidden units summed out), as `pgm.Model.energy`
defines it. The negatives come from any `inference.sampler.Sampler`:

- CD-k (Hinton 2002): chains restart at the data batch and take `k` transitions;
- persistent CD (Tieleman 2008; ``persistent=True``): the chains carry over from step to step
  (`num_chains` of them, started from the first batch), kept in `state_dict` for an exact resume;
- a replay buffer (Du & Mordatch 2019; ``buffer_size=N``): negatives start from `N` stored
  samples, each re-initialised from noise with probability `reinit_prob`, and go back after
  `k` transitions (for deep EBMs with Langevin).

Where the model offers its free energy's gradient in closed form (``free_energy_backward``, the
RBMs' Boltzmann learning rule -<v p(h|v)^T>), the energies are computed without an autograd
graph and that closed form fills ``.grad``: with CD-k the data's p(h | v) comes from the
sampler's first draw, so a CD-1 step of an RBM costs the five products of a hand-written one.
It is compared with autograd's gradient at the first step (a subclass whose energy it does not
describe falls back to autograd, with a warning); ``closed_form=False`` always uses autograd.

The default sampler is `inference.Gibbs` for discrete models and models with closed-form
conditionals (a Gaussian RBM), and `inference.Langevin` for other continuous ones (MALA from ``step_size=0.05``, adapted toward 57% acceptance; pass a sampler
for deep EBMs, e.g. ``Langevin(model, step_size=..., noise_scale=0.01)``).

Metrics: ``loss``; ``energy_data`` and ``energy_samples`` (means); ``reconstruction_error``
(mean squared difference between a batch and its chains after the sweep from it: CD only, or
with ``reconstruction=True`` one extra transition); and for binary data ``pseudo_likelihood``,
the stochastic estimate D * log sigmoid(E(x~) - E(x)) with one random unit of each datum flipped
(computed on at most `pl_rows` rows of the batch, every `pl_every` steps: it costs another
energy evaluation, a tenth of a CD-1 step of a 784-500 RBM when done every step), per datum.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F

from inference.engine import Engine, as_args, register_engine
from inference.maximum_likelihood import make_optimizer
from inference.sampler import Chains, Sampler

__all__ = ["ContrastiveDivergence"]


def _move(chains: Chains | None, device=None, dtype=None) -> Chains | None:
    if chains is None:
        return None
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in chains.items()}


@register_engine("cd", "contrastive_divergence")
class ContrastiveDivergence(Engine):
    """CD-k, persistent CD and replay-buffer training of a model's energy (see the module docstring).

    - `k`: sampler transitions per update (Gibbs sweeps, Langevin steps);
    - `persistent`: keep the chains between updates; `num_chains` of them (default: the first
      batch's size);
    - `sampler`: any `inference.sampler.Sampler` of the model (default: Gibbs or Langevin);
    - `buffer_size`, `reinit_prob`: the replay buffer (exclusive with `persistent`);
    - `optim`, `lr` and further keyword arguments: the optimiser (`inference.maximum_likelihood.OPTIMIZERS`);
    - `pl_rows`, `pl_every`: rows of the batch used for the pseudo-likelihood estimate (0: none),
      and how often (every `pl_every` steps, the first included; None elsewhere in the history);
    - `reconstruction`: compute the reconstruction error with an extra transition from the
      data when the negatives do not start there (persistent chains, buffers);
    - `closed_form`: where the model offers ``free_energy_backward`` (RBMs), fill the gradient
      from that closed form instead of autograd (checked against autograd at the first step);
    - `energy_penalty` alpha: adds alpha * (mean E(data)^2 + mean E(negatives)^2) to the loss
      (Du & Mordatch 2019), so that the energy's level and scale, which the CD gradient leaves
      free, stay small and short chains keep up with a deep energy; 0 (default) for none (the
      closed form is used only then).

    >>> import torch, inference
    >>> from models.rbm import RBM
    >>> engine = ContrastiveDivergence(RBM(v_dim=6, h_dim=3), k=1, lr=0.01)
    >>> x = torch.bernoulli(torch.full((20, 6), 0.5))
    >>> sorted(engine.step(x))
    ['energy_data', 'energy_samples', 'loss', 'pseudo_likelihood', 'reconstruction_error']
    """

    requires = frozenset({"energy"})

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        k: int = 1,
        persistent: bool = False,
        sampler: Sampler | None = None,
        buffer_size: int | None = None,
        reinit_prob: float = 0.05,
        num_chains: int | None = None,
        optim="adam",
        lr: float = 1e-3,
        pl_rows: int = 16,
        pl_every: int = 10,
        reconstruction: bool = False,
        closed_form: bool = True,
        energy_penalty: float = 0.0,
        **optim_kwargs,
    ) -> None:
        super().__init__(model, guide)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k: expected a positive number of sampler transitions, got {k!r}")
        if buffer_size is not None and (not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size < 1):
            raise ValueError(f"buffer_size: expected a positive int or None, got {buffer_size!r}")
        if buffer_size is not None and persistent:
            raise ValueError("buffer_size: a replay buffer and persistent=True are exclusive; choose one")
        if not (isinstance(reinit_prob, (int, float)) and 0.0 <= reinit_prob <= 1.0):
            raise ValueError(f"reinit_prob: expected a probability in [0, 1], got {reinit_prob!r}")
        if num_chains is not None and (not isinstance(num_chains, int) or num_chains < 1):
            raise ValueError(f"num_chains: expected a positive int or None, got {num_chains!r}")
        if not isinstance(pl_rows, int) or pl_rows < 0:
            raise ValueError(f"pl_rows: expected a non-negative int, got {pl_rows!r}")
        if not isinstance(pl_every, int) or isinstance(pl_every, bool) or pl_every < 1:
            raise ValueError(f"pl_every: expected a positive int, got {pl_every!r}")
        if sampler is None:
            sampler = self._default_sampler(k)
        elif not isinstance(sampler, Sampler):
            raise TypeError(f"sampler: expected an inference.sampler.Sampler, got {type(sampler).__name__}")
        elif sampler.model is not self.model:
            raise ValueError("sampler: it samples another model than the one being trained")
        self.sampler = sampler
        self.k, self.persistent = k, bool(persistent)
        self.buffer_size, self.reinit_prob = buffer_size, float(reinit_prob)
        self.num_chains = num_chains
        self.pl_rows, self.pl_every, self.reconstruction = pl_rows, pl_every, bool(reconstruction)
        self.binary = self.model.missing("discrete") is None
        if isinstance(energy_penalty, bool) or not isinstance(energy_penalty, (int, float)) \
                or not math.isfinite(energy_penalty) or energy_penalty < 0:
            raise ValueError(f"energy_penalty: expected a non-negative finite weight, got {energy_penalty!r}")
        self.energy_penalty = float(energy_penalty)
        self.closed_form = bool(closed_form) and self.energy_penalty == 0.0 and all(
            callable(getattr(self.model, f, None)) for f in ("free_energy_backward", "free_energy_and_hidden")
        )
        self._closed_checked = False
        self.chains: Chains | None = None  # persistent chains
        self.buffer: torch.Tensor | None = None  # replay buffer of visible states
        self.optimizer = make_optimizer(optim, self.parameters(), lr, **optim_kwargs)

    def _default_sampler(self, k: int) -> Sampler:
        if self.model.missing("discrete") is None or callable(getattr(self.model, "gibbs_conditionals", None)):
            from inference.gibbs import Gibbs

            return Gibbs(self.model)
        from inference.langevin import Langevin

        return Langevin(self.model, method="mala", step_size=0.05, adapt_step_size=True, num_steps=k)

    # ------------------------------------------------------------------ negatives
    @torch.no_grad()
    def negatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Negative samples for the batch `x`, and the reconstruction of `x` when the chains
        started at it (else None)."""
        if self.buffer_size is not None:
            return self._from_buffer(x.shape[0]), None
        if self.persistent:
            if self.chains is None:
                n = self.num_chains or x.shape[0]
                start = x if n <= x.shape[0] else x[torch.randint(0, x.shape[0], (n,), device=x.device)]
                self.chains = self.sampler.init(start[:n])
            self.chains = self.sampler.run(self.chains, self.k)
            return self.sampler.visible(self.chains), None
        neg = self.sampler.visible(self.sampler.from_data(x, self.k)[0])
        return neg, neg

    def _from_buffer(self, n: int) -> torch.Tensor:
        if self.buffer is None:
            self.buffer = self.sampler.visible(self.sampler.init_random(self.buffer_size))
        index = torch.randint(0, self.buffer.shape[0], (n,), device=self.buffer.device)
        start = self.buffer[index]
        fresh = torch.rand(n, device=start.device) < self.reinit_prob
        if bool(fresh.any()):
            noise = self.sampler.visible(self.sampler.init_random(int(fresh.sum())))
            start = start.clone()
            start[fresh] = noise
        neg = self.sampler.visible(self.sampler.run(self.sampler.init(start), self.k))
        self.buffer[index] = neg
        return neg

    # ------------------------------------------------------------------ the objective
    def loss(self, batch, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """mean E(batch) - mean E(negatives) (negatives drawn when not given)."""
        x = as_args(batch)[0]
        if negatives is None:
            negatives, _ = self.negatives(x)
        return self.model.energy(x).mean() - self.model.energy(negatives.detach()).mean()

    def step(self, batch) -> dict[str, float]:
        x = as_args(batch)[0]
        closed = self.closed_form
        e_data = hidden = None
        if self.persistent or self.buffer_size is not None:
            neg, recon = self.negatives(x)
        else:  # CD-k: the sampler may hand back the data's energy and p(h | data) from its first draw
            with torch.no_grad() if closed else contextlib.nullcontext():
                chains, e_data, hidden = self.sampler.from_data(x, self.k, energy=True)
            neg = recon = self.sampler.visible(chains)
        neg = neg.detach().to(x.dtype)
        backward = None
        if closed:  # energies without a graph; the gradient from the model's closed form
            with torch.no_grad():
                if e_data is None:
                    e_data, hidden = self.model.free_energy_and_hidden(x)
                e_neg, hidden_neg = self.model.free_energy_and_hidden(neg)

            def backward() -> None:
                self.model.free_energy_backward(x, 1.0 / x.shape[0], hidden)
                self.model.free_energy_backward(neg, -1.0 / neg.shape[0], hidden_neg)
                if not self._closed_checked:
                    self._check_closed_form(x, neg)
        elif e_data is None:  # one call for both phases (energies are per datum): one larger matmul
            energies = self.model.energy(torch.cat([x, neg], 0))
            e_data, e_neg = energies[: x.shape[0]], energies[x.shape[0] :]
        else:
            e_neg = self.model.energy(neg)
        loss = e_data.mean() - e_neg.mean()
        if self.energy_penalty:  # keeps the energies' scale from drifting (Du & Mordatch 2019)
            loss = loss + self.energy_penalty * (e_data.pow(2).mean() + e_neg.pow(2).mean())
        pl = None
        if self.binary and self.pl_rows and self.num_steps % self.pl_every == 0:  # at the parameters of e_data
            rows = min(self.pl_rows, x.shape[0])
            pl = float(self.pseudo_likelihood(x[:rows], e_data[:rows].detach()).mean())
        value = self._apply(loss, self.optimizer, backward=backward)
        metrics = {"loss": value, "energy_data": float(e_data.detach().mean()), "energy_samples": float(e_neg.detach().mean())}
        if pl is not None:
            metrics["pseudo_likelihood"] = pl
        if recon is None and self.reconstruction:
            recon = self.sampler.visible(self.sampler.from_data(x, 1)[0])
        if recon is not None:
            metrics["reconstruction_error"] = float((x - recon).pow(2).reshape(x.shape[0], -1).sum(-1).mean())
        return metrics

    def _check_closed_form(self, x: torch.Tensor, neg: torch.Tensor) -> None:
        """Once: compare the closed-form gradient now in ``.grad`` with autograd's gradient of
        mean F(x) - mean F(neg); on a mismatch (a subclass whose energy the closed form does
        not describe), warn, keep autograd's gradient and use autograd from now on."""
        self._closed_checked = True
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            loss = self.model.energy(x).mean() - self.model.energy(neg).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            g = torch.zeros_like(p) if g is None else g
            closed = torch.zeros_like(p) if p.grad is None else p.grad
            if not torch.allclose(closed, g, rtol=1e-4, atol=1e-5 * (1.0 + float(g.abs().max()))):
                warnings.warn(
                    f"closed_form: {type(self.model).__name__}.free_energy_backward disagrees with autograd's gradient "
                    f"of its energy (largest difference {float((closed - g).abs().max()):.3g}); using autograd"
                )
                for q, h in zip(params, grads):
                    q.grad = None if h is None else h.detach()
                self.closed_form = False
                return

    @torch.no_grad()
    def pseudo_likelihood(self, x: torch.Tensor, energy: torch.Tensor | None = None) -> torch.Tensor:
        """Stochastic pseudo-log-likelihood of binary data, per datum (batch,): D log sigmoid(E(x~) - E(x))
        with one random unit of each datum flipped (D units per datum); `energy`: E(x) if known."""
        flat = x.reshape(x.shape[0], -1)
        d = flat.shape[1]
        j = torch.randint(0, d, (flat.shape[0],), device=x.device)
        flipped = flat.clone()
        rows = torch.arange(flat.shape[0], device=x.device)
        flipped[rows, j] = 1 - flipped[rows, j]
        e = self.model.energy(x) if energy is None else energy
        e_flip = self.model.energy(flipped.reshape(x.shape))
        return d * F.logsigmoid(e_flip - e)

    # ------------------------------------------------------------------ state
    def signature(self) -> dict[str, Any]:
        mode = "persistent" if self.persistent else ("buffer" if self.buffer_size else "cd")
        return {"chains": mode, "sampler": type(self.sampler).__name__}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "chains": None if self.chains is None else {k: v.clone() for k, v in self.chains.items()},
            "buffer": None if self.buffer is None else self.buffer.clone(),
            "sampler": self.sampler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = self.model.device
        self.chains = _move(state.get("chains"), device)
        self.buffer = None if state.get("buffer") is None else state["buffer"].to(device)
        self.sampler.load_state_dict(state.get("sampler", {}))

    def to(self, device=None, dtype=None) -> "ContrastiveDivergence":
        super().to(device, dtype)
        self.chains = _move(self.chains, device, dtype)
        if self.buffer is not None:
            self.buffer = self.buffer.to(device=device, dtype=dtype)
        return self

    def __repr__(self) -> str:
        mode = "persistent" if self.persistent else ("buffer" if self.buffer_size else f"CD-{self.k}")
        return f"ContrastiveDivergence({type(self.model).__name__}, {mode}, k={self.k}, sampler={type(self.sampler).__name__})"
