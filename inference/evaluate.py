"""Evaluation: log-likelihoods (exact or bounded) and posterior-collapse diagnostics.

`log_likelihood(model, data, method=...)` gives one value per datum:

- ``"iwae"``: the importance-weighted bound (Burda et al. 2015)

      log p(x) >= L_K(x) = E[ log (1/K) sum_k p(x, z_k) / q(z_k | x) ],   z_k ~ q(z | x)

  estimated with one set of K draws, using the model's program and its guide through Pyro
  traces (`poutine.trace(guide)`, then `poutine.replay(model, guide_trace)`), vectorised over a
  ``"particles"`` plate to the left of the program's plates, in chunks of `sample_chunk` draws
  and over the data in batches of `batch_size`, combined with a running logsumexp. L_1 is the
  ELBO; L_K increases with K towards log p(x); with the exact posterior as guide every L_K is
  log p(x).
- ``"exact"``: `model.log_prob(x)` (latent-free programs, or finite latents summed out).

Further methods (annealed importance sampling, estimators for energy-based models) plug in
with `register_method`.

Diagnostics: `kl_per_dimension` (analytic KL of a diagonal-Normal guide from the prior, per
latent dimension, averaged over data) and `active_units` (Burda et al.'s count of units whose
posterior mean varies across the data: Cov_x(E_q[z_u | x]) > 0.01).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

import pgm
from pgm.program import isolated, max_plate_nesting, sample_sites, site_kind, unwrap

__all__ = [
    "log_likelihood",
    "log_partition",
    "bits_per_dim",
    "kl_per_dimension",
    "unit_activity",
    "active_units",
    "register_method",
    "METHODS",
]

#: Estimators of log p(x) by name: fn(model, guide, batch, **options) -> (batch,) tensor.
METHODS: dict[str, Callable[..., torch.Tensor]] = {}

_PARTICLES = "_particles"


def register_method(name: str) -> Callable[[Callable], Callable]:
    """Decorator: add an estimator `fn(model, guide, x, **options) -> (batch,)` under `name`,
    for `log_likelihood(..., method=name)`. `x` is one batch on the model's device; `guide` is
    the one given to `log_likelihood` or the model's own (None when it has none); `options`
    are `log_likelihood`'s extra keyword arguments, plus `num_samples` when `fn` takes it.

    >>> @register_method("half_exact")
    ... def _half(model, guide, x):
    ...     return 0.5 * model.log_prob(x)
    >>> "half_exact" in METHODS
    True
    >>> del METHODS["half_exact"]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def wrap(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"register_method({name!r}): expected a function, got {type(fn).__name__}")
        METHODS[name] = fn
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------
# log-likelihood
# ---------------------------------------------------------------------------------------------
def _as_model(model: Any, data: torch.Tensor) -> pgm.Model:
    """A `pgm.Model` for a model or a plain Pyro program (traced on the first data rows)."""
    if isinstance(model, pgm.Model):
        return model
    if callable(model) and not isinstance(model, type):
        return pgm.Model.from_program(model, example_args=(data[:2],))
    raise TypeError(f"model: expected a pgm.Model or a Pyro program (callable), got {type(model).__name__}")


def log_likelihood(
    model: Any,
    data: torch.Tensor,
    *,
    method: str = "iwae",
    num_samples: int = 100,
    batch_size: int = 128,
    sample_chunk: int | None = None,
    guide: Callable | None = None,
    **options: Any,
) -> torch.Tensor:
    """log p(x) (or a lower bound of it) for each datum of `data`: a tensor of shape (N,) on the
    data's device.

    `model` is a `pgm.Model` or a Pyro program whose first argument is the data, batch first,
    under a data plate. `method`: one of `METHODS` ("iwae", "exact", ...). For "iwae":
    `num_samples` importance samples K per datum, drawn in chunks of `sample_chunk` (default:
    as many as keep batch_size * sample_chunk <= 2**15) from `guide` (default: the model's own).
    Runs without gradients; data batches are moved to the model's device.

    >>> import torch, pyro, pyro.distributions as dist, pgm
    >>> def coin(x):
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", dist.Bernoulli(0.25), obs=x)
    >>> log_likelihood(coin, torch.tensor([1.0, 0.0]), method="exact").exp()
    tensor([0.2500, 0.7500])
    """
    if method not in METHODS and method not in PARTITION_METHODS:
        raise ValueError(f"method: expected one of {sorted([*METHODS, *PARTITION_METHODS])}, got {method!r}")
    if not torch.is_tensor(data) or data.dim() == 0:
        raise TypeError(f"data: expected a tensor with a batch dimension, got {type(data).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    model = _as_model(model, data)
    energy_only = model.missing("log_prob") is not None and model.missing("energy") is None
    if method in PARTITION_METHODS or (method == "exact" and energy_only):
        # -E(x) - log Z, with log Z computed once (AIS chains: `num_samples`; the AIS base
        # distribution is fitted to `base_data=` if given, else to `data`).
        from inference.partition import ais_log_likelihood

        if method == "ais":
            options.setdefault("num_chains", num_samples)
        return ais_log_likelihood(model, data, method=method, **options).to(data.device)
    if method == "iwae":
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        guide = guide if guide is not None else model.guide
        if guide is None:
            raise ValueError(
                f"guide: {type(model).__name__} has no guide of its own; pass guide= (e.g. a trained "
                "autoguide) to bound its log-likelihood by importance sampling"
            )
        if sample_chunk is None:
            sample_chunk = max(1, min(num_samples, 2**15 // min(batch_size, len(data))))
        options.update(num_samples=num_samples, sample_chunk=int(sample_chunk))
    elif method != "exact":
        guide = guide if guide is not None else model.guide
        takes = inspect.signature(METHODS[method]).parameters
        if "num_samples" in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values()):
            options.setdefault("num_samples", num_samples)
    device = model.device
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data[start : start + batch_size].to(device)
            out.append(METHODS[method](model, guide, batch, **options).to(data.device))
    return torch.cat(out)


#: Methods that go through the log partition function (`inference.partition`): log p(x) =
#: -E(x) - log Z for models with an energy. ``"exact"`` also does, for a model whose energy is
#: known but whose log-density is not (a small RBM: log Z by enumeration).
PARTITION_METHODS = ("ais",)


def log_partition(model: Any, method: str = "exact", **options: Any):
    """log Z of an energy-based model: exact enumeration or annealed importance sampling (see
    `inference.partition.log_partition`)."""
    from inference.partition import log_partition as _log_partition

    return _log_partition(model, method, **options)


@register_method("exact")
def _exact(model: pgm.Model, guide, x: torch.Tensor) -> torch.Tensor:
    return model.log_prob(x)


@register_method("iwae")
def _iwae(model: pgm.Model, guide: Callable, x: torch.Tensor, *, num_samples: int, sample_chunk: int, vectorize: str = "plate") -> torch.Tensor:
    if vectorize not in ("plate", "repeat"):
        raise ValueError(f"vectorize: expected 'plate' or 'repeat', got {vectorize!r}")
    program = model.model
    nesting = _nesting(program, guide, x)
    total = None
    done = 0
    while done < num_samples:
        k = min(sample_chunk, num_samples - done)
        if vectorize == "plate":
            log_w = _log_weights_plate(program, guide, x, k, nesting)
        else:
            log_w = _log_weights_repeat(program, guide, x, k, nesting)
        chunk = torch.logsumexp(log_w, dim=0)
        total = chunk if total is None else torch.logaddexp(total, chunk)
        done += k
    return total - math.log(num_samples)


def _nesting(program, guide, x) -> int:
    with isolated(), torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)).get_trace(x)
    return max(max_plate_nesting(model_trace), max_plate_nesting(guide_trace), 1)


def _log_weights_plate(program, guide, x, k: int, nesting: int) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for k draws, shape (k, batch), with a particles plate."""
    with pyro.plate(_PARTICLES, k, dim=-(nesting + 1)):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)).get_trace(x)
    n = x.shape[0]
    return _per_particle(model_trace, n, k, nesting) - _per_particle(guide_trace, n, k, nesting, guide=True)


def _log_weights_repeat(program, guide, x, k: int, nesting: int) -> torch.Tensor:
    """The same by repeating the batch k times (for programs that do not broadcast over an extra
    plate on the left); shape (k, batch)."""
    n = x.shape[0]
    xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * n, *x.shape[1:])
    guide_trace = poutine.trace(guide).get_trace(xr)
    model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)).get_trace(xr)
    w = _per_particle(model_trace, k * n, None, nesting) - _per_particle(guide_trace, k * n, None, nesting, guide=True)
    return w.reshape(k, n)


def _per_particle(trace: poutine.Trace, batch: int, k: int | None, nesting: int, guide: bool = False) -> torch.Tensor:
    """Sum each sample site's log density down to shape (k, batch) ((batch,) when k is None):
    every plate dimension other than the particles and the data plate is summed out."""
    trace.compute_log_prob()
    shape = (batch,) if k is None else (k, batch)
    total = torch.zeros(shape)
    width = nesting + (0 if k is None else 1)
    for name, site in sample_sites(trace):
        if guide and site_kind(site) == "factor":
            continue  # a guide's factors are training terms (e.g. VQ-VAE's), not part of q
        lp = site["log_prob"]
        if lp.dim() < width:
            lp = lp.reshape((1,) * (width - lp.dim()) + lp.shape)
        data_dim = _data_dim(site, batch, width)
        if data_dim is None:
            if site_kind(site) == "latent":
                raise ValueError(
                    f"log_likelihood: latent site {name!r} is not inside a data plate of size {batch}; "
                    "the per-datum importance-weighted bound needs every latent to be local to a datum"
                )
            lp = lp.sum(dim=[d for d in range(lp.dim()) if d != 0] if k is not None else list(range(lp.dim())))
            lp = lp.reshape((k, 1) if k is not None else ())
        else:
            keep = {data_dim} | ({lp.dim() - width} if k is not None else set())
            other = [d for d in range(lp.dim()) if d not in keep]
            lp = lp.sum(dim=other) if other else lp
        total = total.to(lp) + lp
    return total


def _data_dim(site: dict, batch: int, width: int) -> int | None:
    """The dimension (from the left, in a log-prob tensor of `width` dims) of the site's data plate:
    its outermost plate of size `batch` other than the particles plate."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES and f.size == batch]
    if not frames:
        return None
    outer = min(frames, key=lambda f: f.dim)
    return width + outer.dim


def bits_per_dim(nll: torch.Tensor | float, dims: int | tuple[int, ...]) -> torch.Tensor | float:
    """Negative log-likelihood in nats per datum -> bits per dimension: nll / (dims * ln 2).
    `dims` is the number of dimensions of a datum, or its shape.

    >>> round(bits_per_dim(784 * math.log(2.0), 784), 6)
    1.0
    """
    n = math.prod(dims) if isinstance(dims, (tuple, list, torch.Size)) else int(dims)
    if n < 1:
        raise ValueError(f"dims: expected a positive number of dimensions, got {dims!r}")
    return nll / (n * math.log(2.0))


# ---------------------------------------------------------------------------------------------
# posterior-collapse diagnostics
# ---------------------------------------------------------------------------------------------
def _guide_and_prior(model: pgm.Model, guide, x: torch.Tensor, site: str | None):
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    latents = [n for n, s in sample_sites(guide_trace) if site_kind(s) == "latent" and not site_is_subsample(s)]
    if site is None:
        if len(latents) != 1:
            raise ValueError(f"site: the guide has latent sites {latents}; name the one to diagnose")
        site = latents[0]
    if site not in guide_trace.nodes or site not in model_trace.nodes:
        raise ValueError(f"site: {site!r} is not a latent site of both the guide and the model (guide latents: {latents})")
    return site, guide_trace.nodes[site], model_trace.nodes[site]


def _batches(model: pgm.Model, data: torch.Tensor, batch_size: int):
    for start in range(0, len(data), batch_size):
        yield data[start : start + batch_size].to(model.device)


def kl_per_dimension(model: Any, data: torch.Tensor, *, site: str | None = None, batch_size: int = 512, guide: Callable | None = None) -> torch.Tensor:
    """KL(q(z_u | x) || p(z_u)) per latent dimension u, averaged over `data`: shape (z_dim,).

    Analytic: the guide's site must be a diagonal Normal and the prior a Normal (e.g. the
    standard Normal of a VAE). Dimensions with KL near 0 have collapsed to the prior.
    """
    model = _as_model(model, data)
    guide = guide if guide is not None else model.guide
    if guide is None:
        raise ValueError(f"guide: {type(model).__name__} has no guide of its own; pass guide=")
    total, n = None, 0
    with torch.no_grad():
        for x in _batches(model, data, batch_size):
            name, q_site, p_site = _guide_and_prior(model, guide, x, site)
            q, p = unwrap(q_site["fn"]), unwrap(p_site["fn"])
            if not isinstance(q, dist.Normal) or not isinstance(p, dist.Normal):
                raise ValueError(
                    f"kl_per_dimension: site {name!r} needs a diagonal Normal guide and a Normal prior for an "
                    f"analytic KL, got guide {type(q).__name__} and prior {type(p).__name__}"
                )
            kl = torch.distributions.kl_divergence(q, p)  # (batch, z_dim) broadcast
            kl = kl.expand(q_site["value"].shape).reshape(-1, kl.shape[-1])
            total = kl.sum(0) if total is None else total + kl.sum(0)
            n += kl.shape[0]
    return total / n


def unit_activity(model: Any, data: torch.Tensor, *, site: str | None = None, batch_size: int = 512, guide: Callable | None = None, num_samples: int = 64) -> torch.Tensor:
    """A_u = Cov_x(E_q[z_u | x]) for each latent dimension u (Burda et al. 2015): the variance
    over `data` of the guide's posterior mean, shape (z_dim,). The mean is analytic where the
    guide's distribution has one (a Normal), else a Monte Carlo average of `num_samples` draws."""
    model = _as_model(model, data)
    guide = guide if guide is not None else model.guide
    if guide is None:
        raise ValueError(f"guide: {type(model).__name__} has no guide of its own; pass guide=")
    means = []
    with torch.no_grad():
        for x in _batches(model, data, batch_size):
            name, q_site, _ = _guide_and_prior(model, guide, x, site)
            fn = q_site["fn"]
            try:
                mean = fn.mean
                if not torch.isfinite(mean).all():
                    raise NotImplementedError
            except NotImplementedError:
                mean = fn.sample((num_samples,)).mean(0)
            means.append(mean.reshape(x.shape[0], -1))
    means = torch.cat(means)
    return means.var(dim=0, unbiased=False)


def active_units(model: Any, data: torch.Tensor, threshold: float = 0.01, **kwargs: Any) -> int:
    """The number of active latent units: dimensions with Cov_x(E_q[z_u | x]) > `threshold`
    (Burda et al. 2015 use 0.01). Keyword arguments go to `unit_activity`."""
    return int((unit_activity(model, data, **kwargs) > threshold).sum())
