"""Markov chain Monte Carlo on Pyro's HMC and NUTS kernels, as a non-iterative `Engine`.

`MCMC(model, kernel="nuts", num_samples=500, warmup_steps=None, num_chains=1)` draws samples of
a model's latent sites given the data. It does not take gradient steps: ``iterative = False``,
and `inference.fit` calls ``run(data)`` once on the whole data set (the model's parameters,
if any, are held fixed). The draws come back as an `inference.Posterior` whose samples are
``(chains, draws, *site_shape)``; its `summary()` gives r-hat and effective sample sizes from
ArviZ.

Continuous latents are sampled by Hamiltonian dynamics; discrete latents are accepted only
when the program marks them for enumeration (``infer={"enumerate": "parallel"}``), in which
case Pyro's kernels sum them out exactly. A model with other discrete latents is refused with
an `EngineError` naming the engines that would work.

>>> import torch
>>> from models.classic import NormalNormal
>>> model = NormalNormal()
>>> mcmc = MCMC(model, num_samples=50, warmup_steps=50)
>>> metrics = mcmc.run(torch.tensor([1.0, 2.0, 3.0]), progress=False)
>>> mcmc.posterior().samples["mu"].shape          # (chains, draws)
torch.Size([1, 50])
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro.infer.mcmc as pyro_mcmc
import torch

import pgm
from inference.engine import Engine, EngineError, _refusal, as_args, register_engine
from inference.posterior import Posterior
from pgm.program import isolated, sample_sites, site_kind, trace_program, unwrap

__all__ = ["MCMC", "KERNELS"]

#: Pyro kernels by name.
KERNELS: dict[str, type] = {"nuts": pyro_mcmc.NUTS, "hmc": pyro_mcmc.HMC}


@register_engine("mcmc", "nuts")
class MCMC(Engine):
    """Samples of the latent sites by HMC or NUTS (Pyro's `pyro.infer.MCMC`).

    Args:
        model: a `pgm.Model` or a Pyro program (the data are its positional arguments).
        kernel: ``"nuts"`` (No-U-Turn, adaptive path length) or ``"hmc"`` (fixed
            `num_steps` leapfrog steps, or `trajectory_length`).
        num_samples: draws kept per chain.
        warmup_steps: adaptation steps per chain (step size, mass matrix), discarded; default
            `num_samples`.
        num_chains: independent chains, run one after the other (``chain_method="sequential"``)
            or in worker processes (``"parallel"``; Pyro's multiprocessing).
        step_size, target_accept_prob, adapt_step_size, adapt_mass_matrix, full_mass,
        max_tree_depth (NUTS), num_steps / trajectory_length (HMC), jit_compile,
        init_strategy: passed to Pyro's kernel.

    After `run`, `posterior()` returns the draws, and ``diagnostics`` holds Pyro's per-chain
    divergences and acceptance rates.
    """

    requires = frozenset({"program", "latents", "normalized"})
    iterative = False

    def __init__(
        self,
        model: Any,
        guide: Callable | None = None,
        *,
        kernel: str = "nuts",
        num_samples: int = 500,
        warmup_steps: int | None = None,
        num_chains: int = 1,
        chain_method: str = "sequential",
        step_size: float = 1.0,
        target_accept_prob: float = 0.8,
        adapt_step_size: bool = True,
        adapt_mass_matrix: bool = True,
        full_mass: bool = False,
        max_tree_depth: int = 10,
        num_steps: int | None = None,
        trajectory_length: float | None = None,
        jit_compile: bool = False,
        init_strategy: Callable | None = None,
        max_plate_nesting: int | None = None,
    ) -> None:
        super().__init__(model, guide)
        if not isinstance(kernel, str) or kernel.lower() not in KERNELS:
            raise ValueError(f"kernel: expected one of {', '.join(KERNELS)}, got {kernel!r}")
        for name, value, minimum in (("num_samples", num_samples, 1), ("num_chains", num_chains, 1),
                                     ("warmup_steps", 0 if warmup_steps is None else warmup_steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
        if chain_method not in ("sequential", "parallel"):
            raise ValueError(f"chain_method: expected 'sequential' or 'parallel', got {chain_method!r}")
        if not (0.0 < float(target_accept_prob) < 1.0):
            raise ValueError(f"target_accept_prob: expected a probability in (0, 1), got {target_accept_prob!r}")
        if not float(step_size) > 0:
            raise ValueError(f"step_size: expected a positive number, got {step_size!r}")
        self.kernel_name = kernel.lower()
        self.num_samples = num_samples
        self.warmup_steps = num_samples if warmup_steps is None else warmup_steps
        self.num_chains = num_chains
        self.chain_method = chain_method
        self.kernel_kwargs: dict[str, Any] = dict(
            step_size=float(step_size),
            target_accept_prob=float(target_accept_prob),
            adapt_step_size=bool(adapt_step_size),
            adapt_mass_matrix=bool(adapt_mass_matrix),
            full_mass=bool(full_mass),
            jit_compile=bool(jit_compile),
            ignore_jit_warnings=True,
        )
        if init_strategy is not None:
            self.kernel_kwargs["init_strategy"] = init_strategy
        if max_plate_nesting is not None:
            self.kernel_kwargs["max_plate_nesting"] = int(max_plate_nesting)
        if self.kernel_name == "nuts":
            if num_steps is not None or trajectory_length is not None:
                raise ValueError("num_steps, trajectory_length: fixed path lengths are for kernel='hmc'; NUTS adapts its own")
            self.kernel_kwargs["max_tree_depth"] = int(max_tree_depth)
        else:
            if num_steps is not None:
                self.kernel_kwargs["num_steps"] = int(num_steps)
            elif trajectory_length is not None:
                self.kernel_kwargs["trajectory_length"] = float(trajectory_length)
            else:
                self.kernel_kwargs["num_steps"] = 10
        self.samples: dict[str, torch.Tensor] | None = None
        self.diagnostics: dict[str, Any] = {}

    # ------------------------------------------------------------------ applicability
    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        try:
            reason = super().supports(model)
        except NotImplementedError:  # a plain program without example arguments: checked in run()
            return None
        if reason is not None:
            return reason
        try:
            args = model.example_inputs()
        except NotImplementedError:
            return None
        return _discrete_reason(model, args)

    # ------------------------------------------------------------------ running
    def run(self, data, progress: bool = True) -> dict[str, float]:
        """Draw `num_chains` chains of `num_samples` samples (after `warmup_steps`) given
        `data` (the program's positional arguments). Returns the mean acceptance rate and the
        number of divergent transitions."""
        args = as_args(data)
        reason = _discrete_reason(self.model, args)
        if reason is not None:
            raise EngineError(_refusal(type(self), self.model, reason))
        kernel = KERNELS[self.kernel_name](self.model.model, **self.kernel_kwargs)
        with warnings.catch_warnings():
            # Pyro warns when it falls back to sequential chains for want of cores.
            warnings.filterwarnings("ignore", message="num_chains=.*available_cpu", category=UserWarning)
            sampler = pyro_mcmc.MCMC(
                kernel,
                num_samples=self.num_samples,
                warmup_steps=self.warmup_steps,
                num_chains=self.num_chains,
                mp_context="spawn" if self.chain_method == "parallel" else None,
                disable_progbar=not progress,
            )
        if self.chain_method == "sequential" and self.num_chains > 1:
            # Pyro draws several chains in worker processes when it has the cores; run them one
            # after the other in this process instead (Pyro's own sequential runner).
            sampler.sampler = pyro_mcmc.api._UnarySampler(
                kernel, self.num_samples, self.warmup_steps, self.num_chains, not progress
            )
        sampler.run(*args)
        samples = sampler.get_samples(group_by_chain=True)
        self.samples = {k: v.detach() for k, v in samples.items()}
        self.diagnostics = _diagnostics(sampler)
        self.num_steps += 1
        metrics = {"loss": 0.0}  # no objective: `fit`'s History needs the key
        metrics.update({k: v for k, v in self.diagnostics.items() if isinstance(v, float)})
        return metrics

    def posterior(self, num_samples: int | None = None, *args, **kwargs) -> Posterior:
        """The draws, `(chains, draws, *site_shape)` per latent site; `num_samples` keeps that
        many draws per chain, evenly spaced (all by default)."""
        if self.samples is None:
            raise ValueError("posterior: MCMC has not run yet; call run(data) or inference.fit(engine, data)")
        samples = self.samples
        if num_samples is not None:
            total = next(iter(samples.values())).shape[1]
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= total:
                raise ValueError(f"num_samples: expected an integer in [1, {total}] (draws per chain), got {num_samples!r}")
            index = torch.linspace(0, total - 1, num_samples).round().long()
            samples = {k: v.index_select(1, index.to(v.device)) for k, v in samples.items()}
        return Posterior(samples, {"engine": "mcmc", "kernel": self.kernel_name, **self.diagnostics})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The draws and diagnostics (so that a resumed `fit` need not run again)."""
        return {"num_steps": self.num_steps, "samples": self.samples, "diagnostics": dict(self.diagnostics)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        samples = state.get("samples")
        self.samples = None if samples is None else {k: torch.as_tensor(v) for k, v in samples.items()}
        self.diagnostics = dict(state.get("diagnostics") or {})

    def to(self, device=None, dtype=None) -> "MCMC":
        super().to(device=device, dtype=dtype)
        if self.samples is not None:
            self.samples = {
                k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in self.samples.items()
            }
        return self

    def __repr__(self) -> str:
        return (f"MCMC({type(self.model).__name__}, kernel={self.kernel_name!r}, num_samples={self.num_samples}, "
                f"warmup_steps={self.warmup_steps}, num_chains={self.num_chains})")


def _discrete_reason(model: pgm.Model, args: tuple) -> str | None:
    """Why HMC cannot sample the program on `args` (discrete latents not marked for
    enumeration), or None."""
    with isolated(), torch.no_grad():
        trace = trace_program(model.model, tuple(args))
    bad = [
        name
        for name, site in sample_sites(trace)
        if site_kind(site) == "latent"
        and bool(getattr(unwrap(site["fn"]).support, "is_discrete", False))
        and site.get("infer", {}).get("enumerate") != "parallel"
    ]
    if bad:
        return (f"Hamiltonian dynamics needs continuous latents, and {', '.join(map(repr, bad))} "
                "are discrete and not marked for enumeration (infer={'enumerate': 'parallel'})")
    return None


def _diagnostics(sampler) -> dict[str, Any]:
    """Pyro's per-chain divergences and acceptance rates, and their totals."""
    out: dict[str, Any] = {}
    try:
        diag = sampler.diagnostics()
    except Exception:  # noqa: BLE001 - diagnostics are informative only
        return out
    divergences = diag.get("divergences", {})
    accept = diag.get("acceptance rate", {})
    out["divergences"] = float(sum(len(v) for v in divergences.values()))
    if accept:
        out["acceptance_rate"] = float(sum(accept.values()) / len(accept))
    return out
