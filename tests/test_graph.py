"""Queries on GraphicalModel: textbook d-separation, Markov blankets, moralisation, chain graphs."""

import itertools

import networkx as nx
import pytest
import torch

import models
import pgm
from pgm import GraphicalModel


def dag(edges, observed=()):
    names = list(dict.fromkeys(itertools.chain.from_iterable(edges)))
    nodes = {n: {"kind": "observed" if n in observed else "latent"} for n in names}
    return GraphicalModel(nodes, directed_edges=edges)


# ---------------------------------------------------------------- textbook d-separation
def test_chain_blocked_by_middle():
    g = pgm.graph_of(models.Chain())
    assert not g.is_d_separated("a", "c")
    assert g.is_d_separated("a", "c", given="b")


def test_fork_blocked_by_common_cause():
    g = pgm.graph_of(models.Fork())
    assert not g.is_d_separated("b", "c")
    assert g.is_d_separated("b", "c", given={"a"})


def test_collider_opened_by_common_effect():
    g = pgm.graph_of(models.Collider())
    assert g.is_d_separated("a", "b")
    assert not g.is_d_separated("a", "b", given={"c"})
    assert g.colliders() == [("a", "c", "b")]


def test_explaining_away_and_descendant_of_collider():
    g = pgm.graph_of(models.Burglary())
    assert g.is_d_separated("burglary", "earthquake")
    # Observing the alarm, or any of its descendants, couples its causes (explaining away).
    assert not g.is_d_separated("burglary", "earthquake", given={"alarm"})
    assert not g.is_d_separated("burglary", "earthquake", given={"john_calls"})
    assert not g.is_d_separated("burglary", "earthquake", given={"mary_calls", "john_calls"})
    # The calls are independent given the alarm, dependent otherwise.
    assert g.is_d_separated("john_calls", "mary_calls", given={"alarm"})
    assert not g.is_d_separated("john_calls", "mary_calls")
    assert not g.is_d_separated("burglary", "john_calls", given={"earthquake"})
    assert g.is_d_separated("burglary", "john_calls", given={"alarm", "earthquake"})
    assert g.colliders() == [("burglary", "alarm", "earthquake")]
    assert g.colliders(unshielded_only=True) == [("burglary", "alarm", "earthquake")]


def test_markov_blanket_is_parents_children_coparents():
    g = pgm.graph_of(models.Burglary())
    assert g.markov_blanket("burglary") == {"alarm", "earthquake"}
    assert g.markov_blanket("alarm") == {"burglary", "earthquake", "john_calls", "mary_calls"}
    assert g.markov_blanket("john_calls") == {"alarm"}


def test_moral_graph_marries_parents():
    g = pgm.graph_of(models.Burglary()).moralize()
    assert g.kind == "undirected"
    assert ("burglary", "earthquake") in g.undirected_edges
    assert len(g.undirected_edges) == 5


def test_ancestral_order_and_local_independencies():
    g = pgm.graph_of(models.Burglary())
    order = g.ancestral_order()
    for u, v in g.directed_edges:
        assert order.index(u) < order.index(v)
    stmts = {str(s) for s in g.independencies()}
    assert "john_calls ⊥ burglary, earthquake, mary_calls | alarm" in stmts
    assert "burglary ⊥ earthquake | ∅" in stmts
    for s in g.independencies("pairwise"):
        assert g.is_d_separated(s.xs, s.ys, s.given)


def test_independencies_listed_once():
    # Two roots: "a ⊥ b | ∅" and "b ⊥ a | ∅" are one statement.
    g = GraphicalModel({"a": {}, "b": {}, "c": {"kind": "observed"}, "d": {}}, directed_edges=[("a", "c"), ("b", "c")])
    for kind in ("local", "pairwise"):
        stmts = g.independencies(kind)
        keys = [(frozenset((s.xs, s.ys)), s.given) for s in stmts]
        assert len(keys) == len(set(keys)), [str(s) for s in stmts]
    local = [str(s) for s in g.independencies("local")]
    assert local.count("a ⊥ b, d | ∅") == 1 and "b ⊥ a, d | ∅" in local
    assert "d ⊥ a, b, c | ∅" in local
    u = GraphicalModel({"a": {}, "b": {}})  # no edges: a ⊥ b once, not twice
    assert [str(s) for s in u.independencies()] == ["a ⊥ b | ∅"]


# ---------------------------------------------------------------- randomized against networkx
def random_dag(rng, n, p):
    order = list(range(n))
    return [(f"x{i}", f"x{j}") for i, j in itertools.combinations(order, 2) if rng.random() < p]


def test_d_separation_agrees_with_networkx_on_random_dags():
    import random

    rng = random.Random(0)
    checked = 0
    for _ in range(100):
        n = rng.randint(3, 8)
        edges = random_dag(rng, n, 0.35)
        nodes = {f"x{i}": {"kind": "latent"} for i in range(n)}
        g = GraphicalModel(nodes, directed_edges=edges)
        ref = nx.DiGraph(edges)
        ref.add_nodes_from(nodes)
        for _ in range(20):
            names = list(nodes)
            rng.shuffle(names)
            k = rng.randint(0, n - 2)
            given, rest = set(names[:k]), names[k:]
            x, y = rest[0], rest[1]
            assert g.is_d_separated({x}, {y}, given) == nx.is_d_separator(ref, {x}, {y}, given)
            checked += 1
    assert checked == 2000


# ---------------------------------------------------------------- undirected and chain graphs
def test_markov_network_uses_graph_separation():
    g = pgm.graph_of(models.RBM(v_dim=4, h_dim=3), level="unit")
    assert g.kind == "undirected"
    assert g.is_d_separated({"v[0]"}, {"v[1]"}, given={"h[0]", "h[1]", "h[2]"})
    assert not g.is_d_separated({"v[0]"}, {"v[1]"}, given={"h[0]"})
    assert g.markov_blanket("v[0]") == {"h[0]", "h[1]", "h[2]"}
    # Markov network local statements: a unit given its neighbours.
    stmts = {str(s) for s in g.independencies()}
    assert "v[0] ⊥ v[1], v[2], v[3] | h[0], h[1], h[2]" in stmts


def test_chain_graph_separation_and_moralisation():
    # a -> b, b - c (a chain component {b, c} with parent a), d -> c.
    nodes = {n: {"kind": "latent"} for n in "abcd"}
    g = GraphicalModel(nodes, directed_edges=[("a", "b"), ("d", "c")], undirected_edges=[("b", "c")])
    assert g.kind == "mixed"
    # Parents of one chain component are married: a and d become dependent given b and c.
    moral = g.moralize()
    assert ("a", "d") in moral.undirected_edges
    assert not g.is_d_separated("a", "d", given={"b", "c"})
    # ... but are marginally independent (b, c not in the anterior set of {a, d}).
    assert g.is_d_separated("a", "d")
    assert g.markov_blanket("a") == {"b", "d"}


def test_factor_graph_is_bipartite():
    fg = pgm.graph_of(models.RBM(v_dim=2, h_dim=2)).factor_graph()
    assert fg.view == "factor_graph"
    factors = set(fg.nodes_of_kind("factor"))
    assert factors == {"interaction", "visible_bias", "hidden_bias"}
    assert nx.is_bipartite(fg.to_networkx())
    assert set(fg.neighbors("interaction")) == {"v", "h"}
    directed = pgm.graph_of(models.Chain()).factor_graph()
    assert set(directed.nodes_of_kind("factor")) == {"p(a)", "p(b|a)", "p(c|b)"}


# ---------------------------------------------------------------- export and errors
def test_to_dict_and_to_dot():
    g = pgm.graph_of(models.EightSchools())
    spec = g.to_dict()
    assert spec["directed_edges"] == [["mu", "theta"], ["tau", "theta"], ["theta", "y"]]
    assert spec["plates"] == {"schools": {"size": 8, "dim": -1}}
    assert spec["nodes"]["y"] == {"kind": "observed", "dist": "Normal", "event_shape": [], "plates": ["schools"]}
    dot = g.to_dot()
    assert dot.startswith("digraph") and "cluster_schools" in dot


def test_bad_queries_raise_clear_errors():
    g = pgm.graph_of(models.Chain())
    with pytest.raises(ValueError, match=r"xs: unknown node\(s\) \['nope'\]"):
        g.is_d_separated("nope", "c")
    with pytest.raises(ValueError, match="node"):
        g.markov_blanket("zz")
    with pytest.raises(ValueError, match="disjoint"):
        g.is_d_separated("a", "c", given={"a"})
    with pytest.raises(TypeError, match="given"):
        g.is_d_separated("a", "c", given=3)
    with pytest.raises(ValueError, match="kind"):
        g.independencies("global")
    with pytest.raises(ValueError, match="cycle"):
        GraphicalModel({"a": {}, "b": {}}, directed_edges=[("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="kind"):
        GraphicalModel({"a": {"kind": "weird"}})


def test_isomorphism_matches_kinds():
    a = dag([("z", "x")], observed={"x"})
    b = dag([("u", "y")], observed={"y"})
    c = dag([("u", "y")], observed={"u"})
    assert a.is_isomorphic(b)
    assert not a.is_isomorphic(c)
    assert a.is_isomorphic(c, match_kinds=False)
    assert torch.is_tensor(torch.zeros(1))
