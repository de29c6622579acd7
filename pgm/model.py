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

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
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
    point_mass: tuple[str, ...] = ()  # observed sites given by a Delta: data a deterministic function of latents

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
        """Why the program's joint density is not normalised for learning, or None. An observed
        site given by a Delta (an implicit model, x = G(z): a GAN) has no density at all. A
        `pyro.factor` potential leaves log Z unknown when its scope holds an observed site (an
        RBM, an EBM) or when its value depends on the model's learnable parameters (the top RBM
        of a DBN: its log Z changes with them). Parameter-free potentials over latents alone (a
        soft constraint in inference) keep the program usable by ELBO methods."""
        if s.point_mass:
            return (f"its observed sites ({', '.join(s.point_mass)}) are point masses (Delta): the data are a "
                    "deterministic function of the latents, so there is no likelihood (an implicit model; train it "
                    "adversarially, or give it a noise likelihood)")
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
        return stack_observed({name: trace.nodes[name]["value"] for name in observed})

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
        several observed sites of one shape stacked as columns (`stack_observed`), else a dict by site."""
        reason = self.missing("sample")
        if reason is not None:
            raise NotImplementedError(f"{type(self).__name__}.sample is not available: {reason}")
        inputs = self.example_inputs(n)
        observed = self.structure(*inputs).observed
        trace = trace_program(poutine.uncondition(self.model), inputs)
        return stack_observed({name: trace.nodes[name]["value"] for name in observed})

    def _log_joint_per_datum(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a tensor of data, got {type(x).__name__}")
        try:
            log_joint, nesting = enumerated_log_joint(self.model, (x,) + args, kwargs)
        except NotEnumerable as error:
            raise NotImplementedError(str(error)) from error
        return per_datum(log_joint, nesting, x.shape[0])

    def validate_data(self, *args, chunk_size: int = 4096, **kwargs) -> None:
        """Check data before training, so that what would fail deep inside torch at the first
        step fails here with a message naming the site, what was seen and what was expected.
        Args are the program's arguments, batch first; they are checked in chunks of
        `chunk_size` rows. Raises ValueError when:

        - a floating argument holds NaN or inf;
        - the program raises on the data (a shape or dtype that its networks refuse): the
          message names the site being processed, or the last one before the error;
        - an observed site's data do not fit its distribution: integer (or bool) data for a
          continuous likelihood (refused, not cast: convert them with ``x.to(model.dtype)``),
          the wrong event shape (e.g. the wrong width for a plain program), values outside the
          support (e.g. non-binary data for a Bernoulli likelihood), or values whose
          log-density is not finite (e.g. exactly 0 or 1 for a Beta likelihood);
        - the model's own guide raises on the first chunk, or the program raises when it is
          replayed with the guide's values (as ELBO methods run it), or a guide's value has
          another event shape than the model's site.

        Implicit likelihoods (a `Delta`, as a GAN's) are not scored. The model's parameters and
        buffers are left as they were (a guide that initialises itself from the first data it
        sees, or a batch-norm layer, is restored afterwards)."""
        for i, a in enumerate(args):
            if torch.is_tensor(a) and a.is_floating_point() and not torch.isfinite(a).all():
                bad = int((~torch.isfinite(a)).sum())
                raise ValueError(f"data: argument {i} has {bad} non-finite values (NaN or inf) out of {a.numel()}")
        tensors = [a for a in args if torch.is_tensor(a)]
        n = tensors[0].shape[0] if tensors and tensors[0].dim() else 0
        starts = range(0, n, chunk_size) if n else [None]
        with _kept_state(self):
            for start in starts:
                chunk = tuple(
                    a[start : start + chunk_size] if start is not None and torch.is_tensor(a) and a.dim() and a.shape[0] == n else a
                    for a in args
                )
                trace = self._validation_trace(self.model, chunk, kwargs, self._display_name())
                self._check_observed(trace)
                if start in (0, None) and callable(self.guide):
                    self._check_guide(self.guide, chunk, kwargs)

    def validate_guide(self, guide: Callable, *args, chunk_size: int = 4096, **kwargs) -> None:
        """Check another guide than the model's own (one given to an engine) as `validate_data`
        checks the model's: run it on the first `chunk_size` rows of the data, then the program
        replayed with its values. Raises ValueError naming the site."""
        check_program(guide, "guide")
        n = args[0].shape[0] if args and torch.is_tensor(args[0]) and args[0].dim() else None
        chunk = tuple(a[:chunk_size] if n is not None and torch.is_tensor(a) and a.dim() and a.shape[0] == n else a
                      for a in args)
        with _kept_state(self):
            self._check_guide(guide, chunk, kwargs)

    def _display_name(self) -> str:
        """How messages name this model."""
        return type(self).__name__

    def _validation_trace(self, program: Callable, chunk: tuple, kwargs: dict, what: str):
        """Trace `program` on `chunk` without side effects; an error becomes a ValueError naming
        the site where it happened and the data's shapes (or dtypes, for a dtype error)."""
        tracker = _SiteTracker(lambda name, msg: self._check_observed_site(name, msg, chunk, what))
        with isolated(), torch.no_grad():
            try:
                with tracker:
                    return trace_program(program, chunk, kwargs)
            except ProgramError as error:
                cause = error.__cause__ or error
                text = " ".join(str(cause).split("Trace Shapes:")[0].split())  # one line, without Pyro's shape table
                where = tracker.where(text)
                shapes = [tuple(a.shape) for a in chunk if torch.is_tensor(a)]
                odd = [str(a.dtype).replace("torch.", "") for a in chunk if torch.is_tensor(a) and a.dtype != self.dtype]
                if odd and _DTYPE_WORDS.search(text):
                    dtypes = [str(a.dtype).replace("torch.", "") for a in chunk if torch.is_tensor(a)]
                    raise ValueError(
                        f"data: dtypes {dtypes} do not fit {what} {where}: {type(cause).__name__}: {text}. The model "
                        f"computes in {self.dtype}: convert the data with x.to({self.dtype})"
                    ) from error
                note = f" (the data are {', '.join(odd)}; the model computes in {self.dtype})" if odd else ""
                raise ValueError(f"data: shapes {shapes} do not fit {what} {where}: {type(cause).__name__}: {text}{note}") from error
            except ValueError as error:  # raised by pgm's own checks (at a site): without Pyro's shape table
                text = str(error)
                if "Trace Shapes:" not in text:
                    raise
                raise ValueError(text.split("Trace Shapes:")[0].rstrip()) from error

    def _check_observed_site(self, name: str, msg: dict, chunk: tuple, what: str) -> None:
        """An observed site's data, as the program reaches it: a floating dtype for a continuous
        likelihood, and the distribution's event shape."""
        fn, value = msg["fn"], msg["value"]
        if not torch.is_tensor(value) or isinstance(unwrap(fn), dist.Unit) or msg["infer"].get("_deterministic"):
            return
        base = unwrap(fn)
        kind = type(base).__name__
        discrete = bool(getattr(base.support, "is_discrete", False))
        if not discrete and not value.is_floating_point() and not value.is_complex():
            raise ValueError(
                f"data: observed site {name!r} of {what} has a continuous {kind} likelihood, and its data are "
                f"{value.dtype}; expected floating-point data ({self.dtype}, the model's dtype): convert them with "
                f"x.to({self.dtype})"
            )
        shapes = [tuple(a.shape) for a in chunk if torch.is_tensor(a)]
        _check_event_shape(f"data: shapes {shapes} do not fit {what} at observed site {name!r}", value, fn,
                           f"its {kind} likelihood")

    def _check_observed(self, trace) -> None:
        """Each observed site's data against its distribution: support and a finite log-density
        (dtype and event shape are checked as the program reaches the site)."""
        owner = self._display_name()
        for name, site in sample_sites(trace):
            if site_kind(site) != "observed":
                continue
            fn, value = site["fn"], site["value"]
            base = unwrap(fn)
            kind = type(base).__name__
            where = f"observed site {name!r} of {owner}"
            if not torch.is_tensor(value):
                continue
            support = fn.support
            ok = support.check(value)
            if not bool(ok.all()):
                # count single values with the base distribution's elementwise support
                elementwise = base.support.check(value)
                if elementwise.shape != value.shape:
                    elementwise = ok
                bad = value[~elementwise] if elementwise.shape == value.shape else value
                raise ValueError(
                    f"data: {int((~elementwise).sum())} of {value.numel()} values of observed site {name!r} lie "
                    f"outside the support of its {kind} likelihood ({support}); e.g. "
                    f"{bad.flatten()[:3].tolist()}. Preprocess the data (e.g. binarize for a "
                    "Bernoulli likelihood) or choose another likelihood."
                )
            if isinstance(base, dist.Delta):  # an implicit likelihood (a GAN's): no density to check
                continue
            try:
                log_p = fn.log_prob(value)
            except Exception as error:  # noqa: BLE001 - reported with the site's name
                hint = f": convert the data with x.to({self.dtype})" if value.dtype != self.dtype else ""
                raise ValueError(
                    f"data: {where}: its {kind} likelihood cannot score data of shape {tuple(value.shape)} and dtype "
                    f"{value.dtype} (the model computes in {self.dtype}): {type(error).__name__}: "
                    f"{str(error).splitlines()[0]}{hint}"
                ) from error
            if not bool(torch.isfinite(log_p).all()):
                try:
                    per_value = base.log_prob(value)
                except Exception:  # noqa: BLE001 - fall back to whole data
                    per_value = log_p
                if per_value.shape == value.shape:
                    mask = ~torch.isfinite(per_value)
                    examples, densities = value[mask].flatten()[:3].tolist(), per_value[mask].flatten()[:3].tolist()
                    count, total = int(mask.sum()), value.numel()
                else:
                    rows = ~torch.isfinite(log_p)
                    examples, densities = value[rows].flatten()[:3].tolist() if rows.shape == value.shape[: rows.dim()] else [], log_p[rows].flatten()[:3].tolist()
                    count, total = int(rows.sum()), log_p.numel()
                raise ValueError(
                    f"data: {where}: its {kind} likelihood gives {count} of {total} values a non-finite log-density "
                    f"(e.g. values {examples} score {densities}). Values on the boundary of the support "
                    f"({base.support}), such as exactly 0 or 1 for a Beta, have zero or infinite density: move them "
                    "inside it (e.g. x.clamp(1e-3, 1 - 1e-3)) or choose another likelihood."
                )

    def _check_guide(self, guide: Callable, chunk: tuple, kwargs: dict) -> None:
        """Run a guide on a chunk of data, then the program replayed with the guide's values (as
        ELBO methods do); errors become ValueErrors naming the site."""
        owner = self._display_name()
        guide_trace = self._validation_trace(guide, chunk, kwargs, f"the guide of {owner}")
        replayed = poutine.replay(self.model, trace=guide_trace)
        trace = self._validation_trace(replayed, chunk, kwargs, f"{owner} run on its guide's values")
        for name, site in sample_sites(trace):
            if name in guide_trace.nodes and site_kind(site) == "latent" and torch.is_tensor(site["value"]):
                _check_event_shape(f"guide: the value of site {name!r}", site["value"], site["fn"],
                                   f"{owner}'s {type(unwrap(site['fn'])).__name__} at that site")

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


def stack_observed(values: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
    """The data of a program's observed sites as its data argument: the one site's value, or the
    columns of several sites of one shape stacked last (a program that observes `calls[..., 0]`
    and `calls[..., 1]` as two sites gives `calls`); else the dict by site name."""
    if len(values) == 1:
        return next(iter(values.values())).clone()
    shapes = {tuple(v.shape) for v in values.values()}
    if len(shapes) == 1:
        return torch.stack(list(values.values()), -1)
    return values


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


#: Words of torch's dtype errors ("mat1 and mat2 must have the same dtype, but got Long and Float").
_DTYPE_WORDS = re.compile(r"dtype|scalar type|can't be cast|\b(Long|Int|Short|Byte|Bool|Double|Half|BFloat16)\b")


class _SiteTracker(Messenger):
    """Remembers which sample site a program is processing, and the last one it finished, so
    that an error raised while it runs can say where it happened."""

    def __init__(self, on_observed: Callable[[str, dict], None] | None = None) -> None:
        super().__init__()
        self.current: str | None = None
        self.last: str | None = None
        self.on_observed = on_observed  # called on each observed site once it is processed

    def _pyro_sample(self, msg) -> None:
        if not site_is_subsample(msg):
            self.current = msg["name"]

    def _pyro_post_sample(self, msg) -> None:
        if not site_is_subsample(msg):
            self.last, self.current = msg["name"], None
            if msg["is_observed"] and self.on_observed is not None:
                self.on_observed(msg["name"], msg)

    def where(self, text: str = "") -> str:
        """Where the error happened, in words: at a site, or after the last finished one."""
        if self.current is not None:
            return f"at site {self.current!r}"
        named = re.search(r"at site '?([^\s',]+)'?", text)  # Pyro's plate errors name the site
        if named:
            return f"at site {named.group(1)!r}"
        if self.last is not None:
            return f"after site {self.last!r} (computing the next site's inputs)"
        return "before its first sample site"


def _check_event_shape(what: str, value: torch.Tensor, fn, expects: str) -> None:
    """Raise a ValueError when `value` does not have `fn`'s event shape (rightmost dims) and a
    batch shape broadcastable with `fn`'s."""
    event, batch = tuple(fn.event_shape), tuple(fn.batch_shape)
    k = len(event)
    per_datum = tuple(value.shape[1:]) if value.dim() else ()
    if value.dim() < k or tuple(value.shape[value.dim() - k :]) != event:
        raise ValueError(
            f"{what}: the data there have shape {tuple(value.shape)} ({per_datum} per datum), and {expects} expects "
            f"event shape {event} (batch shape {batch}), i.e. data of shape {batch + event}"
        )
    try:
        torch.broadcast_shapes(tuple(value.shape[: value.dim() - k]), batch)
    except RuntimeError:
        raise ValueError(
            f"{what}: the data have shape {tuple(value.shape)}, whose batch dims {tuple(value.shape[: value.dim() - k])} do "
            f"not broadcast with the batch shape {batch} of {expects} (event shape {event})"
        ) from None


@contextlib.contextmanager
def _kept_state(module: nn.Module) -> Iterator[None]:
    """Restore `module`'s parameters and buffers after the block (in place: optimisers that hold
    them keep working)."""
    saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()
             if torch.is_tensor(v) and not isinstance(v, nn.parameter.UninitializedTensorMixin)}
    try:
        yield
    finally:
        current = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, v in saved.items():
                t = current.get(k)
                if torch.is_tensor(t) and t.shape == v.shape and t.dtype == v.dtype and not torch.equal(t, v):
                    t.copy_(v)


def _overrides(model: Model, method: str) -> bool:
    return getattr(type(model), method) is not getattr(Model, method)


def _structure(trace) -> Structure:
    kinds: dict[str, list[str]] = {"latent": [], "observed": [], "factor": [], "deterministic": []}
    finite, continuous, discrete = True, True, True
    point_mass = []
    for name, site in sample_sites(trace):
        kind = site_kind(site)
        kinds[kind].append(name)
        base = unwrap(site["fn"])
        if kind == "latent" and not getattr(base, "has_enumerate_support", False):
            finite = False
        if kind == "observed" and isinstance(base, dist.Delta):
            point_mass.append(name)
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
        point_mass=tuple(point_mass),
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

    def _display_name(self) -> str:
        return f"the program {getattr(self._program, '__name__', type(self._program).__name__)!r}"
