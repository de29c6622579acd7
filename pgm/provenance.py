"""Provenance tracking: which sample sites (and params) a tensor was computed from.

The same idea as `pyro.ops.provenance` (a tensor subclass whose `__torch_function__` unions
the provenance of the arguments into the result), kept lean: arguments are scanned directly
instead of through pytree flattening, which makes tracing a long program about ten times
cheaper. Provenance survives non-differentiable operations (integer casts, indexing), which
autograd does not see.
"""

from __future__ import annotations

import os
import sys
import weakref

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch.overrides import TorchFunctionMode
from pyro.poutine.util import site_is_subsample

__all__ = [
    "ProvenanceTensor", "provenance_of", "density_provenance", "plain", "TrackSites", "track_arguments",
    "arg_token", "is_arg_token", "TrackParameters",
]

_EMPTY: frozenset = frozenset()


class ProvenanceTensor(torch.Tensor):
    """A tensor that remembers the names of the sites it depends on (`._provenance`).

    Turning it into Python numbers (`item`, `float`, `int`, `bool`, `tolist`, `numpy`) loses
    the provenance; while a `TrackSites` is active such a conversion is recorded (see
    `TrackSites.leaks`) so that extraction can warn that edges may be missing.
    """

    _provenance: frozenset = _EMPTY

    def item(self):
        _leaked(self, "item")
        return plain(self).item()

    def tolist(self):
        _leaked(self, "tolist")
        return plain(self).tolist()

    def numpy(self, *args, **kwargs):
        _leaked(self, "numpy")
        return plain(self).numpy(*args, **kwargs)

    def __float__(self):
        _leaked(self, "float")
        return plain(self).__float__()

    def __int__(self):
        _leaked(self, "int")
        return plain(self).__int__()

    def __index__(self):
        _leaked(self, "index")
        return plain(self).__index__()

    def __bool__(self):
        _leaked(self, "bool")
        return plain(self).__bool__()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SHAPE_ONLY:  # a fresh tensor shaped like its argument: no dependence
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func is torch.broadcast_tensors:  # each output depends on its own input only
            with torch._C.DisableTorchFunctionSubclass():
                result = func(*args, **kwargs)
            return tuple(_attach(r, provenance_of(a)) if provenance_of(a) else r for r, a in zip(result, args))
        prov = _collect(args, _EMPTY)
        if kwargs:
            prov = _collect(kwargs.values(), prov)
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        return _attach(result, prov) if prov else result


#: Functions whose result depends on their tensor arguments' shapes, dtypes and devices only.
_SHAPE_ONLY = frozenset(
    [torch.zeros_like, torch.ones_like, torch.empty_like, torch.rand_like, torch.randn_like, torch.randint_like]
    + [getattr(torch.Tensor, n) for n in ("new_tensor", "new_ones", "new_zeros", "new_empty", "new_full")]
)


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


_ARG_PREFIX = "\x00arg:"


def arg_token(i) -> str:
    """The provenance name given to the program's argument `i` (a position or a keyword)."""
    return f"{_ARG_PREFIX}{i}"


def is_arg_token(name: str) -> bool:
    return name.startswith(_ARG_PREFIX)


def track_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict, dict]:
    """The program's tensor arguments, each with a provenance token of its own (`arg_token`),
    and per token the argument's (numel, data pointer), for `TrackSites(arguments=...)`.

    A site claims an argument's token only when its value is the whole argument (the tensor
    itself or a view of all of it): a slice `y[t]` observed at one site of a loop does not
    make the whole of `y` that site's value."""
    seen = {}

    def wrap(a, i):
        if not isinstance(a, torch.Tensor):
            return a
        seen[arg_token(i)] = (a.numel(), a.data_ptr() if a.numel() else None)
        return _attach(plain(a), frozenset({arg_token(i)}))

    new_args = tuple(wrap(a, i) for i, a in enumerate(args))
    new_kwargs = {k: wrap(v, k) for k, v in kwargs.items()}
    return new_args, new_kwargs, seen


def _same_tensor(value, info) -> bool:
    numel, ptr = info
    return ptr is not None and value.numel() == numel and plain(value).data_ptr() == ptr


class TrackParameters(TorchFunctionMode):
    """Give what is computed from a network's parameters the provenance of that network.

    `names` maps each `nn.Parameter` (by identity) to the name of the node it belongs to (a
    network such as "decoder", or a model's own parameter such as "W"); a parameter's name
    in the trace is then what `density_provenance` reports for densities that use it.
    """

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = names

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        found = set()
        self._find(args, found)
        if kwargs:
            self._find(kwargs.values(), found)
        if not found:
            return result
        return _attach(result, provenance_of(result) | frozenset(found))

    def _find(self, items, found: set) -> None:
        for item in items:
            if isinstance(item, torch.nn.Parameter):
                name = self.names.get(id(item))
                if name is not None:
                    found.add(name)
            elif isinstance(item, (list, tuple)):
                self._find(item, found)


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


#: The active `TrackSites` handlers (innermost last): where leaks are recorded.
_RECORDERS: list = []
_LIBRARY_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (torch, pyro) if getattr(m, "__file__", None)
)


def _leaked(t: "ProvenanceTensor", how: str) -> None:
    """Record that `t`'s value left the tensor world by `how`, unless a library (torch, Pyro)
    did it internally, or nothing is being tracked."""
    if not _RECORDERS or not t._provenance:
        return
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    where = frame.f_code.co_filename if frame is not None else ""
    if where.startswith(_LIBRARY_DIRS):
        return
    line = frame.f_lineno if frame is not None else 0
    _RECORDERS[-1].leaks.append((t._provenance, how, f"{where}:{line}"))


def plain(value):
    """`value` without provenance (a plain `torch.Tensor`)."""
    if isinstance(value, ProvenanceTensor):
        with torch._C.DisableTorchFunctionSubclass():
            return value.as_subclass(torch.Tensor)
    return value


class TrackSites(Messenger):
    """Give each sample site's (and param's) value the provenance of its own name only, so that
    a density's provenance is the set of sites it depends on directly.

    Tensors the program received as arguments may be given a provenance of their own first
    (`arg_token`); an observed site whose value was computed from such tokens only (the very
    tensor, or a reshape of it) then claims them (`claimed`: token -> site), so that what the
    program computed from that argument before declaring the site still counts as computed
    from the site. `leaks` lists the values turned into Python numbers while tracking, as
    (provenance, how, where).
    """

    def __init__(self, arguments: dict[str, tuple] | None = None):
        super().__init__()
        self.arguments = arguments or {}  # token -> (shape, data_ptr) of the argument
        self.claimed: dict[str, str] = {}
        self.leaks: list[tuple[frozenset, str, str]] = []

    def __enter__(self):
        _RECORDERS.append(self)
        return super().__enter__()

    def __exit__(self, *exc):
        if self in _RECORDERS:
            _RECORDERS.remove(self)
        return super().__exit__(*exc)

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg) or not isinstance(msg["value"], torch.Tensor):
            return
        if msg["is_observed"]:
            prov = provenance_of(msg["value"])
            if len(prov) == 1:
                (token,) = prov
                if token in self.arguments and _same_tensor(msg["value"], self.arguments[token]):
                    self.claimed.setdefault(token, msg["name"])
        msg["value"] = _attach(plain(msg["value"]), frozenset({msg["name"]}))

    def _pyro_post_param(self, msg):
        if isinstance(msg["value"], torch.Tensor):
            msg["value"] = _attach(plain(msg["value"]), frozenset({msg["name"]}))
