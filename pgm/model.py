"""`pgm.Model`: the base class of every zoo model, and the model protocol engines rely on.

A model is a Pyro program (`model`, optionally `guide`) plus the capabilities that inference
engines look for. Each capability has a default derived from the program; a subclass may
override it with a closed form (and tests check the override against the derived one):

=============  ====================================  ============================================
capability     meaning                               derived by default from
=============  ====================================  ============================================
``log_prob``   exact log density, per datum          a latent-free program, or summing out finite
                                                     latents by enumeration (no factor sites)
``energy``     unnormalised negative log density     every site's density (factors included),
                                                     finite latents summed out
``sample``     draws from the model                  ancestral sampling of a directed program
``guide``      approximate posterior                 written by the model (else engines use an
                                                     autoguide)
=============  ====================================  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import pyro.poutine as poutine
import torch
from torch import nn

from pgm.enumerate import NotEnumerable, enumerated_log_joint
from pgm.program import (
    ProgramError,
    check_program,
    isolated,
    sample_sites,
    site_kind,
    trace_program,
    unwrap,
)

__all__ = ["Model", "ProgramModel", "Structure", "CAPABILITIES"]

CAPABILITIES = ("program", "guide", "latents", "log_prob", "energy", "sample", "continuous", "discrete", "normalized")


@dataclass(frozen=True)
class Structure:
    """What one trace of a program shows: its sites by kind, in program order."""

    latent: tuple[str, ...]
    observed: tuple[str, ...]
    factor: tuple[str, ...]
    deterministic: tuple[str, ...]
    finite_latent: bool  # every latent site has a finite support
    continuous_data: bool  # every observed site has a continuous (real-valued) support
    discrete_data: bool  # every observed site has a discrete support

    @property
    def directed(self) -> bool:
        """True when the program has no `pyro.factor` potentials."""
        return not self.factor


class Model(nn.Module):
    """Base class of the zoo: a Pyro program (`model`, optional `guide`) and its capabilities.

    Subclasses write `model(x, ...)` with the data as first argument (batch first, under a
    data plate) and `example_inputs(batch_size)` returning arguments that let the program be
    traced without data. Device and dtype follow the module's parameters and buffers.

    >>> import torch, pyro, pyro.distributions as dist
    >>> class Coin(Model):
    ...     def model(self, x):
    ...         with pyro.plate("data", x.shape[0]):
    ...             pyro.sample("x", dist.Bernoulli(0.25), obs=x)
    ...     def example_inputs(self, batch_size=2):
    ...         return (torch.zeros(batch_size),)
    >>> coin = Coin()
    >>> coin.log_prob(torch.tensor([1.0, 0.0])).exp()
    tensor([0.2500, 0.7500])
    >>> sorted(coin.capabilities())
    ['discrete', 'energy', 'log_prob', 'normalized', 'program', 'sample']
    """

    #: Registry name (set by `models.register`).
    name: ClassVar[str | None] = None
    #: The approximate posterior program, or None where the model has none of its own.
    guide: Callable | None = None

    def __init__(self) -> None:
        super().__init__()
        # An anchor so that device and dtype are known even for a model with no parameters.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # ------------------------------------------------------------------ the program
    def model(self, *args, **kwargs):
        """The generative program. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not define its model program")

    def example_inputs(self, batch_size: int = 2) -> tuple:
        """Arguments for `model` that trace it without data: `batch_size` placeholder data."""
        raise NotImplementedError(
            f"{type(self).__name__}.example_inputs is not defined: pass the program's "
            "arguments explicitly (pgm.graph_of(model, *args))"
        )

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters and buffers."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's parameters and buffers."""
        return self._anchor.dtype

    def trace(self, *args, **kwargs):
        """One execution trace of the program (`example_inputs()` when no argument is given)."""
        if not args and not kwargs:
            args = self.example_inputs()
        return trace_program(self.model, args, kwargs)

    def structure(self, *args, **kwargs) -> Structure:
        """The program's sites by kind, from one trace with no side effects."""
        with isolated(), torch.no_grad():
            trace = self.trace(*args, **kwargs)
        return _structure(trace)

    # ------------------------------------------------------------------ capabilities
    def capabilities(self) -> frozenset[str]:
        """The capabilities this model offers (see `pgm.model.CAPABILITIES`)."""
        return frozenset(c for c in CAPABILITIES if self.missing(c) is None)

    def missing(self, capability: str) -> str | None:
        """None if the model has `capability`, else a sentence saying why not."""
        if capability not in CAPABILITIES:
            raise ValueError(f"capability: expected one of {CAPABILITIES}, got {capability!r}")
        if capability == "program":
            return None
        overridden = {"log_prob", "energy", "sample"}
        if capability in overridden and _overrides(self, capability):
            return None
        if capability == "guide":
            return None if self.guide is not None else "it writes no guide of its own"
        s = self.structure()
        if capability == "latents":
            return None if s.latent else "its program has no latent sites"
        if capability == "continuous":
            return None if s.continuous_data else "its observed data are not continuous"
        if capability == "discrete":
            return None if s.discrete_data else "its observed data are not discrete"
        if capability == "normalized":
            return self._unnormalised_reason(s)
        if not s.finite_latent and capability in ("log_prob", "energy"):
            cont = ", ".join(repr(n) for n in s.latent)
            return f"its latent sites ({cont}) cannot all be summed out exactly"
        if capability == "log_prob" and s.factor:
            return "its pyro.factor potentials leave the density unnormalised (needs log Z)"
        if capability == "sample" and s.factor:
            return "it is undirected (pyro.factor potentials): sampling needs a Markov chain"
        return None

    def _unnormalised_reason(self, s: Structure) -> str | None:
        """Why the program's joint density is not normalised for learning, or None. A
        `pyro.factor` potential leaves log Z unknown when its scope holds an observed site (an
        RBM, an EBM) or when its value depends on the model's learnable parameters (the top RBM
        of a DBN: its log Z changes with them). Parameter-free potentials over latents alone (a
        soft constraint in inference) keep the program usable by ELBO methods."""
        if not s.factor:
            return None
        from pgm.extract import graph_of

        observed = set(s.observed)
        graph = graph_of(self)
        on_data = sorted(f for f, spec in graph.factors.items() if observed & set(spec["scope"]))
        if on_data:
            return (f"its pyro.factor potentials over observed sites ({', '.join(on_data)}) leave the likelihood "
                    "unnormalised (log Z unknown)")
        with isolated(), torch.enable_grad():
            trace = self.trace()
        learnable = sorted(
            name for name, site in sample_sites(trace)
            if site_kind(site) == "factor" and getattr(getattr(unwrap(site["fn"]), "log_factor", None), "requires_grad", False)
        )
        if learnable:
            return (f"its pyro.factor potentials ({', '.join(learnable)}) depend on learnable parameters, so their "
                    "log Z changes with them and is unknown")
        return None

    # ------------------------------------------------------------------ the model's own data
    def own_data(self, seed: int = 0):
        """The data this model carries (a `pgm.data.Dataset`), trained on when no data set is
        named (`pgm train NAME`), or None. Textbook models carry theirs: eight schools' effects,
        or draws of their own program (`simulate`)."""
        return None

    @torch.no_grad()
    def simulate(self, n: int, seed: int = 0) -> torch.Tensor:
        """The observed site of one run of the program on `example_inputs(n)` with every site
        drawn (latents from their priors), under a seeded RNG that leaves the global one as it was."""
        import pyro

        from inference.checkpoint import get_rng_state, set_rng_state

        state = get_rng_state()
        try:
            pyro.set_rng_seed(int(seed))
            with isolated():
                trace = trace_program(poutine.uncondition(self.model), self.example_inputs(n))
        finally:
            set_rng_state(state)
        observed = self.structure(*self.example_inputs(n)).observed
        return trace.nodes[observed[0]]["value"].clone()

    # ------------------------------------------------------------------ derived defaults
    def log_prob(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Exact log density of each datum, shape `(batch,)`.

        Derived from a latent-free program, or by summing out finite latents exactly.
        """
        reason = self.missing("log_prob")
        if reason is not None:
            raise NotImplementedError(
                f"{type(self).__name__}.log_prob is not available: {reason}. "
                "Bound it with inference.evaluate.log_likelihood(model, x, method='iwae')."
            )
        return self._log_joint_per_datum(x, *args, **kwargs)

    def energy(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Unnormalised negative log density of each datum, shape `(batch,)`.

        `-energy(x) - log Z` is the log-likelihood; latent (hidden) sites are summed out, so for
        a Boltzmann machine this is the free energy of the visible units.
        """
        reason = self.missing("energy")
        if reason is not None and not _overrides(self, "energy"):
            raise NotImplementedError(f"{type(self).__name__}.energy is not available: {reason}")
        return -self._log_joint_per_datum(x, *args, **kwargs)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """`n` draws of the observed sites by ancestral sampling: a tensor `(n, *shape)`,
        or a dict by site name when the program observes several sites."""
        reason = self.missing("sample")
        if reason is not None:
            raise NotImplementedError(f"{type(self).__name__}.sample is not available: {reason}")
        inputs = self.example_inputs(n)
        observed = self.structure(*inputs).observed
        trace = trace_program(poutine.uncondition(self.model), inputs)
        drawn = {name: trace.nodes[name]["value"] for name in observed}
        return next(iter(drawn.values())) if len(drawn) == 1 else drawn

    def _log_joint_per_datum(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a tensor of data, got {type(x).__name__}")
        try:
            log_joint, nesting = enumerated_log_joint(self.model, (x,) + args, kwargs)
        except NotEnumerable as error:
            raise NotImplementedError(str(error)) from error
        return per_datum(log_joint, nesting, x.shape[0])

    def validate_data(self, *args, chunk_size: int = 4096, **kwargs) -> None:
        """Check data before training: finite values, shapes the program accepts, and observed
        values inside the support of their likelihood (e.g. binary data for a Bernoulli
        decoder). Raises ValueError naming the problem. Args are the program's arguments,
        batch first; they are checked in chunks of `chunk_size` rows."""
        tensors = [a for a in args if torch.is_tensor(a)]
        for i, a in enumerate(args):
            if torch.is_tensor(a) and a.is_floating_point() and not torch.isfinite(a).all():
                bad = int((~torch.isfinite(a)).sum())
                raise ValueError(f"data: argument {i} has {bad} non-finite values (NaN or inf) out of {a.numel()}")
        n = tensors[0].shape[0] if tensors and tensors[0].dim() else 0
        starts = range(0, n, chunk_size) if n else [None]
        for start in starts:
            chunk = tuple(
                a[start : start + chunk_size] if start is not None and torch.is_tensor(a) and a.dim() and a.shape[0] == n else a
                for a in args
            )
            with isolated(), torch.no_grad():
                try:
                    trace = trace_program(self.model, chunk, kwargs)
                except ProgramError as error:
                    shapes = [tuple(a.shape) for a in chunk if torch.is_tensor(a)]
                    cause = str(error.__cause__ or error).split("Trace Shapes:")[0].strip()  # Pyro's shape table
                    raise ValueError(f"data: shapes {shapes} do not fit {type(self).__name__}: {cause}") from error
            for name, site in sample_sites(trace):
                if site_kind(site) != "observed":
                    continue
                support = site["fn"].support
                value = site["value"]
                ok = support.check(value)
                if not bool(ok.all()):
                    # count single values with the base distribution's elementwise support
                    base = unwrap(site["fn"])
                    elementwise = base.support.check(value)
                    if elementwise.shape != value.shape:
                        elementwise = ok
                    bad = value[~elementwise] if elementwise.shape == value.shape else value
                    raise ValueError(
                        f"data: {int((~elementwise).sum())} of {value.numel()} values of observed site {name!r} lie "
                        f"outside the support of its {type(base).__name__} likelihood ({support}); e.g. "
                        f"{bad.flatten()[:3].tolist()}. Preprocess the data (e.g. binarize for a "
                        "Bernoulli likelihood) or choose another likelihood."
                    )

    @classmethod
    def from_program(
        cls,
        model: Callable,
        guide: Callable | None = None,
        *,
        example_args: tuple | None = None,
        example_kwargs: dict | None = None,
    ) -> "ProgramModel":
        """Wrap a plain Pyro program (and optional guide) as a `Model`.

        `example_args` are arguments that trace the program (used by `graph_of` and engines
        that inspect the model); the data, when there is any, is the first argument.
        """
        return ProgramModel(model, guide, example_args=example_args, example_kwargs=example_kwargs)


def per_datum(log_joint: torch.Tensor, nesting: int, batch_size: int) -> torch.Tensor:
    """Reduce a log density over plate dimensions to one value per datum, shape `(batch,)`.

    The data plate is the outermost plate dimension whose size is `batch_size`; every other
    dimension is summed. A program without such a plate gives the joint value repeated.
    """
    if log_joint.dim() < nesting:
        log_joint = log_joint.reshape((1,) * (nesting - log_joint.dim()) + log_joint.shape)
    dims = list(range(log_joint.dim() - nesting, log_joint.dim()))
    data_dim = next((d for d in dims if log_joint.shape[d] == batch_size), None)
    if data_dim is None:
        return log_joint.sum().expand(batch_size)
    other = [d for d in range(log_joint.dim()) if d != data_dim]
    return log_joint.sum(dim=other) if other else log_joint


def _overrides(model: Model, method: str) -> bool:
    return getattr(type(model), method) is not getattr(Model, method)


def _structure(trace) -> Structure:
    kinds: dict[str, list[str]] = {"latent": [], "observed": [], "factor": [], "deterministic": []}
    finite, continuous, discrete = True, True, True
    for name, site in sample_sites(trace):
        kind = site_kind(site)
        kinds[kind].append(name)
        base = unwrap(site["fn"])
        if kind == "latent" and not getattr(base, "has_enumerate_support", False):
            finite = False
        if kind == "observed":
            is_discrete = bool(getattr(base.support, "is_discrete", False))
            continuous &= not is_discrete
            discrete &= is_discrete
    return Structure(
        latent=tuple(kinds["latent"]),
        observed=tuple(kinds["observed"]),
        factor=tuple(kinds["factor"]),
        deterministic=tuple(kinds["deterministic"]),
        finite_latent=finite,
        continuous_data=continuous and bool(kinds["observed"]),
        discrete_data=discrete and bool(kinds["observed"]),
    )


class ProgramModel(Model):
    """A `Model` around a user's Pyro program (see `Model.from_program`)."""

    def __init__(self, model: Callable, guide: Callable | None = None, *, example_args=None, example_kwargs=None):
        super().__init__()
        check_program(model, "model")
        if guide is not None:
            check_program(guide, "guide")
        self._program = model
        self._guide_program = guide
        self._example_args = tuple(example_args) if example_args is not None else None
        self._example_kwargs = dict(example_kwargs or {})
        # Register the program's modules (e.g. a bound method of an nn.Module) as children.
        for i, fn in enumerate((model, guide)):
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, nn.Module):
                self.add_module(f"program_owner_{i}", owner)

    @property
    def guide(self) -> Callable | None:  # type: ignore[override]
        return self._guide_program

    def model(self, *args, **kwargs):
        return self._program(*args, **kwargs)

    def example_inputs(self, batch_size: int = 2) -> tuple:
        if self._example_args is None:
            raise NotImplementedError(
                f"the program {getattr(self._program, '__name__', self._program)!r} was wrapped "
                "without example_args: pass Model.from_program(..., example_args=(data,))"
            )
        return self._example_args

    def trace(self, *args, **kwargs):
        if not args and not kwargs:
            return trace_program(self.model, self.example_inputs(), self._example_kwargs)
        return trace_program(self.model, args, kwargs)

    def __repr__(self) -> str:
        return f"ProgramModel({getattr(self._program, '__name__', self._program)!r})"
