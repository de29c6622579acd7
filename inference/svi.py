"""Stochastic variational inference on Pyro's ELBOs, as an `Engine`.

`SVI(model, guide=None, elbo="trace", ...)` fits a guide (the model's own, one given, or a Pyro
autoguide) and the model's parameters by gradient steps on a Monte Carlo estimate of the
negative ELBO. The ELBO is one of

==============  =============================================================================
``"trace"``     `Trace_ELBO`: the KL term is sampled (score-function terms for sites that
                cannot be reparameterised)
``"meanfield"`` `TraceMeanField_ELBO`: analytic KL(q || p) where it exists (site by site)
``"iwae"``      `RenyiELBO(alpha=0)`: the importance-weighted bound with `num_particles` = K
``"renyi"``     `RenyiELBO(alpha)`: the Renyi alpha-divergence bound (`alpha` required)
``"tracegraph"`` `TraceGraph_ELBO`: finer Rao-Blackwellisation for non-reparameterisable sites
``"enum"``      `TraceEnum_ELBO`: discrete latents marked (or left by the guide) are summed out
                exactly; `config_enumerate` marks the guide's and model's discrete sites
==============  =============================================================================

and `jit=True` picks Pyro's compiled variants where they exist (trace, meanfield, enum).

**beta.** `beta` weights the KL part of the objective. It is a float, a callable
`step -> beta`, or a tuple `(start, end, steps)`: a linear warm-up (`WarmUp`) from `start` at
step 0 to `end` at step `steps`, constant afterwards (e.g. `beta=(0.0, 1.0, 1000)`). It
the objective: every latent sample site's log density, in the model *and* in the guide, is
scaled by beta (observed sites are not), so the objective is
`E_q[log p(x | z)] - beta * KL(q(z) || p(z))` (the beta-VAE objective); with the meanfield ELBO
the analytic KL is scaled the same way.

**The reported loss** is the negative (beta-weighted) ELBO of the batch divided by the batch
size (the number of rows of the program's first argument): a loss per datum, comparable across
batch sizes. `step` returns `{"loss", "elbo", "beta"}` with `elbo = -loss`.

**Speed.** The ELBO, the parameter list and the optimiser are built once, on the first batch;
a step then runs the guide and the model once (vectorised over particles when
`num_particles > 1`), with Pyro's argument validation switched off, and applies one
optimiser step (`optim="adam"` uses PyTorch's fused Adam kernel where the parameters allow it).
`benchmarks/bench_vae.py` times a VAE step through `inference.fit` against a hand-written
PyTorch step. `jit=True` (Pyro's TorchScript-compiled ELBOs) measured about 5x *slower* than
the interpreted ELBO for that VAE on CPU with PyTorch 2.x, so it is off by default.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceMeanField_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    config_enumerate,
)
from pyro.infer import autoguide
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

import pgm
from inference.engine import Engine, EngineError, _refusal, as_args, register_engine
from inference.maximum_likelihood import OPTIMIZERS, check_lr, check_optim
from inference.posterior import Posterior
from pgm.model import ProgramModel
from pgm.program import isolated, sample_sites, site_kind, trace_program, unwrap

__all__ = ["SVI", "ELBOS", "AUTOGUIDES", "AutoFlow", "make_optimizer", "ScaleLatents", "WarmUp"]

ELBOS = ("trace", "meanfield", "iwae", "renyi", "tracegraph", "enum")


def _flow_layers(num_layers: int, hidden_dims, latent_dim: int):
    """`num_layers` inverse autoregressive layers (Pyro's `affine_autoregressive`: one-pass
    sampling, and the density of its own draws from the cache) over `latent_dim` dims."""
    import warnings

    from pyro.distributions import transforms as T

    hidden = [max(4 * latent_dim, 32)] * 2 if hidden_dims is None else [int(h) for h in hidden_dims]
    with warnings.catch_warnings():  # one latent dimension: the layer is an affine map, as wanted
        warnings.simplefilter("ignore", UserWarning)
        return T.ComposeTransformModule([T.affine_autoregressive(latent_dim, hidden_dims=hidden) for _ in range(num_layers)])


class AutoFlow(autoguide.AutoNormalizingFlow):
    """Autoguide: all latent sites, unconstrained and flattened, under a normalizing flow of
    `num_layers` inverse autoregressive layers (`hidden_dims` their MADE conditioners) over a
    standard Normal (Pyro's `AutoNormalizingFlow`). ``SVI(program, guide="flow")``."""

    def __init__(self, model, num_layers: int = 2, hidden_dims=None, **kwargs):
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
        super().__init__(model, partial(_flow_layers, num_layers, hidden_dims), **kwargs)


AUTOGUIDES: dict[str, type] = {
    "flow": AutoFlow,
    "normal": autoguide.AutoNormal,
    "delta": autoguide.AutoDelta,
    "multivariate": autoguide.AutoMultivariateNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "diagonal": autoguide.AutoDiagonalNormal,
}
_OPTIMIZERS = OPTIMIZERS


class WarmUp:
    """A linear schedule `step -> value`: `start` at step 0, `end` from step `steps` on.

    >>> schedule = WarmUp(0.0, 1.0, 4)
    >>> [schedule(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(self, start: float, end: float, steps: int) -> None:
        self.start, self.end = float(start), float(end)
        if not (math.isfinite(self.start) and math.isfinite(self.end) and self.start >= 0 and self.end >= 0):
            raise ValueError(f"beta: warm-up values must be non-negative and finite, got start={start!r}, end={end!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"beta: warm-up steps must be a positive integer, got {steps!r}")
        self.steps = steps

    def __call__(self, step: int) -> float:
        fraction = min(max(step, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * fraction

    def __repr__(self) -> str:
        return f"WarmUp({self.start}, {self.end}, {self.steps})"


class ScaleLatents(Messenger):
    """Scale the log density of every latent (unobserved) sample site by `self.scale`.

    Applied to both the model and the guide, it turns the ELBO into
    `E_q[log p(x | z)] - scale * KL(q || p)`. `scale` may be changed between runs."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def _pyro_sample(self, msg) -> None:
        if not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.scale * msg["scale"]


def make_optimizer(optim: Any, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """A torch optimiser over `params`: `optim` is a name (adam, adamw, sgd, rmsprop, adagrad),
    a `torch.optim.Optimizer` class, or a callable `params -> optimizer`. Adam and AdamW use
    the fused kernel when every parameter is a floating tensor on one CPU or CUDA device."""
    check_optim(optim, factories=True)
    if isinstance(optim, str):
        key = optim.lower()
        cls = _OPTIMIZERS[key]
        if key in ("adam", "adamw") and _fusable(params):
            try:
                return cls(params, lr=lr, fused=True)
            except (RuntimeError, TypeError, ValueError):
                pass
        return cls(params, lr=lr)
    if isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer):
        return optim(params, lr=lr)
    if callable(optim):
        opt = optim(params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"optim: the callable returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return opt
    raise TypeError(f"optim: expected a name, a torch.optim.Optimizer class or a callable, got {type(optim).__name__}")


def _fusable(params: list[torch.Tensor]) -> bool:
    if not params:
        return False
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() and p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in params)
    )


@register_engine("svi")
class SVI(Engine):
    """Stochastic variational inference (see the module docstring).

    Args:
        model: a `pgm.Model`, or a plain Pyro program whose positional arguments are the data
            (`inference.engine.as_args(batch)`).
        guide: None (the model's own guide, else an `AutoNormal`), an autoguide name
            ("normal", "delta", "multivariate", "lowrank", "diagonal", "flow": `AutoFlow`, inverse
            autoregressive layers over the latents), or a guide program
            (any callable, e.g. an autoguide instance).
        elbo: one of `ELBOS` (see the module docstring).
        num_particles: Monte Carlo samples per step (the K of "iwae").
        alpha: the Renyi divergence's alpha (required by "renyi"; "iwae" is alpha = 0).
        beta: weight of the KL term: a float, a callable `step -> float`, or `(start, end,
            steps)` for a linear warm-up (`WarmUp`).
        optim, lr: the optimiser (see `make_optimizer`) and its learning rate.
        max_plate_nesting: plates' depth for vectorised particles and enumeration (guessed
            from one run of the program when None).
        vectorize_particles: draw the particles in one vectorised run (needs a program that
            broadcasts over a batch dimension on the left of its plates).
        jit: compile the ELBO with PyTorch's tracer (trace, meanfield and enum; the program
            must have a static structure, and each batch shape compiles once). Not faster on
            CPU in our measurements (see the module docstring).
        scheduler: optional `optimizer -> torch.optim.lr_scheduler` (e.g. `lambda o:
            torch.optim.lr_scheduler.StepLR(o, 1000, 0.1)`), stepped after every step.
        return_sites: the sites `posterior()` returns (default: the guide's latent sites).

    SVI needs latent sites (`requires` has "latents"): a model without them is fitted by
    maximum likelihood instead; and a normalised likelihood ("normalized"): potentials over
    observed sites (an RBM) leave log Z unknown, so the ELBO bounds nothing. A plain program's sites are checked on its first batch.
    """

    requires = frozenset({"program", "latents", "normalized"})

    def __init__(
        self,
        model: Any,
        guide: Callable | str | None = None,
        *,
        elbo: str = "trace",
        num_particles: int = 1,
        alpha: float | None = None,
        beta: float | Callable[[int], float] | tuple = 1.0,
        optim: Any = "adam",
        lr: float = 1e-3,
        max_plate_nesting: int | None = None,
        vectorize_particles: bool = True,
        jit: bool = False,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        return_sites: Iterable[str] | None = None,
    ) -> None:
        guide_program = guide if callable(guide) and not isinstance(guide, str) else None
        if guide_program is not None and isinstance(model, pgm.Model):
            # A pgm.Model carries its own guide; a guide given here replaces it for this engine.
            super().__init__(model)
        else:
            super().__init__(model, guide_program)
        if isinstance(guide, str) and guide.lower() not in AUTOGUIDES:
            raise ValueError(f"guide: expected one of {', '.join(AUTOGUIDES)} or a guide program, got {guide!r}")
        if guide is not None and not isinstance(guide, str) and not callable(guide):
            raise TypeError(f"guide: expected None, an autoguide name or a callable, got {type(guide).__name__}")
        if elbo not in ELBOS:
            raise ValueError(f"elbo: expected one of {', '.join(ELBOS)}, got {elbo!r}")
        if int(num_particles) < 1:
            raise ValueError(f"num_particles: expected a positive integer, got {num_particles!r}")
        if elbo == "renyi":
            if alpha is None:
                raise ValueError("alpha: the 'renyi' ELBO needs alpha (alpha=0 is 'iwae'; alpha -> 1 is 'trace')")
            if float(alpha) == 1.0:
                raise ValueError("alpha: must differ from 1 (alpha=1 is the ordinary ELBO: use elbo='trace')")
        elif alpha is not None and elbo != "iwae":
            raise ValueError(f"alpha: only the 'renyi' ELBO takes alpha, not {elbo!r}")
        if jit and elbo not in ("trace", "meanfield", "enum"):
            raise ValueError(f"jit: Pyro compiles the trace, meanfield and enum ELBOs only, not {elbo!r}")
        if isinstance(beta, (tuple, list)):
            if len(beta) != 3:
                raise ValueError(f"beta: a warm-up is (start, end, steps), got {beta!r}")
            beta = WarmUp(*beta)
        if isinstance(beta, bool) or not (callable(beta) or isinstance(beta, (int, float))):
            raise TypeError(f"beta: expected a number, a callable step -> beta or (start, end, steps), got {beta!r}")
        if not callable(beta):
            beta = float(beta)
            if not (beta >= 0 and math.isfinite(beta)):
                raise ValueError(f"beta: expected a non-negative number or a callable step -> beta, got {beta!r}")
        check_lr(lr)
        check_optim(optim, factories=True)  # refused now, not when the optimiser is built on the first batch
        self.elbo_name = elbo
        self.num_particles = int(num_particles)
        self.alpha = 0.0 if elbo == "iwae" else (None if alpha is None else float(alpha))
        self.beta = beta
        self.optim = optim
        self.lr = float(lr)
        self.max_plate_nesting = max_plate_nesting
        self._vectorize_option = bool(vectorize_particles)
        self.vectorize_particles = self._vectorize_option and self.num_particles > 1
        self.jit = bool(jit)
        self.return_sites = None if return_sites is None else list(return_sites)
        if scheduler is not None and not callable(scheduler):
            raise TypeError(f"scheduler: expected a callable optimizer -> lr scheduler, got {type(scheduler).__name__}")
        self._make_scheduler = scheduler
        self.scheduler = None

        # The guide: a program given or written by the model, else an autoguide built lazily.
        own = guide_program if guide_program is not None else (None if isinstance(guide, str) else self.model.guide)
        self._autoguide_kind: str | None = None
        if own is None:
            self._autoguide_kind = guide.lower() if isinstance(guide, str) else "normal"
        self._guide_program: Callable | None = own
        self._elbo = self._build_elbo()
        self._scale_model = ScaleLatents(1.0)
        self._scale_guide = ScaleLatents(1.0)
        # Built on the first batch.
        self.guide: Callable | None = own
        self.optimizer: torch.optim.Optimizer | None = None
        self._params: list[torch.Tensor] = []
        self._pyro_params: dict[str, torch.Tensor] = {}  # param-store sites that no module owns
        self._model_fn: Callable | None = None
        self._guide_fn: Callable | None = None
        self._loss_fn: Callable | None = None
        self._pending: dict[str, Any] | None = None
        self._last_args: tuple | None = None

    # ------------------------------------------------------------------ applicability
    @classmethod
    def supports(cls, model: pgm.Model) -> str | None:
        try:
            return super().supports(model)
        except NotImplementedError:
            # A plain program wrapped without example arguments: checked on its first batch.
            return None

    def validate(self, data) -> None:
        """`Engine.validate`, and a guide given to this engine (not the model's own) is run on
        the first batch too."""
        super().validate(data)
        own = self._guide_program
        if own is not None and own != self.model.guide:
            self.model.validate_guide(own, *as_args(data))

    # ------------------------------------------------------------------ building
    def _build_elbo(self, num_particles: int | None = None, jit: bool | None = None):
        """The Pyro ELBO object (the engine's settings; `num_particles` and `jit` override)."""
        num_particles = self.num_particles if num_particles is None else int(num_particles)
        jit = self.jit if jit is None else jit
        common = dict(
            num_particles=num_particles,
            vectorize_particles=self._vectorize_option and num_particles > 1,
            max_plate_nesting=float("inf") if self.max_plate_nesting is None else int(self.max_plate_nesting),
        )
        name = self.elbo_name
        if name == "trace":
            return JitTrace_ELBO(**common, ignore_jit_warnings=True) if jit else Trace_ELBO(**common)
        if name == "meanfield":
            return JitTraceMeanField_ELBO(**common, ignore_jit_warnings=True) if jit else TraceMeanField_ELBO(**common)
        if name in ("iwae", "renyi"):
            return RenyiELBO(alpha=self.alpha, **common)
        if name == "tracegraph":
            return TraceGraph_ELBO(**common)
        # enum
        return JitTraceEnum_ELBO(**common, ignore_jit_warnings=True) if jit else TraceEnum_ELBO(**common)

    def _setup(self, args: tuple) -> None:
        """Build the guide, the wrapped programs, the parameter list and the optimiser on the
        first batch (`args`), without consuming random numbers of the training run."""
        structure = self._check_latents(args)
        model_fn: Callable = self.model.model
        if self._guide_program is None:
            self.guide = self._build_autoguide(model_fn, structure, args)
        guide_fn: Callable = self.guide
        if self.elbo_name == "enum":
            model_fn = config_enumerate(model_fn, default="parallel")
            guide_fn = config_enumerate(guide_fn, default="parallel")
        if self.jit or self.elbo_name in ("iwae", "renyi"):
            model_fn, guide_fn = self._jit_wrappers(model_fn, guide_fn)
        if callable(self.beta) or self.beta != 1.0:
            model_fn, guide_fn = self._scale_model(model_fn), self._scale_guide(guide_fn)
        self._model_fn, self._guide_fn = model_fn, guide_fn
        self._loss_fn = self._differentiable_loss_fn()

        # One ELBO evaluation creates lazily built parameters (autoguides, pyro.param sites)
        # and shows which param-store sites the programs use; its random draws are discarded.
        with torch.random.fork_rng(devices=_cuda_devices()), _no_validation():
            with poutine.trace(param_only=True) as capture:
                self._evaluate(args)
        params: dict[int, torch.Tensor] = {}
        for p in self.model.parameters():
            if p.requires_grad:
                params.setdefault(id(p), p)
        if isinstance(self.guide, nn.Module):
            for p in self.guide.parameters():
                if p.requires_grad:
                    params.setdefault(id(p), p)
        owned = set(params)
        self._pyro_params = {}
        for name, site in capture.trace.nodes.items():
            unconstrained = site["value"].unconstrained() if hasattr(site["value"], "unconstrained") else None
            if unconstrained is None or not unconstrained.requires_grad:
                continue
            if id(unconstrained) not in owned:
                self._pyro_params[name] = unconstrained
            params.setdefault(id(unconstrained), unconstrained)
        self._params = list(params.values())
        if not self._params:
            raise EngineError(
                f"SVI: {type(self.model).__name__} and its guide have no parameters to optimise "
                "(no nn.Parameter, no pyro.param site)"
            )
        pending, self._pending = self._pending, None
        if pending is not None:
            self._load_params(pending)
        self.optimizer = make_optimizer(self.optim, self._params, self.lr)
        if self._make_scheduler is not None:
            self.scheduler = self._make_scheduler(self.optimizer)
        if pending is not None:
            self._load_optimizer(pending)

    def _check_latents(self, args: tuple):
        """The program's structure on the first batch; refuse programs without latent sites."""
        try:
            structure = self.model.structure(*args)
        except pgm.ProgramError as error:
            raise ValueError(f"data: {type(self.model).__name__}'s program cannot run on this batch: {error}") from error
        if not structure.latent:
            model = self.model
            if isinstance(model, ProgramModel) and model._example_args is None:
                model = pgm.Model.from_program(model._program, model._guide_program, example_args=args)
            raise EngineError(_refusal(type(self), model, "it needs `latents`, and its program has no latent sites"))
        return structure

    def _build_autoguide(self, model_fn: Callable, structure, args: tuple):
        with isolated(), torch.no_grad():
            trace = trace_program(model_fn, args)
        discrete = [
            name
            for name, site in sample_sites(trace)
            if site_kind(site) == "latent" and bool(getattr(unwrap(site["fn"]).support, "is_discrete", False))
        ]
        if discrete and self.elbo_name != "enum":
            raise EngineError(
                f"SVI: {type(self.model).__name__} has discrete latent sites ({', '.join(discrete)}) that an "
                f"autoguide cannot represent: use elbo='enum' to sum them out, or give a guide of your own"
            )
        target = poutine.block(model_fn, hide=discrete) if discrete else model_fn
        cls = AUTOGUIDES[self._autoguide_kind]
        guide = cls(target)
        # Pyro keeps autoguide parameters in its global param store under the guide's name; give
        # this engine's guide a name of its own so that two engines never share parameters.
        base = cls.__name__
        taken = {k.split(".", 1)[0] for k in pyro.get_param_store().keys()}
        name, i = base, 1
        while name in taken or name in _AUTOGUIDE_NAMES:
            i += 1
            name = f"{base}_{i}"
        _AUTOGUIDE_NAMES.add(name)
        guide._pyro_name = name
        return guide

    def _jit_wrappers(self, model_fn: Callable, guide_fn: Callable):
        # Pyro's compiled ELBOs (and RenyiELBO's backward) only see parameters that appear as
        # param sites: register the model's (and the guide's) modules in the param store, under
        # names of this engine's own; the batch shape is a keyword so that each shape compiles
        # its own graph.
        model = self.model
        store = pyro.get_param_store()
        taken = {k.split("$$$", 1)[0] for k in store.keys()}
        i = len(_AUTOGUIDE_NAMES)
        while f"pgm_model_{i}" in taken or f"pgm_model_{i}" in _AUTOGUIDE_NAMES:
            i += 1
        model_name, guide_name = f"pgm_model_{i}", f"pgm_guide_{i}"
        _AUTOGUIDE_NAMES.update((model_name, guide_name))
        guide_module = self.guide if isinstance(self.guide, nn.Module) and not isinstance(self.guide, PyroModule) else None

        def jit_model(*args, _pgm_shapes=None, **kwargs):
            pyro.module(model_name, model)
            return model_fn(*args, **kwargs)

        def jit_guide(*args, _pgm_shapes=None, **kwargs):
            pyro.module(model_name, model)
            if guide_module is not None:
                pyro.module(guide_name, guide_module)
            return guide_fn(*args, **kwargs)

        return jit_model, jit_guide

    def _differentiable_loss_fn(self, elbo=None) -> Callable:
        elbo = self._elbo if elbo is None else elbo
        if self.elbo_name in ("iwae", "renyi"):
            return lambda model, guide, *args, **kw: _renyi_differentiable_loss(elbo, self._params, model, guide, args, kw)
        if self.elbo_name == "tracegraph":
            return lambda model, guide, *args, **kw: _tracegraph_differentiable_loss(elbo, model, guide, args, kw)
        return elbo.differentiable_loss

    def _evaluate(self, args: tuple) -> torch.Tensor:
        if self.jit:
            shapes = tuple(tuple(a.shape) if torch.is_tensor(a) else None for a in args)
            return self._loss_fn(self._model_fn, self._guide_fn, *args, _pgm_shapes=shapes)
        return self._loss_fn(self._model_fn, self._guide_fn, *args)

    # ------------------------------------------------------------------ the protocol
    def current_beta(self) -> float:
        """beta at the current step (the schedule's value when beta is a callable)."""
        if callable(self.beta):
            value = float(self.beta(self.num_steps))
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"beta: the schedule gave {value!r} at step {self.num_steps}; expected a non-negative number")
            return value
        return self.beta

    def loss(self, batch) -> torch.Tensor:
        """The negative (beta-weighted) ELBO of `batch` per datum, differentiable."""
        args = as_args(batch)
        if self.optimizer is None:
            self._setup(args)
        beta = self.current_beta()
        self._scale_model.scale = self._scale_guide.scale = beta
        with _no_validation():
            loss = self._evaluate(args)
        return loss / _batch_size(args)

    def step(self, batch) -> dict[str, float]:
        """One optimiser step on `batch`; returns the loss per datum, the ELBO per datum
        (`-loss`, beta-weighted) and beta."""
        args = as_args(batch)
        self._last_args = args
        loss = self.loss(args)
        value = self._apply(loss, self.optimizer, self._params)
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": value, "elbo": -value, "beta": self._scale_model.scale}

    def parameters(self) -> list[torch.Tensor]:
        """The tensors this engine optimises: the model's and the guide's parameters and the
        param-store sites of the programs (complete after the first batch)."""
        return list(self._params) if self._params else super().parameters()

    def evidence_bound(self, batch, num_particles: int | None = None) -> float:
        """An estimate of the (beta-weighted) bound of `batch` per datum, without gradients: the
        ELBO, or the Renyi / IWAE bound for those ELBOs. `num_particles` overrides the engine's
        for this estimate (drawn in one vectorised run unless `vectorize_particles=False`)."""
        args = as_args(batch)
        if self.optimizer is None:
            self._setup(args)
        if num_particles is not None and (isinstance(num_particles, bool) or int(num_particles) < 1):
            raise ValueError(f"num_particles: expected a positive integer, got {num_particles!r}")
        elbo = self._elbo if num_particles is None else self._build_elbo(num_particles, jit=False)
        loss_fn = self._differentiable_loss_fn(elbo)
        self._scale_model.scale = self._scale_guide.scale = self.current_beta()
        with torch.no_grad(), _no_validation():
            if self.jit and num_particles is None:
                value = self._evaluate(args)
            else:
                value = loss_fn(self._model_fn, self._guide_fn, *args)
        return -float(value) / _batch_size(args)

    # ------------------------------------------------------------------ posterior
    def posterior(self, num_samples: int = 1000, *args, return_sites: Iterable[str] | None = None, **kwargs) -> Posterior:
        """`num_samples` draws of the guide's latent sites (one chain), from `pyro.infer.Predictive`.

        `args` are the program's arguments (needed by amortised guides and by autoguides over
        local latents); by default the last batch this engine stepped on."""
        if not args:
            if self._last_args is None:
                raise ValueError("posterior: pass the program's arguments (the data); this engine has not stepped yet")
            args = self._last_args
        if self.optimizer is None:
            self._setup(tuple(args))
        guide = self._guide_for_sampling()
        sites = list(return_sites or self.return_sites or [])
        with isolated(), torch.no_grad(), _no_validation():
            trace = trace_program(guide, tuple(args), kwargs)
        if not sites:
            sites = [n for n, s in sample_sites(trace) if site_kind(s) == "latent"]
        model = self.model.model
        with torch.no_grad(), _no_validation():
            try:
                predictive = Predictive(model, guide=guide, num_samples=int(num_samples), return_sites=sites, parallel=True)
                draws = predictive(*args, **kwargs)
            except (RuntimeError, ValueError, NotImplementedError, IndexError):
                predictive = Predictive(model, guide=guide, num_samples=int(num_samples), return_sites=sites, parallel=False)
                draws = predictive(*args, **kwargs)
        out = {}
        for k in sites:
            if k not in draws:
                continue
            value = draws[k]
            if k in trace.nodes:  # vectorised draws carry the plates' broadcast dimensions
                shape = trace.nodes[k]["value"].shape
                if value.numel() == int(num_samples) * shape.numel():
                    value = value.reshape((int(num_samples),) + tuple(shape))
            out[k] = value
        return Posterior.from_draws(out, {"engine": "svi", "elbo": self.elbo_name})

    def _guide_for_sampling(self) -> Callable:
        guide = self.guide
        if self.elbo_name == "enum":
            guide = config_enumerate(guide, default="parallel")
        return guide

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Step count, optimiser state, an autoguide's parameters and the values of param-store
        sites no module owns (unconstrained). The model's own parameters are not included."""
        state: dict[str, Any] = {"num_steps": self.num_steps}
        if self.optimizer is None:
            if self._pending is not None:
                state.update({k: v for k, v in self._pending.items() if k != "num_steps"})
            return state
        state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self._guide_module() is not None:
            state["guide"] = {k: v.detach().clone() for k, v in self.guide.state_dict().items()}
        if self._pyro_params:
            state["pyro_params"] = {k: v.detach().clone() for k, v in self._pyro_params.items()}
        return state

    def _guide_module(self) -> nn.Module | None:
        """The guide when it is a module whose parameters the model does not hold (an
        autoguide, or a guide module given to the engine): its state travels in state_dict."""
        guide = self.guide
        if not isinstance(guide, nn.Module) or any(m is guide for m in self.model.modules()):
            return None
        return guide

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.optimizer is None:
            # Parameters are built on the first batch; apply the state then.
            self._pending = dict(state)
            return
        self._load_params(state)
        self._load_optimizer(state)

    def _load_optimizer(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            if self.scheduler is None:
                raise ValueError("state: it holds a learning-rate scheduler's state, but this engine has no scheduler")
            self.scheduler.load_state_dict(state["scheduler"])

    def _load_params(self, state: dict[str, Any]) -> None:
        if state.get("guide") is not None:
            if self._guide_module() is None:
                raise ValueError("state: it holds a guide module's parameters, but this engine's guide is not a module of its own")
            self.guide.load_state_dict(state["guide"])
        for name, value in (state.get("pyro_params") or {}).items():
            if name not in self._pyro_params:
                raise ValueError(f"state: param-store site {name!r} is not used by this engine's programs")
            with torch.no_grad():
                self._pyro_params[name].copy_(value)

    def to(self, device=None, dtype=None) -> "SVI":
        super().to(device=device, dtype=dtype)
        if isinstance(self.guide, nn.Module):
            self.guide.to(device=device, dtype=dtype)
        if self._pyro_params and device is not None:
            if any(p.device != torch.device(device) for p in self._pyro_params.values()):
                raise ValueError("SVI.to: param-store sites cannot move after the first step; move the engine before training")
        if self.optimizer is not None:
            # Re-load the state so that the optimiser's buffers follow the parameters.
            self.optimizer.load_state_dict(self.optimizer.state_dict())
        return self

    def __repr__(self) -> str:
        guide = self._autoguide_kind and f"auto:{self._autoguide_kind}" or "own"
        return f"SVI({type(self.model).__name__}, elbo={self.elbo_name!r}, guide={guide}, num_particles={self.num_particles})"


_AUTOGUIDE_NAMES: set[str] = set()


def _batch_size(args: tuple) -> int:
    first = args[0] if args else None
    if torch.is_tensor(first) and first.dim() > 0:
        return int(first.shape[0])
    return 1


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []


@contextmanager
def _no_validation():
    """Switch off Pyro's (and torch.distributions') argument validation for the block."""
    if not pyro.infer.util.is_validation_enabled():
        yield
        return
    with pyro.validation_enabled(False):
        yield


def _renyi_differentiable_loss(elbo: RenyiELBO, params: list[torch.Tensor], model, guide, args, kwargs) -> torch.Tensor:
    """`RenyiELBO` as a differentiable loss. Pyro's Renyi bound offers only `loss_and_grads`
    (which backpropagates itself); its gradients are collected and returned as a surrogate
    whose value is Pyro's loss (minus the Renyi bound, the IWAE bound for alpha = 0) and whose
    gradient with respect to `params` is Pyro's gradient. The parameters' `.grad` are left as
    they were."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        value = elbo.loss_and_grads(model, guide, *args, **kwargs)
        grads = [p.grad for p in params]
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    reference = params[0] if params else None
    loss = torch.as_tensor(float(value), dtype=reference.dtype if reference is not None else None,
                           device=reference.device if reference is not None else None)
    surrogate = sum(((p * g).sum() for p, g in zip(params, grads) if g is not None), loss.new_zeros(()))
    return loss + (surrogate - surrogate.detach())


def _tracegraph_differentiable_loss(elbo: TraceGraph_ELBO, model, guide, args, kwargs) -> torch.Tensor:
    """`TraceGraph_ELBO`'s estimate as a differentiable loss: the value is minus the ELBO, the
    gradient that of Pyro's surrogate (baselines included)."""
    value, surrogate = elbo._loss_and_surrogate_loss(model, guide, args, kwargs)
    value = torch.as_tensor(value)
    if not torch.is_tensor(surrogate):
        surrogate = torch.as_tensor(surrogate)
    return -value.detach() + (surrogate - surrogate.detach())
