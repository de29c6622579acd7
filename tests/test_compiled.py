"""Compiled log-joint gradients (inference.compiled) and the Gibbs conditionals built on them."""

import pytest
import torch

from inference.compiled import CompiledGradient
from inference.gibbs import Gibbs
from models.boltzmann import BoltzmannMachine
from models.rbm import RBM


def _mm_nodes(grad: CompiledGradient) -> list[int]:
    """The number of matrix products in each compiled graph."""
    counts = []
    for graph in grad._graphs.values():
        names = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
        counts.append(sum(name.startswith(("aten.mm", "aten.addmm", "aten.bmm")) for name in names))
    return counts


def test_derived_rbm_conditionals_need_one_product_per_block():
    """d/dv of sum((v W) h) is h W^T: the forward product v W is dead code and is dropped, so each
    block costs what the hand-written conditional costs."""
    torch.manual_seed(0)
    gibbs = Gibbs(RBM(v_dim=20, h_dim=7), closed_form=False, unit_limit=1)  # site-level blocks
    chains = gibbs.init_random(5)
    gibbs.run(chains, 1)
    assert set(gibbs._compiled) == {("h",), ("v",)}
    for grad in gibbs._compiled.values():
        assert _mm_nodes(grad) == [1], grad.failure
        # what is left is the hand-written conditional: c + v W (b + h W^T), nothing else computed
        (graph,) = grad._graphs.values()
        ops = [str(n.target) for n in graph.graph.nodes if n.op == "call_function"]
        computed = [op for op in ops if not op.startswith(("aten.expand", "aten.t.", "aten.view", "<built-in"))]
        assert computed == ["aten.mm.default", "aten.add.Tensor"], ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_logits_equal_eager_autograd_and_follow_training(dtype):
    torch.manual_seed(0)
    bm = BoltzmannMachine(v_dim=5, h_dim=3, init_scale=0.7).to(dtype)
    compiled, eager = Gibbs(bm), Gibbs(bm, compile=False)
    chains = compiled.init_random(11)
    for sites in (("v",), ("h",), ("v", "h")):
        a, b = compiled.logits(chains, sites), eager.logits(chains, sites)
        for s in sites:
            assert a[s].dtype == dtype
            assert torch.allclose(a[s], b[s], atol=1e-6 if dtype == torch.float32 else 1e-12)
    # parameters change in place (an optimiser step) and by loading a state: both are seen
    with torch.no_grad():
        bm.W.add_(0.3)
    bm.load_state_dict({**bm.state_dict(), "b": torch.randn(5, dtype=dtype)})
    a, b = compiled.logits(chains, ("v",)), eager.logits(chains, ("v",))
    assert torch.allclose(a["v"], b["v"], atol=1e-6 if dtype == torch.float32 else 1e-12)
    assert all(g is not None for c in compiled._compiled.values() for g in c._graphs.values())


def test_partial_blocks_of_a_unit_level_schedule_are_compiled():
    torch.manual_seed(0)
    bm = BoltzmannMachine(v_dim=4, h_dim=3, init_scale=0.5).double()
    gibbs = Gibbs(bm)
    assert any(idx is not None for block in gibbs._plan for _, idx in block)  # lateral links split sites
    chains = gibbs.run(gibbs.init_random(6), 3)
    assert gibbs._compiled and all(g is not None for c in gibbs._compiled.values() for g in c._graphs.values())
    assert set(chains) == {"v", "h"} and chains["v"].shape == (6, 4)


def test_a_program_branching_on_a_value_falls_back_to_eager_autograd():
    lin = torch.nn.Linear(3, 1, bias=False)

    def branching(values):
        x = values["x"]
        return (lin(x) ** 2).sum() if bool(x.sum() > 0) else lin(x).sum()

    grad = CompiledGradient(branching, lin, wrt=("x",))
    assert grad({"x": torch.ones(2, 3)}) is None
    assert "data-dependent" in grad.failure.lower() or "DataDependent" in grad.failure


def test_a_log_joint_that_draws_random_numbers_is_not_compiled():
    lin = torch.nn.Linear(3, 1)
    grad = CompiledGradient(lambda v: (lin(v["x"]) * torch.rand(())).sum(), lin, wrt=("x",))
    assert grad({"x": torch.ones(2, 3)}) is None
    assert "random" in grad.failure


def test_a_compiled_graph_that_disagrees_with_eager_autograd_is_dropped():
    """The first call of each graph is checked: a function whose trace differs from its eager
    value (here a Python counter) is caught, with a warning, and left to eager autograd."""
    lin = torch.nn.Linear(3, 1, bias=False)
    calls = []

    def drifting(values):
        calls.append(1)
        return (lin(values["x"]) * len(calls)).sum()

    grad = CompiledGradient(drifting, lin, wrt=("x",))
    with pytest.warns(RuntimeWarning, match="disagrees with eager autograd"):
        assert grad({"x": torch.ones(2, 3)}) is None


def test_bad_input():
    lin = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="wrt"):
        CompiledGradient(lambda v: v["x"].sum(), lin, wrt=())
    grad = CompiledGradient(lambda v: lin(v["x"]).sum(), lin, wrt=("x",))
    with pytest.raises(ValueError, match="missing \\['x'\\]"):
        grad({"y": torch.ones(2, 3)})
