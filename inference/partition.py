"""The log partition function log Z = log sum_x exp(-E(x)) of an energy-based model.

`log_partition(model, method=...)` is for the `energy` the model gives (`model.energy`, the free
energy for models with hidden units), so that ``-model.energy(x) - log Z`` is the
log-likelihood (`ais_log_likelihood`).

- ``"exact"``: enumeration, for small models. A model's own closed form ``model.log_partition()``
  where it has one (Gaussian RBM, Gaussian EBM); for an RBM, the sum over the smaller layer using
  the free energy of the other (``hidden_free_energy`` over 2^H hidden states, or ``energy`` over
  2^V visible states); for any other binary model, the sum of exp(-energy) over every visible
  configuration (2^D of them, D <= `max_bits`).
- ``"ais"``: annealed importance sampling (Neal 2001) from a tractable base distribution
  through the geometric path p_beta ∝ p_0^(1-beta) p^beta, beta = betas[0] = 0 < ... < 1:

  * RBMs (Salakhutdinov & Murray 2008): the base is an RBM without weights whose visible biases
    match the data's means (`data=`; else zero biases); the intermediate distributions scale
    the energy of the joint (v, h), so that with h summed out
    log p*_beta(v) = (1-beta) b_A^T v + beta b^T v + sum_j softplus(beta (c_j + v^T W_:j)),
    and each transition is one block-Gibbs sweep (h | v, then v | h) at that beta;
  * continuous models: the base is N(mu, s^2 I) (mu, s the data's means and standard deviations
    when `data=` is given, else 0 and `base_scale`), E_beta = (1-beta) E_0 + beta E, and each
    transition is `mcmc_steps` Metropolis-adjusted Langevin (MALA) steps of `inference.Langevin`
    with step size `step_size`.

  The estimate is log Z_0 + log mean_i exp(w_i) over `num_chains` chains; with
  ``return_details=True`` an `AISResult` also gives its standard error (delta method) and the
  log-weights.

>>> import torch
>>> from models.rbm import RBM
>>> rbm = RBM(v_dim=5, h_dim=3, init_scale=0.5)
>>> exact = log_partition(rbm, method="exact")
>>> ais = log_partition(rbm, method="ais", num_chains=200, num_steps=200)
>>> bool(abs(exact - ais) < 0.1)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

import pgm
from pgm.extract import _is_binary
from pgm.program import isolated, unwrap
from inference.sampler import bernoulli

__all__ = ["log_partition", "ais_log_likelihood", "AISResult", "METHODS"]

METHODS = ("exact", "ais")
#: Largest number of binary units enumerated by method="exact" (2^24 configurations).
MAX_BITS = 24


@dataclass
class AISResult:
    """An AIS estimate: `log_z` (scalar tensor), its standard error `std_error` (nats) and the
    final `log_weights` (num_chains,) (log Z = log_z0 + logmeanexp(log_weights))."""

    log_z: torch.Tensor
    std_error: float
    log_weights: torch.Tensor
    log_z0: float


def log_partition(model: Any, method: str = "exact", *, data: torch.Tensor | None = None, num_chains: int = 100,
                  num_steps: int = 1000, betas=None, mcmc_steps: int = 1, step_size: float = 0.05,
                  base_scale: float = 1.0, max_bits: int = MAX_BITS, return_details: bool = False):
    """log Z of `model.energy` (a scalar tensor): see the module docstring for the methods.

    `data`: (n, *x_shape) data that set the AIS base distribution; `num_chains`: AIS chains;
    `num_steps` or `betas` (an increasing sequence from 0 to 1): the annealing schedule (betas
    default to linspace(0, 1, num_steps + 1)); `mcmc_steps`, `step_size`: MALA transitions
    (continuous models); `max_bits`: the largest enumeration for ``"exact"``.
    `return_details=True` returns an `AISResult` for ``"ais"``.
    """
    if not isinstance(model, pgm.Model):
        raise TypeError(f"model: expected a pgm.Model, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    reason = model.missing("energy")
    if reason is not None:
        raise TypeError(f"model: log Z needs an energy, and {type(model).__name__} has none: {reason}")
    if data is not None and not torch.is_tensor(data):
        data = getattr(data, "train", data)
        if not torch.is_tensor(data):
            raise TypeError(f"data: expected a tensor, got {type(data).__name__}")
    if method == "exact":
        return _exact(model, max_bits)
    for arg, value in (("num_chains", num_chains), ("mcmc_steps", mcmc_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    schedule = _betas(betas, num_steps, model)
    with torch.no_grad():
        if _is_rbm(model):
            result = _ais_rbm(model, schedule, num_chains, data)
        elif model.missing("continuous") is None:
            result = _ais_continuous(model, schedule, num_chains, data, mcmc_steps, step_size, base_scale)
        else:
            raise NotImplementedError(
                f"method='ais': {type(model).__name__} is neither an RBM nor a continuous model; use method='exact' "
                "for small binary models"
            )
    return result if return_details else result.log_z


def ais_log_likelihood(model: Any, data: torch.Tensor, *, log_z: torch.Tensor | float | None = None, method: str = "ais",
                       base_data: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
    """-energy(x) - log Z for each datum, shape (batch,), with log Z from `log_partition(model,
    method, data=base_data, **kwargs)` unless given (`log_z`); the AIS base distribution is fitted
    to `base_data` (default: `data` itself, e.g. pass the training set)."""
    if not torch.is_tensor(data) or data.dim() < 1:
        raise TypeError(f"data: expected a tensor with a batch dimension, got {type(data).__name__}")
    if log_z is None:
        log_z = log_partition(model, method, data=data if base_data is None else base_data, **kwargs)
    with torch.no_grad():
        data = data.to(device=model.device, dtype=model.dtype)
        return -model.energy(data) - torch.as_tensor(log_z, dtype=model.dtype, device=model.device)


# ---------------------------------------------------------------------------------------------
# Exact
# ---------------------------------------------------------------------------------------------
def _is_rbm(model) -> bool:
    return all(hasattr(model, a) for a in ("W", "b", "c", "hidden_free_energy")) and model.missing("discrete") is None


def _binary_configurations(n: int, like: torch.Tensor) -> torch.Tensor:
    codes = torch.arange(2**n, device=like.device)
    bits = (codes.unsqueeze(-1) >> torch.arange(n - 1, -1, -1, device=like.device)) & 1
    return bits.to(like.dtype)


@torch.no_grad()
def _exact(model, max_bits: int) -> torch.Tensor:
    own = getattr(model, "log_partition", None)
    if callable(own):
        return own().detach()
    like = torch.zeros((), dtype=model.dtype, device=model.device)
    if _is_rbm(model) and model.h_dim < model.v_dim:
        if model.h_dim > max_bits:
            raise ValueError(f"max_bits: exact log Z sums over 2^{model.h_dim} hidden states, more than 2^{max_bits}")
        return _logsumexp_chunks(lambda h: -model.hidden_free_energy(h), model.h_dim, like)
    with isolated():
        trace = model.trace()
    site = model.structure().observed[0]
    node = trace.nodes[site]
    if not _is_binary(unwrap(node["fn"])):
        raise ValueError(
            f"method='exact': {type(model).__name__}'s data site {site!r} is not binary and the model has no closed-form "
            "log_partition(); use method='ais'"
        )
    shape = tuple(node["value"].shape[1:])
    d = math.prod(shape)
    if d > max_bits:
        raise ValueError(f"max_bits: exact log Z sums over 2^{d} visible states, more than 2^{max_bits}; use method='ais'")
    return _logsumexp_chunks(lambda v: -model.energy(v.reshape(v.shape[0], *shape)), d, like)


def _logsumexp_chunks(log_f, n_bits: int, like: torch.Tensor, chunk_bits: int = 14) -> torch.Tensor:
    """log sum over all 2^n_bits binary vectors of log_f, in chunks of 2^chunk_bits."""
    if n_bits <= chunk_bits:
        return torch.logsumexp(log_f(_binary_configurations(n_bits, like)), 0)
    low = _binary_configurations(chunk_bits, like)
    parts = []
    for high in _binary_configurations(n_bits - chunk_bits, like):
        x = torch.cat([high.expand(low.shape[0], -1), low], dim=1)
        parts.append(torch.logsumexp(log_f(x), 0))
    return torch.logsumexp(torch.stack(parts), 0)


# ---------------------------------------------------------------------------------------------
# AIS
# ---------------------------------------------------------------------------------------------
def _betas(betas, num_steps: int, model) -> torch.Tensor:
    if betas is None:
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
        return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 2 or float(b[0]) != 0.0 or float(b[-1]) != 1.0 or bool((b[1:] <= b[:-1]).any()):
        raise ValueError(f"betas: expected a strictly increasing sequence from 0 to 1, got {b.tolist()[:5]}... ({b.numel()} values)")
    return b


def _result(log_w: torch.Tensor, log_z0: torch.Tensor) -> AISResult:
    n = log_w.shape[0]
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    w = (log_w - log_w.max()).exp()
    se = float(w.std() / (w.mean() * math.sqrt(n))) if n > 1 else float("nan")
    return AISResult(log_z=log_z0 + log_mean, std_error=se, log_weights=log_w, log_z0=float(log_z0))


def _ais_rbm(model, betas: torch.Tensor, n: int, data) -> AISResult:
    W, b, c = model.W.detach(), model.b.detach(), model.c.detach()
    kw = dict(dtype=W.dtype, device=W.device)
    if data is not None:
        p = data.to(**kw).reshape(data.shape[0], -1).mean(0)
        if p.shape[0] != model.v_dim:
            raise ValueError(f"data: expected rows of {model.v_dim} visible units, got shape {tuple(data.shape)}")
        # smoothed as if one more datum of 1/2 had been seen
        p = (p * data.shape[0] + 0.5) / (data.shape[0] + 1)
        b_a = torch.log(p) - torch.log1p(-p)
    else:
        b_a = torch.zeros(model.v_dim, **kw)
    log_z0 = model.h_dim * math.log(2.0) + F.softplus(b_a).sum()

    def log_f(v_bias_term, pre, beta):  # log p*_beta(v) from b_A^T v, b^T v and c + vW
        return (1 - beta) * v_bias_term[0] + beta * v_bias_term[1] + F.softplus(beta * pre).sum(-1)

    v = bernoulli(torch.sigmoid(b_a).expand(n, -1).contiguous())
    log_w = torch.zeros(n, **kw)
    betas = betas.tolist()
    for prev, beta in zip(betas[:-1], betas[1:]):
        terms = (v @ b_a, v @ b)
        pre = v @ W + c
        log_w += log_f(terms, pre, beta) - log_f(terms, pre, prev)
        if beta < 1.0:
            h = bernoulli(torch.sigmoid(beta * pre))
            v = bernoulli(torch.sigmoid((1 - beta) * b_a + beta * (h @ W.T + b)))
    return _result(log_w, log_z0)


def _ais_continuous(model, betas, n, data, mcmc_steps, step_size, base_scale) -> AISResult:
    from inference.langevin import Langevin

    with isolated():
        trace = model.trace()
    site = model.structure().observed[0]
    shape = tuple(trace.nodes[site]["value"].shape[1:])
    kw = dict(dtype=model.dtype, device=model.device)
    if data is not None:
        x = data.to(**kw)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"data: expected shape (n, *{shape}), got {tuple(x.shape)}")
        mu, s = x.mean(0), x.std(0).clamp_min(1e-3) if x.shape[0] > 1 else torch.ones(shape, **kw)
    else:
        if not (isinstance(base_scale, (int, float)) and base_scale > 0):
            raise ValueError(f"base_scale: expected a positive number, got {base_scale!r}")
        mu, s = torch.zeros(shape, **kw), torch.full(shape, float(base_scale), **kw)
    dims = tuple(range(1, len(shape) + 1))
    log_z0 = (torch.log(s) + 0.5 * math.log(2 * math.pi)).sum()

    def e0(x):
        return ((x - mu) ** 2 / (2 * s**2)).sum(dims)

    x = mu + s * torch.randn(n, *shape, **kw)
    log_w = torch.zeros(n, **kw)
    sampler = Langevin(model, method="mala", step_size=step_size, num_steps=mcmc_steps, energy_fn=e0)
    betas = betas.tolist()
    for prev, beta in zip(betas[:-1], betas[1:]):
        e_model = model.energy(x)
        log_w -= (beta - prev) * (e_model - e0(x))
        if beta < 1.0:
            sampler.energy_fn = lambda y, beta=beta: (1 - beta) * e0(y) + beta * model.energy(y)
            x = sampler.visible(sampler.run({sampler.site: x}, mcmc_steps))
    return _result(log_w, log_z0)
