"""Provenance tracking: which sample sites (and params) a tensor was computed from.

The same idea as `pyro.ops.provenance` (a tensor subclass whose `__torch_function__` unions
the provenance of the arguments into the result), kept lean: arguments are scanned directly
instead of through pytree flattening, which makes tracing a long program about ten times
cheaper. Provenance survives non-differentiable operations (integer casts, indexing), which
autograd does not see.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["ProvenanceTensor", "provenance_of", "plain", "TrackSites"]

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
