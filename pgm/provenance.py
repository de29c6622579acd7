"""Provenance tracking: which sample sites (and params) a tensor was computed from.

The same idea as `pyro.ops.provenance` (a tensor subclass whose `__torch_function__` unions
the provenance of the arguments into the result), kept lean: arguments are scanned directly
instead of through pytree flattening, which makes tracing a long program about ten times
cheaper. Provenance survives non-differentiable operations (integer casts, indexing), which
autograd does not see.
"""

from __future__ import annotations

import weakref

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["ProvenanceTensor", "provenance_of", "density_provenance", "plain", "TrackSites"]

_EMPTY: frozenset = frozenset()


class ProvenanceTensor(torch.Tensor):
    """A tensor that remembers the names of the sites it depends on (`._provenance`)."""

    _provenance: frozenset = _EMPTY

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        prov = _collect(args, _EMPTY)
        if kwargs:
            prov = _collect(kwargs.values(), prov)
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        return _attach(result, prov) if prov else result


def _collect(items, prov: frozenset) -> frozenset:
    for item in items:
        if isinstance(item, ProvenanceTensor):
            p = item._provenance
            if p and not p <= prov:
                prov = prov | p
        elif isinstance(item, (list, tuple)):
            prov = _collect(item, prov)
        elif isinstance(item, dict):
            prov = _collect(item.values(), prov)
    return prov


def _attach(result, prov: frozenset):
    if isinstance(result, torch.Tensor):
        out = result.as_subclass(ProvenanceTensor)
        out._provenance = prov
        return out
    if isinstance(result, (tuple, list)):
        return type(result)(_attach(r, prov) for r in result) if not hasattr(result, "_fields") else type(result)(
            *(_attach(r, prov) for r in result)
        )
    return result


def provenance_of(value) -> frozenset:
    """The site names `value` was computed from (empty for plain tensors)."""
    return _collect((value,), _EMPTY)


_LIBRARY_MODULES = ("torch.distributions", "pyro.distributions")
_ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.Size, torch.dtype, torch.device)


def _trusted(obj) -> bool:
    """A distribution, transform or constraint of torch's or Pyro's own, whose density depends
    only on the tensors it holds."""
    return type(obj).__module__.startswith(_LIBRARY_MODULES)


def _reachable_provenance(fn):
    """The union of the provenance of every tensor a library distribution holds (through its
    base distributions, transforms, masks and constraints), or None where something it holds
    could compute with tensors out of sight (a user subclass, a function, a module)."""
    prov, stack, seen = _EMPTY, [fn], set()
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            if isinstance(obj, ProvenanceTensor) and obj._provenance:
                prov = prov | obj._provenance
            continue
        if isinstance(obj, _ATOMS) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, weakref.ref):
            stack.append(obj())
        elif _trusted(obj) and not isinstance(obj, torch.nn.Module) and hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
        else:
            return None
    return prov


def density_provenance(fn, value) -> frozenset:
    """The sites and params the density `fn.log_prob(value)` depends on.

    For torch's and Pyro's own distributions this is read off the tensors the distribution
    holds, without computing the density (the cost of a long program's extraction is then
    close to one run of the program); anything else is scored, and the density's provenance
    taken.
    """
    prov = _reachable_provenance(fn)
    if prov is None:
        return provenance_of(fn.log_prob(value))
    return prov | provenance_of(value)


def plain(value):
    """`value` without provenance (a plain `torch.Tensor`)."""
    if isinstance(value, ProvenanceTensor):
        with torch._C.DisableTorchFunctionSubclass():
            return value.as_subclass(torch.Tensor)
    return value


class TrackSites(Messenger):
    """Give each sample site's (and param's) value the provenance of its own name only, so that
    a density's provenance is the set of sites it depends on directly."""

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg) or not isinstance(msg["value"], torch.Tensor):
            return
        msg["value"] = _attach(plain(msg["value"]), frozenset({msg["name"]}))

    def _pyro_post_param(self, msg):
        if isinstance(msg["value"], torch.Tensor):
            msg["value"] = _attach(plain(msg["value"]), frozenset({msg["name"]}))
