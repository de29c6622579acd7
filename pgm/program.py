"""Running a Pyro program for inspection: traces, site kinds, and isolation from side effects.

Everything in `pgm` that looks inside a program goes through this module, so that the rules
("what is a factor site", "what counts as observed") live in one place.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

__all__ = [
    "ProgramError",
    "check_program",
    "isolated",
    "buffers_kept",
    "trace_program",
    "sample_sites",
    "site_kind",
    "unwrap",
    "plate_frames",
    "max_plate_nesting",
]


class ProgramError(RuntimeError):
    """A Pyro program raised while being traced; the message names the program and the cause."""


def check_program(program: Any, argname: str = "model") -> Callable:
    """Return `program` if it is callable, else raise a `TypeError` that names `argname`."""
    if not callable(program) or isinstance(program, type):
        raise TypeError(
            f"{argname}: expected a pgm.Model or a Pyro program (a callable that calls "
            f"pyro.sample), got {type(program).__name__} {program!r:.60}"
        )
    return program


def _program_name(program: Callable) -> str:
    owner = getattr(program, "__self__", None)
    name = getattr(program, "__qualname__", None) or type(program).__name__
    if owner is not None and not inspect.isclass(owner):
        return f"{type(owner).__name__}.{getattr(program, '__name__', name)}"
    return name


@contextlib.contextmanager
def isolated(rng: bool = True) -> Iterator[None]:
    """Run a block without side effects on RNG states, Pyro's param store or torch's grad mode.

    Restores the torch (CPU and every CUDA device), numpy and Python RNG states, removes any
    parameter the block added to Pyro's param store, and restores grad mode. With
    `rng=False` the RNG states are left to advance (a block that draws random values on
    purpose, one draw after another, must not draw the same values each time).
    """
    store = pyro.get_param_store()
    names_before = set(store.keys())
    py_state = random.getstate()
    np_state = np.random.get_state()
    grad_mode = torch.is_grad_enabled()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        if rng:
            with torch.random.fork_rng(devices=devices):
                yield
        else:
            yield
    finally:
        if rng:
            random.setstate(py_state)
            np.random.set_state(np_state)
        torch.set_grad_enabled(grad_mode)
        for name in set(store.keys()) - names_before:
            del store[name]


@contextlib.contextmanager
def buffers_kept() -> Iterator[None]:
    """Run a block that may call networks without changing any module's buffers (BatchNorm's
    running statistics and counters): every module that runs a forward pass inside the block
    has its buffers copied before its first forward and restored, in place, at the end."""
    saved: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def keep(module, _inputs):
        if id(module) not in saved:
            saved[id(module)] = [(b, b.detach().clone()) for b in module.buffers(recurse=False) if b is not None]

    handle = torch.nn.modules.module.register_module_forward_pre_hook(keep)
    try:
        yield
    finally:
        handle.remove()
        with torch.no_grad():
            for pairs in saved.values():
                for buffer, copy in pairs:
                    buffer.copy_(copy)


def trace_program(program: Callable, args: tuple = (), kwargs: dict | None = None) -> poutine.Trace:
    """Trace `program(*args, **kwargs)`; errors inside the program become a `ProgramError`."""
    check_program(program)
    kwargs = kwargs or {}
    try:
        return poutine.trace(program).get_trace(*args, **kwargs)
    except (TypeError, ValueError) as error:
        if _raised_by_pgm(error):
            raise
        raise ProgramError(
            f"tracing the program {_program_name(program)} raised {type(error).__name__}: {error}. "
            "Check that the arguments match the program's signature and data shapes."
        ) from error
    except Exception as error:
        raise ProgramError(
            f"tracing the program {_program_name(program)} raised {type(error).__name__}: {error}"
        ) from error


def _raised_by_pgm(error: BaseException) -> bool:
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and "/pgm/" in last.tb_frame.f_code.co_filename.replace("\\", "/")


def unwrap(fn: dist.Distribution) -> dist.Distribution:
    """The innermost distribution under Independent / Expanded / Masked wrappers."""
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return fn


def sample_sites(trace: poutine.Trace) -> list[tuple[str, dict]]:
    """The sample sites of a trace in program order, without plate subsample sites."""
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def site_kind(site: dict) -> str:
    """One of "factor", "deterministic", "observed", "latent" for a sample site."""
    if isinstance(unwrap(site["fn"]), dist.Unit):
        return "factor"
    if site["infer"].get("_deterministic", False) or _is_reparam_delta(site):
        return "deterministic"
    if site["is_observed"]:
        return "observed"
    return "latent"


def _is_reparam_delta(site: dict) -> bool:
    """A site that a `poutine.reparam` reparameterizer replaced by a deterministic function of
    its auxiliary sites: Pyro's reparameterizers leave an "observed" `Delta` at the value they
    computed (masked out of the density, or carrying a log-density term such as a Jacobian)."""
    fn = site["fn"]
    inner = unwrap(fn)
    if not (site["is_observed"] and isinstance(inner, dist.Delta)):
        return False
    if isinstance(fn, dist.MaskedDistribution) and fn._mask is False:
        return True
    v, value = inner.v, site["value"]
    return (
        torch.is_tensor(v) and torch.is_tensor(value) and v.shape == value.shape
        and v.numel() > 0 and v.data_ptr() == value.data_ptr()
    )


def plate_frames(site: dict) -> list:
    """The vectorized plate frames of a site, outermost first."""
    frames = [f for f in site["cond_indep_stack"] if f.vectorized]
    return sorted(frames, key=lambda f: f.dim)


def max_plate_nesting(trace: poutine.Trace) -> int:
    """How many batch dimensions the program's plates use (Pyro's `max_plate_nesting`)."""
    dims = [-f.dim for _, s in sample_sites(trace) for f in plate_frames(s)]
    return max(dims, default=0)
