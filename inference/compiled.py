"""Gradients of a program's log joint, traced once into a graph of tensor operations.

Samplers that draw from conditionals derived by autograd (`inference.Gibbs` for binary units)
evaluate the gradient of the same log joint at new values thousands of times. Run eagerly, each
evaluation re-executes the Pyro program (its handlers, distributions and plates) and the whole
forward pass, although the gradient needs little of it: for ``sum((v @ W) * h)`` the gradient
with respect to `v` is ``h @ W.T``, and the product ``v @ W`` is never used.

`CompiledGradient` traces the gradient once per signature (the shapes, dtypes and devices of the
values and of the module's parameters) with `torch.fx.experimental.proxy_tensor.make_fx`, on
fake tensors and with in-place operations functionalised, then

- drops every operation the gradient does not use (dead-code elimination: the forward products
  that only fed the value of the log joint go),
- folds the parts that depend on no input into constants (the base measures' log
  probabilities, the cotangent), then drops products with constant ones and sums with constant
  zeros (what the cotangent and the constant base measures leave),

and runs the resulting graph of ATen operations with the module's current parameters as inputs
(so training between calls is seen). A program whose log joint cannot be traced this way (a
branch on a tensor's value, random operations inside the log joint) is reported by returning
None, and callers fall back to eager autograd; the first evaluation of each new graph is checked
against eager autograd too, and a mismatch disables the compiled path with a warning.

>>> import torch
>>> lin = torch.nn.Linear(3, 2, bias=False)
>>> grad = CompiledGradient(lambda values: (lin(values["x"]) * values["y"]).sum(), lin, wrt=("x",))
>>> x, y = torch.randn(4, 3), torch.randn(4, 2)
>>> torch.allclose(grad({"x": x, "y": y})["x"], y @ lin.weight)
True
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

import torch
from torch import fx, nn

__all__ = ["CompiledGradient"]


def _signature(tensors: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, v.shape, v.dtype, v.device) for k, v in tensors.items())


class _Wrapper(nn.Module):
    """Holds the module as a submodule so that `torch.func.functional_call` can swap its
    parameters for the traced inputs while `fn` runs."""

    def __init__(self, module: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.inner = module
        object.__setattr__(self, "fn", fn)  # a plain attribute, not a submodule

    def forward(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(values)


class CompiledGradient:
    """The gradient of the scalar ``fn(values)`` with respect to ``values[s]`` for `s` in `wrt`,
    where `fn` may read the parameters and buffers of `module` (see the module docstring).

    ``grad(values)`` returns ``{s: d fn / d values[s]}`` (each of ``values[s]``'s shape), or None
    when `fn` cannot be compiled for these values (the caller then uses eager autograd).
    - `check`: compare each newly compiled graph with eager autograd on its first call;
    - `rtol`, `atol`: the tolerances of that check.
    """

    def __init__(self, fn: Callable[[dict], torch.Tensor], module: nn.Module, wrt: Iterable[str], *, check: bool = True,
                 rtol: float = 1e-4, atol: float = 1e-5) -> None:
        self.fn, self.module, self.wrt = fn, module, tuple(wrt)
        if not self.wrt:
            raise ValueError("wrt: expected at least one value to differentiate with respect to")
        self.check, self.rtol, self.atol = bool(check), float(rtol), float(atol)
        self._wrapper = _Wrapper(module, fn)
        self._graphs: dict[tuple, fx.GraphModule | None] = {}
        self.failure: str | None = None  # why the last signature could not be compiled

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: t.detach() for k, t in (*self._wrapper.named_parameters(), *self._wrapper.named_buffers())}

    def __call__(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        missing = [s for s in self.wrt if s not in values]
        if missing:
            raise ValueError(f"values: expected the sites {list(self.wrt)} to differentiate, missing {missing}")
        state = self._state()
        values = {k: v.detach() for k, v in values.items()}
        key = (_signature(state), _signature(values))
        if key not in self._graphs:
            graph = self._compile(state, values)
            if graph is not None and self.check and not self._agrees(graph, state, values):
                graph = None
            self._graphs[key] = graph
        graph = self._graphs[key]
        if graph is None:
            return None
        return graph(state, *self._split(values))

    # ------------------------------------------------------------------ tracing
    def _split(self, values: dict) -> tuple[dict, dict]:
        return {s: values[s] for s in self.wrt}, {k: v for k, v in values.items() if k not in self.wrt}

    def _traced_function(self) -> Callable:
        wrapper = self._wrapper

        def gradient(state, block, rest):
            def total(block):
                return torch.func.functional_call(wrapper, state, ({**rest, **block},))

            value, pullback = torch.func.vjp(total, block)
            if value.dim() != 0:
                raise ValueError(f"fn: expected a scalar log joint, got shape {tuple(value.shape)}")
            # A cotangent that depends on no input, so that the forward value itself is dead code.
            return pullback(torch.ones((), dtype=value.dtype, device=value.device))[0]

        return gradient

    def _compile(self, state: dict, values: dict) -> fx.GraphModule | None:
        from torch.fx.experimental.proxy_tensor import make_fx

        try:
            traced = make_fx(torch.func.functionalize(self._traced_function()),
                             tracing_mode="fake")(state, *self._split(values))
        except Exception as error:  # data-dependent control flow, unsupported operations, ...
            self.failure = f"{type(error).__name__}: {error}"
            return None
        graph = traced.graph
        if any(_is_random(n) for n in graph.nodes):
            self.failure = "the log joint draws random numbers"
            return None
        graph.eliminate_dead_code()
        _fold_constants(traced)
        _drop_identities(traced)
        graph.eliminate_dead_code()
        traced.recompile()
        return traced

    def _agrees(self, graph: fx.GraphModule, state: dict, values: dict) -> bool:
        compiled = graph(state, *self._split(values))
        with torch.enable_grad():
            leaves = {k: v.clone().requires_grad_(k in self.wrt) for k, v in values.items()}
            total = self.fn(leaves)
            eager = torch.autograd.grad(total, [leaves[s] for s in self.wrt], allow_unused=True)
        for s, e in zip(self.wrt, eager):
            e = torch.zeros_like(values[s]) if e is None else e
            if compiled[s].shape != e.shape or not torch.allclose(compiled[s], e, rtol=self.rtol, atol=self.atol):
                self.failure = f"the compiled gradient of {s!r} disagrees with eager autograd"
                warnings.warn(f"CompiledGradient: {self.failure}; using eager autograd", RuntimeWarning, stacklevel=3)
                return False
        return True

    def __repr__(self) -> str:
        ready = sum(g is not None for g in self._graphs.values())
        return f"CompiledGradient(wrt={list(self.wrt)}, {ready} graph(s) compiled of {len(self._graphs)} signature(s))"


def _is_random(node: fx.Node) -> bool:
    target = node.target
    return node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and \
        torch.Tag.nondeterministic_seeded in target.tags


def _fold_constants(module: fx.GraphModule) -> None:
    """Replace every operation that depends on no placeholder by its (real) value, stored on
    the module and read with ``get_attr``."""
    graph = module.graph
    constant: dict[fx.Node, Any] = {}
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or _is_random(node):
            continue
        inputs = node.all_input_nodes
        if any(n not in constant for n in inputs):
            continue
        args = fx.node.map_arg(node.args, lambda n: constant[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: constant[n])
        try:
            value = node.target(*args, **kwargs)
        except Exception:  # leave it to run at call time
            continue
        constant[node] = value
        if not torch.is_tensor(value):
            continue
        name = f"_folded_{count}"
        count += 1
        module.register_buffer(name, value.detach(), persistent=False)
        with graph.inserting_before(node):
            replacement = graph.get_attr(name)
        replacement.meta = dict(node.meta)
        node.replace_all_uses_with(replacement)
        constant[replacement] = value
        graph.erase_node(node)


def _constant(module: fx.GraphModule, arg: Any) -> Any:
    """The value of a folded constant or a Python number argument, else None."""
    if isinstance(arg, fx.Node):
        return getattr(module, arg.target) if arg.op == "get_attr" else None
    return arg if isinstance(arg, (int, float)) and not isinstance(arg, bool) else None


def _is_all(value: Any, number: float) -> bool:
    if torch.is_tensor(value):
        return value.numel() > 0 and bool((value == number).all())
    return value is not None and value == number


def _drop_identities(module: fx.GraphModule) -> None:
    """x * 1 -> x and x + 0, x - 0 -> x (an expanded view where the constant broadcast x to a
    larger shape), for constants of ones and zeros; dtypes must agree."""
    aten = torch.ops.aten
    # target -> ((index of the operand kept, index of the constant), ...), the identity constant
    rules = {aten.mul.Tensor: (((0, 1), (1, 0)), 1.0), aten.add.Tensor: (((0, 1), (1, 0)), 0.0),
             aten.sub.Tensor: (((0, 1),), 0.0)}
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in rules or len(node.args) != 2:
            continue
        if node.kwargs.get("alpha", 1) != 1:
            continue
        orders, number = rules[node.target]
        out = node.meta.get("val")
        for keep, drop in orders:
            kept, value = node.args[keep], _constant(module, node.args[drop])
            if not isinstance(kept, fx.Node) or not _is_all(value, number) or out is None:
                continue
            kept_val = kept.meta.get("val")
            if kept_val is None or kept_val.dtype != out.dtype or kept_val.device != out.device:
                continue
            if torch.is_tensor(value) and value.dtype != out.dtype:
                continue
            if tuple(kept_val.shape) == tuple(out.shape):
                node.replace_all_uses_with(kept)
            else:
                with graph.inserting_before(node):
                    view = graph.call_function(aten.expand.default, (kept, list(out.shape)))
                view.meta = dict(node.meta)
                node.replace_all_uses_with(view)
            graph.erase_node(node)
            break
