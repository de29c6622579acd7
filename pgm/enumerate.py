"""Exact summation over finite latent sites by enumerating their supports.

Pyro's parallel enumeration sums out scalar discrete sites; the hidden layer of a Boltzmann
machine is a *vector* of binary units (`Bernoulli(0.5).expand([H]).to_event(1)`), which Pyro
does not enumerate. Here every finite site is enumerated jointly over its event (2**H
configurations for H binary units), each site on its own dimension to the left of the plates,
so the configurations are shared by all elements of the plates the site lives in.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import pyro.poutine as poutine
import torch

from pgm.program import max_plate_nesting, plate_frames, sample_sites, site_kind, trace_program, unwrap

__all__ = ["NotEnumerable", "joint_support", "finite_latents", "enumerated_log_joint"]

MAX_CONFIGURATIONS = 2**16


class NotEnumerable(ValueError):
    """A latent site has no finite support (or too large a one) to be summed out exactly."""


def joint_support(fn, site_name: str = "site", max_configurations: int = MAX_CONFIGURATIONS) -> torch.Tensor:
    """Every joint value of a finite site's event, shape `(K, *event_shape)`.

    >>> import pyro.distributions as dist
    >>> joint_support(dist.Bernoulli(0.5).expand([2]).to_event(1)).tolist()
    [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
    """
    base = unwrap(fn)
    if not getattr(base, "has_enumerate_support", False):
        raise NotEnumerable(
            f"site {site_name!r}: {type(base).__name__} has no finite support to enumerate"
        )
    values = base.enumerate_support(expand=False)
    base_event = tuple(base.event_shape)
    values = values.reshape((values.shape[0],) + base_event)
    # The event of the site is made of `n` independent base elements.
    outer = tuple(fn.event_shape[: len(fn.event_shape) - len(base_event)])
    n = math.prod(outer)
    k = values.shape[0]
    if k**n > max_configurations:
        raise NotEnumerable(
            f"site {site_name!r}: {k}**{n} = {k**n} joint configurations, more than the "
            f"limit of {max_configurations} that can be enumerated exactly"
        )
    index = torch.tensor(list(itertools.product(range(k), repeat=n)), device=values.device)
    index = index.reshape((k**n,) + outer) if n else index.reshape(k**n)
    return values[index]


def finite_latents(trace) -> list[str]:
    """Names of the latent sites of a trace; raises `NotEnumerable` if any is not finite."""
    names = []
    for name, site in sample_sites(trace):
        if site_kind(site) != "latent":
            continue
        if not getattr(unwrap(site["fn"]), "has_enumerate_support", False):
            raise NotEnumerable(
                f"latent site {name!r} ({type(unwrap(site['fn'])).__name__}) is not discrete; "
                "it cannot be summed out exactly"
            )
        names.append(name)
    return names


def enumerated_log_joint(
    program: Callable,
    args: tuple = (),
    kwargs: dict | None = None,
    *,
    max_configurations: int = MAX_CONFIGURATIONS,
) -> tuple[torch.Tensor, int]:
    """`log sum_latents p~(observed, latents)` with every latent site summed out exactly.

    `p~` is the product of every site's density (observed, latent and `pyro.factor` sites), so
    the result is unnormalised for programs with factors. Latent sites must be finite and live
    in the same plates as each other (per-datum enumeration: the hidden units of each datum are
    summed out separately). Returns `(log_joint, plate_nesting)`: a tensor whose last
    `plate_nesting` dimensions are the program's plate dimensions.
    """
    kwargs = kwargs or {}
    trace = trace_program(program, args, kwargs)
    latents = finite_latents(trace)
    nesting = max_plate_nesting(trace)
    if not latents:
        return _log_joint(trace), nesting
    plate_sets = {frozenset(f.name for f in plate_frames(trace.nodes[n])) for n in latents}
    if len(plate_sets) > 1:
        raise NotEnumerable(
            f"latent sites {latents} live in different plates; exact per-datum enumeration needs "
            "them in the same plates (use Pyro's TraceEnum_ELBO, inference.SVI(elbo='enum'))"
        )
    m = len(latents)
    values = {}
    for j, name in enumerate(latents):
        fn = trace.nodes[name]["fn"]
        support = joint_support(fn, name, max_configurations)
        event_dims = len(fn.event_shape)
        shape = [1] * j + [support.shape[0]] + [1] * (m - 1 - j) + [1] * nesting
        values[name] = support.reshape(shape + list(support.shape[1:]))
        assert values[name].dim() == m + nesting + event_dims
    conditioned = poutine.condition(program, data=values)
    full = trace_program(conditioned, args, kwargs)
    log_joint = _log_joint(full)
    log_joint = log_joint.reshape((1,) * (m + nesting - log_joint.dim()) + log_joint.shape)
    return torch.logsumexp(log_joint.flatten(0, m - 1), dim=0), nesting


def _log_joint(trace) -> torch.Tensor:
    """Sum of the log densities of every non-deterministic sample site, broadcast over plates."""
    total = 0.0
    for _, site in sample_sites(trace):
        if site_kind(site) == "deterministic":
            continue
        lp = site["fn"].log_prob(site["value"])
        scale = site.get("scale", 1.0)
        total = total + (lp * scale if not (isinstance(scale, float) and scale == 1.0) else lp)
    if not torch.is_tensor(total):
        total = torch.tensor(float(total))
    return total
