"""Extraction of graphs from programs: pgm.graph_of at site and unit level."""

import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import models
import pgm


# ---------------------------------------------------------------- random DAG programs
def random_dag_program(rng: random.Random, n: int, p: float):
    """A program of n Normal sites with linear dependencies on a random DAG; returns the
    program and its edge set."""
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    weights = {e: rng.choice([-1, 1]) * rng.uniform(0.5, 2.0) for e in edges}
    observed = {j for j in range(n) if rng.random() < 0.3}

    def program():
        values = {}
        for j in range(n):
            loc = sum((weights[(i, j)] * values[i] for i in range(j) if (i, j) in weights), torch.tensor(0.0))
            obs = torch.tensor(0.5) if j in observed else None
            values[j] = pyro.sample(f"x{j}", dist.Normal(loc, 1.0), obs=obs)

    return program, {(f"x{i}", f"x{j}") for i, j in edges}, {f"x{j}" for j in observed}


def test_random_dag_programs_give_their_dags_and_d_separation():
    import networkx as nx

    rng = random.Random(1)
    for _ in range(300):
        n = rng.randint(2, 7)
        program, edges, observed = random_dag_program(rng, n, 0.4)
        g = pgm.graph_of(program)
        assert set(g.directed_edges) == edges
        assert set(g.observed) == observed
        ref = nx.DiGraph(list(edges))
        ref.add_nodes_from(f"x{j}" for j in range(n))
        names = list(ref.nodes)
        for _ in range(5):
            rng.shuffle(names)
            k = rng.randint(0, len(names) - 2)
            x, y, given = names[k], names[k + 1], set(names[:k])
            assert g.is_d_separated({x}, {y}, given) == nx.is_d_separator(ref, {x}, {y}, given)


# ---------------------------------------------------------------- node attributes and plates
def test_node_attributes_and_plate_nesting():
    def program(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("groups", 3, dim=-2):
            theta = pyro.sample("theta", dist.Normal(mu, 1.0))
            with pyro.plate("members", 5, dim=-1):
                pyro.deterministic("shifted", theta + 1.0)
                pyro.sample("x", dist.Normal(theta.unsqueeze(-1), 1.0).expand([3, 5, 2]).to_event(1), obs=x)

    g = pgm.graph_of(program, torch.zeros(3, 5, 2))
    assert g.nodes["x"] == {
        "kind": "observed", "dist": "Normal", "event_shape": (2,), "shape": (3, 5, 2), "plates": ("groups", "members")
    }
    assert g.nodes["shifted"]["kind"] == "deterministic"
    assert g.nodes["theta"]["plates"] == ("groups",)
    assert g.plates == {"groups": {"size": 3, "dim": -2}, "members": {"size": 5, "dim": -1}}
    assert set(g.directed_edges) == {("mu", "theta"), ("theta", "shifted"), ("theta", "x")}


def test_overlapping_plates_are_kept_apart():
    g = pgm.graph_of(models.MatrixFactorization(num_users=3, num_items=4))
    assert g.nodes["u"]["plates"] == ("users",)
    assert g.nodes["v"]["plates"] == ("items",)
    assert set(g.nodes["r"]["plates"]) == {"users", "items"}
    assert g.plates["users"]["size"] == 3 and g.plates["items"]["size"] == 4
    assert set(g.directed_edges) == {("u", "r"), ("v", "r")}


def test_parameters_shown_on_request():
    def program(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    assert list(pgm.graph_of(program, torch.zeros(2)).nodes) == ["x"]
    g = pgm.graph_of(program, torch.zeros(2), show_params=True)
    assert g.nodes["loc"]["kind"] == "parameter"
    assert ("loc", "x") in g.directed_edges


# ---------------------------------------------------------------- the separation of nets from graphs
def test_gan_graph_is_z_to_x_and_networks_are_not_nodes():
    g = pgm.graph_of(models.GAN(x_dim=6, z_dim=2, hidden_dims=(8,)))
    assert g.to_dict()["nodes"].keys() == {"z", "x"}
    assert g.directed_edges == [("z", "x")]
    assert g.nodes["x"]["kind"] == "observed" and g.nodes["z"]["kind"] == "latent"


def test_vae_and_gan_graphs_are_isomorphic():
    vae = pgm.graph_of(models.VAE(x_dim=6, z_dim=2))
    gan = pgm.graph_of(models.GAN(x_dim=6, z_dim=2))
    assert vae.is_isomorphic(gan, match_kinds=True)
    assert set(vae.nodes) == {"z", "x"}  # the encoder is not a node


# ---------------------------------------------------------------- undirected programs
def test_rbm_gives_bipartite_markov_network():
    g = pgm.graph_of(models.RBM(v_dim=4, h_dim=3))
    assert g.kind == "undirected"
    assert g.undirected_edges == [("h", "v")]
    assert g.factors["interaction"]["scope"] == ("v", "h")
    assert g.factors["visible_bias"]["scope"] == ("v",)


def test_rbm_unit_level_is_complete_bipartite_k43():
    import networkx as nx

    g = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit")
    ug = g.to_networkx()
    assert nx.is_isomorphic(ug, nx.complete_bipartite_graph(4, 3))
    assert {g.nodes[n]["site"] for n in g.nodes} == {"v", "h"}
    assert set(g.factors["interaction"]["scope"]) == set(g.nodes)


def test_unit_level_follows_a_sparse_weight_pattern():
    rbm = models.RBM(v_dim=3, h_dim=2)
    with torch.no_grad():
        rbm.W.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.0]]))
    g = pgm.graph_of(rbm, level="unit")
    assert g.undirected_edges == [("h[0]", "v[0]"), ("h[0]", "v[2]"), ("h[1]", "v[1]")]


class MaskedAutoregressive(nn.Module):
    """A one-hidden-layer MADE: masks from random degrees (Germain et al. 2015)."""

    def __init__(self, d, h, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.l1, self.l2 = nn.Linear(d, h), nn.Linear(h, d)
        order = torch.randperm(d, generator=gen) + 1
        hidden = torch.randint(1, d, (h,), generator=gen)
        self.register_buffer("m1", (hidden[:, None] >= order[None, :]).float())
        self.register_buffer("m2", (order[:, None] > hidden[None, :]).float())

    def forward(self, x):
        h = torch.relu(nn.functional.linear(x, self.l1.weight * self.m1, self.l1.bias))
        return nn.functional.linear(h, self.l2.weight * self.m2, self.l2.bias)


@pytest.mark.parametrize("seed", range(8))
def test_made_unit_graph_equals_mask_connectivity(seed):
    d = 6
    made = MaskedAutoregressive(d, 40, seed)

    def program(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=made(x)).to_event(1), obs=x)

    g = pgm.graph_of(program, torch.zeros(4, d), level="unit")
    allowed = (made.m2 @ made.m1) > 0  # [out, in]: a path exists through the masks
    expected = {(f"x[{i}]", f"x[{j}]") for j in range(d) for i in range(d) if allowed[j, i]}
    assert set(g.directed_edges) == expected
    assert g.kind == "directed"


def test_mixed_program_keeps_both_kinds_of_edge():
    def program():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(a, 1.0))
        c = pyro.sample("c", dist.Normal(0.0, 1.0))
        pyro.factor("coupling", -((b - c) ** 2))

    g = pgm.graph_of(program)
    assert g.kind == "mixed"
    assert g.directed_edges == [("a", "b")]
    assert g.undirected_edges == [("b", "c")]


# ---------------------------------------------------------------- no side effects
def test_extraction_has_no_side_effects():
    def program(x):
        loc = pyro.param("fresh_loc", torch.tensor(0.0))
        z = pyro.sample("z", dist.Normal(loc, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=z.sum()).expand([x.shape[0]]), obs=x)

    rbm = models.RBM(4, 3)
    pyro.clear_param_store()
    pyro.param("existing", torch.tensor(1.0))
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(123)
    np.random.seed(4)
    random.seed(5)
    torch.set_grad_enabled(False)
    try:
        pgm.graph_of(program, torch.zeros(2))
        pgm.graph_of(program, torch.zeros(2), level="unit")
        pgm.graph_of(rbm, level="unit")
        assert not torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert set(pyro.get_param_store().keys()) == {"existing"}
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1] and got[2] == expected[2]


# ---------------------------------------------------------------- bad input
def test_not_a_program():
    with pytest.raises(TypeError, match="model: expected a pgm.Model or a Pyro program"):
        pgm.graph_of(42)
    with pytest.raises(TypeError, match="model"):
        pgm.graph_of(models.RBM)  # the class, not an instance


def test_program_that_raises():
    def broken(x):
        raise KeyError("oops")

    with pytest.raises(pgm.ProgramError, match="broken raised KeyError"):
        pgm.graph_of(broken, torch.zeros(1))

    def wrong_args(x, y):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(pgm.ProgramError, match="arguments"):
        pgm.graph_of(wrong_args, torch.zeros(1))


def test_site_too_large_to_expand():
    with pytest.raises(ValueError, match=r"site 'v' has 2000 units .* unit_limit=1024"):
        pgm.graph_of(models.RBM(v_dim=2000, h_dim=2), level="unit")
    with pytest.raises(ValueError, match="level"):
        pgm.graph_of(models.Chain(), level="atoms")


def test_model_without_example_inputs_needs_arguments():
    wrapped = pgm.Model.from_program(lambda x: pyro.sample("x", dist.Normal(0.0, 1.0), obs=x))
    with pytest.raises(NotImplementedError, match="example_args"):
        pgm.graph_of(wrapped)
    assert list(pgm.graph_of(wrapped, torch.zeros(())).nodes) == ["x"]


# ---------------------------------------------------------------- issue 10: real programs
def test_batchnorm_buffers_are_unchanged_by_extraction():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    net.train()

    def program(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(net(z), 1.0).to_event(1), obs=x)

    before = {k: v.clone() for k, v in net.state_dict().items()}
    for level in ("site", "unit"):
        g = pgm.graph_of(program, torch.randn(5, 3), level=level)
    assert g.directed_edges  # the network ran (and was probed)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]
    assert net.training  # the mode is the caller's


def test_classifier_ebm_joins_x_and_y():
    jem = models.ClassifierEBM(x_dim=2, num_classes=3, hidden_dims=(8,))
    g = pgm.graph_of(jem)
    assert g.markov_blanket("y") == {"x"}
    assert set(g.factors["logit"]["scope"]) == {"x", "y"}
    u = pgm.graph_of(jem, level="unit")
    assert set(u.neighbors("y")) == {"x[0]", "x[1]"}


def test_observed_argument_used_before_its_site_is_tracked_by_identity():
    def program(x):
        loc = 2 * x.sum(-1)  # computed from the data before the site x is declared
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1), obs=x)
            pyro.sample("y", dist.Normal(loc, 1.0), obs=torch.zeros(x.shape[0]))

    g = pgm.graph_of(program, torch.zeros(3, 2))
    assert g.directed_edges == [("x", "y")]

    def covariates(features, y):  # an argument that is no site's value is not a node
        with pyro.plate("data", 3):
            pyro.sample("y", dist.Normal(features.sum(-1), 1.0), obs=y)

    assert list(pgm.graph_of(covariates, torch.zeros(3, 2), torch.zeros(3)).nodes) == ["y"]


def test_data_plate_label():
    vae = models.VAE(x_dim=4, z_dim=2)
    g = pgm.graph_of(vae)
    assert g.plates["data"]["symbol"] == "N" and g.plates["data"]["size"] is None
    assert pgm.graph_of(vae, data_size=1797).plates["data"]["size"] == 1797
    assert pgm.graph_of(vae, data_size="M").plates["data"]["symbol"] == "M"
    given = pgm.graph_of(vae, torch.zeros(7, 4))  # data given: its size
    assert given.plates["data"]["size"] == 7 and "symbol" not in given.plates["data"]
    from pgm.draw import _plate_label

    assert _plate_label("data", g.plates["data"]) == "N"
    assert _plate_label("data", given.plates["data"]) == "data (7)"
    with pytest.raises(ValueError, match="data_size"):
        pgm.graph_of(vae, data_size=0)


def test_network_parameters_shown_as_nodes():
    g = pgm.graph_of(models.VAE(x_dim=4, z_dim=2), show_params=True)
    assert g.nodes["decoder"]["kind"] == "parameter" and g.parents("x") == ["z", "decoder"]
    rbm = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), show_params=True)
    assert {n for n in rbm.nodes if rbm.nodes[n]["kind"] == "parameter"} == {"W", "b", "c"}
    assert set(rbm.children("W")) == {"v", "h"} and rbm.children("b") == ["v"]
    assert "decoder" not in pgm.graph_of(models.VAE(x_dim=4, z_dim=2)).nodes


def test_rbm_unit_factor_graph_has_one_factor_per_weight_and_bias():
    fg = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit").factor_graph()
    factors = [n for n in fg.nodes if fg.nodes[n]["kind"] == "factor"]
    degrees = sorted(len(fg.neighbors(f)) for f in factors)
    assert degrees == [1] * 7 + [2] * 12
    pairs = {frozenset(fg.neighbors(f)) for f in factors if len(fg.neighbors(f)) == 2}
    assert pairs == {frozenset((f"v[{i}]", f"h[{j}]")) for i in range(4) for j in range(3)}
    singles = {fg.neighbors(f)[0] for f in factors if len(fg.neighbors(f)) == 1}
    assert singles == {f"v[{i}]" for i in range(4)} | {f"h[{j}]" for j in range(3)}


def test_pairwise_potential_with_triangles_splits_and_a_triple_does_not():
    def program(pairwise: bool):
        def fn():
            x = pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            if pairwise:
                pyro.factor("f", x[0] * x[1] + x[1] * x[2] + x[0] * x[2])
            else:
                pyro.factor("f", x[0] * x[1] * x[2])

        return fn

    assert len(pgm.graph_of(program(True), level="unit").factors["f"]["terms"]) == 3
    assert pgm.graph_of(program(False), level="unit").factors["f"]["terms"] == [("x[0]", "x[1]", "x[2]")]
