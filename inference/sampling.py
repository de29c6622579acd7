"""Draws of a trained model's data, as a user wants to see them: one function, `draw`, that the
command line, the tutorials and Python users share.

Which path a model takes is decided here, from the model and (optionally) the engine that
trained it:

1. **Posterior predictive** for models with *global* latents (sites whose shape does not grow
   with the data, e.g. a mixture's weights and locations, eight schools' mu and tau): latents
   from the fitted posterior (the engine's, e.g. MCMC draws, or the model's own guide), then
   the data given them. A picture drawn from the prior would be far from the data. Without a
   fitted posterior or a guide (an untrained model) the globals come from the prior: the
   prior predictive, shaped the same way.
2. **Ancestral sampling** (`model.sample`) for directed programs, with the likelihood's mean
   where the model offers it (``mean=True``: a VAE's decoder probabilities).
3. **A Markov chain** for undirected programs (Boltzmann machines, EBMs): Gibbs for binary
   units, Langevin for continuous ones. Its guarantee: `n` independent chains, started apart
   (from `n` distinct data points when `start` is given, else from the sampler's random
   initialisation), each run `steps` sweeps (Langevin steps with a Metropolis correction,
   MALA, for continuous units); after enough sweeps each chain is a draw from the
   model, and the chains are independent of each other, so the `n` draws show the model's modes
   in their proportions rather than one chain's neighbourhood.
"""

from __future__ import annotations

import inspect
from typing import Any

import pyro.poutine as poutine
import torch

from pgm.program import isolated, sample_sites, site_kind, trace_program

__all__ = ["draw", "global_latents", "DEFAULT_CHAIN_STEPS"]

#: Sweeps of a Markov chain per draw when none is given.
DEFAULT_CHAIN_STEPS = 1000


def global_latents(model) -> list[str]:
    """Latent sites whose value does not grow with the number of data (traced with two batch
    sizes): the globals of a posterior predictive."""
    try:
        with isolated(), torch.no_grad():
            small = trace_program(model.model, model.example_inputs(3))
            large = trace_program(model.model, model.example_inputs(5))
    except (NotImplementedError, TypeError):
        return []
    out = []
    for name, site in sample_sites(small):
        if site_kind(site) != "latent" or name not in large.nodes:
            continue
        if tuple(site["value"].shape) == tuple(large.nodes[name]["value"].shape):
            out.append(name)
    return out


@torch.no_grad()
def draw(model, n: int, *, engine=None, mean: bool = False, start: torch.Tensor | None = None,
         steps: int | None = None, **options: Any) -> torch.Tensor:
    """`n` draws of the model's data (a tensor shaped like the data, batch first); see the
    module docstring for the path taken. `engine`: the engine that trained the model (its
    posterior is used for models with global latents); `start`: data to start Markov chains
    from (`n` distinct rows are taken); `steps`: sweeps of a Markov chain; `options` go to the
    model's own `sample` (e.g. a diffusion model's number of steps)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive number of draws, got {n!r}")
    averaged = getattr(engine, "averaged", None)
    if callable(averaged):  # an engine that keeps a moving average of the weights samples with it
        with averaged():
            return _draw(model, n, engine, mean, start, steps, options)
    return _draw(model, n, engine, mean, start, steps, options)


def _draw(model, n, engine, mean, start, steps, options) -> torch.Tensor:
    capabilities = model.capabilities()
    globals_ = global_latents(model) if "latents" in capabilities else []
    if globals_:
        drawn = _posterior_predictive(model, n, globals_, engine, start)
        if drawn is not None:
            return drawn
    if "sample" in capabilities:
        parameters = inspect.signature(model.sample).parameters
        kwargs = {k: v for k, v in options.items() if k in parameters}
        unknown = sorted(set(options) - set(kwargs))
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: {type(model).__name__}.sample takes no such option")
        if mean and "mean" in parameters:
            kwargs["mean"] = True
        drawn = model.sample(n, **kwargs)
        return next(iter(drawn.values())) if isinstance(drawn, dict) else drawn
    return _markov_chain(model, n, start, steps)


def _posterior_predictive(model, n: int, globals_: list[str], engine, start=None) -> torch.Tensor | None:
    """Data drawn given global latents from the fitted posterior: one posterior draw per
    datum when the program's data are independent given them. An engine that needs the
    program's arguments for its posterior (SVI's guide, reloaded from a run) gets `start`."""
    posterior = None
    if engine is not None:
        failures = (NotImplementedError, AttributeError, RuntimeError, ValueError, TypeError)
        try:
            posterior = engine.posterior(n)
        except failures:
            posterior = None
            if start is not None:
                args = tuple(start) if isinstance(start, (tuple, list)) else (start,)
                try:
                    posterior = engine.posterior(n, *args)
                except failures:
                    posterior = None
    if posterior is not None:
        values = {name: posterior.flat(name) for name in globals_ if name in posterior}
        total = next(iter(values.values())).shape[0] if values else 0
        if not values or total == 0:
            return None
        index = torch.randint(0, total, (n,))
        latents = [{k: v[i] for k, v in values.items()} for i in index.tolist()]
    else:
        # The model's own guide when it has one; else the prior (an untrained model: its prior
        # predictive, one draw of the globals per datum, as for a posterior).
        program = model.guide if model.guide is not None else poutine.uncondition(model.model)
        latents = []
        for _ in range(n):
            with isolated(rng=False):  # a new draw each time
                trace = poutine.trace(program).get_trace(*model.example_inputs(1))
            latents.append({k: trace.nodes[k]["value"] for k in globals_ if k in trace.nodes})
        if not latents[0]:
            return None
    rows = []
    for values in latents:
        conditioned = poutine.condition(poutine.uncondition(model.model), data=values)
        trace = trace_program(conditioned, model.example_inputs(1))
        observed = [s for name, s in sample_sites(trace)  # the data sites, drawn now (uncondition marks them)
                    if name not in values and (s.get("infer", {}).get("was_observed") or site_kind(s) == "observed")]
        if not observed:
            return None
        rows.append(observed[0]["value"])
    one = rows[0]
    if one.dim() and one.shape[0] == 1:  # a data plate of one datum: stack the data
        return torch.cat(rows, 0)
    return torch.stack(rows, 0)  # the whole program's data per draw (eight schools: 8 per draw)


def _markov_chain(model, n: int, start: torch.Tensor | None, steps: int | None) -> torch.Tensor:
    capabilities = model.capabilities()
    steps = DEFAULT_CHAIN_STEPS if steps is None else int(steps)
    if "discrete" in capabilities:
        from inference.gibbs import Gibbs

        sampler, adapting = Gibbs(model), 0
    else:
        from inference.langevin import Langevin

        # MALA: the Metropolis correction makes the model's density the chain's stationary
        # distribution whatever the step size (unadjusted Langevin's bias grows with it); the
        # step size adapts toward 57% acceptance in the first half, then stays fixed.
        sampler = Langevin(model, method="mala", step_size=0.05, adapt_step_size=True)
        adapting = steps // 2
    if start is not None and torch.is_tensor(start) and start.shape[0] >= n:
        rows = torch.randperm(start.shape[0])[:n]
        x = start[rows].to(device=model.device, dtype=model.dtype)
        chains = sampler.from_data(x, 1)[0]
        remaining = max(steps - 1, 0)
    else:
        chains, remaining = sampler.init_random(n), steps
    if adapting:
        chains = sampler.run(chains, min(adapting, remaining))
        sampler.adapt_step_size = False
        remaining -= min(adapting, remaining)
    chains = sampler.run(chains, remaining)
    return sampler.visible(chains)
