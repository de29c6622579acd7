"""`GraphicalModel`: the graph of a generative process, over networkx, and its queries.

A graphical model holds variable nodes (with attributes), directed edges (a DAG: Bayesian
networks), undirected edges (a Markov network: every factor's scope is a clique) or both (a
chain graph), plates with their sizes, and the factors that induced undirected edges.

Separation follows the graph's kind: d-separation for DAGs, graph separation for Markov
networks, and the Lauritzen-Wermuth-Frydenberg criterion (separation in the moral graph of the
anterior set) for chain graphs; the three agree where the kinds overlap.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import networkx as nx

__all__ = ["GraphicalModel", "Independence", "NODE_KINDS"]

NODE_KINDS = ("latent", "observed", "deterministic", "factor", "parameter")


@dataclass(frozen=True)
class Independence:
    """The statement `xs ⊥ ys | given` implied by a graph."""

    xs: frozenset
    ys: frozenset
    given: frozenset

    def __str__(self) -> str:
        def fmt(s):
            return ", ".join(sorted(s)) if s else "∅"

        return f"{fmt(self.xs)} ⊥ {fmt(self.ys)} | {fmt(self.given)}"


class GraphicalModel:
    """Nodes, directed and undirected edges, plates and factors of a generative process.

    Usually built by `pgm.graph_of(program, *args)`; it can also be built directly:

    >>> g = GraphicalModel({"a": {"kind": "latent"}, "b": {"kind": "latent"},
    ...                     "c": {"kind": "observed"}}, directed_edges=[("a", "c"), ("b", "c")])
    >>> g.is_d_separated({"a"}, {"b"}), g.is_d_separated({"a"}, {"b"}, given={"c"})
    (True, False)
    >>> sorted(g.markov_blanket("a"))
    ['b', 'c']
    """

    def __init__(
        self,
        nodes: Mapping[str, Mapping[str, Any]],
        directed_edges: Iterable[tuple[str, str]] = (),
        undirected_edges: Iterable[tuple[str, str]] = (),
        plates: Mapping[str, Mapping[str, Any]] | None = None,
        factors: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        name: str | None = None,
        level: str = "site",
        view: str = "model",
    ) -> None:
        self.name = name
        self.level = level
        self.view = view
        self._dg = nx.DiGraph()
        self._ug = nx.Graph()
        for node, attrs in nodes.items():
            attrs = _node_attrs(node, attrs)
            self._dg.add_node(node, **attrs)
            self._ug.add_node(node)
        for u, v in directed_edges:
            self._check_nodes([u, v], "directed_edges")
            self._dg.add_edge(u, v)
        for u, v in undirected_edges:
            self._check_nodes([u, v], "undirected_edges")
            if u != v:
                self._ug.add_edge(u, v)
        self.plates: dict[str, dict] = {k: dict(v) for k, v in (plates or {}).items()}
        self.factors: dict[str, dict] = {k: dict(v) for k, v in (factors or {}).items()}
        if self.directed_edges and not nx.is_directed_acyclic_graph(self._dg):
            cycle = nx.find_cycle(self._dg)
            raise ValueError(f"directed_edges: the directed edges form a cycle {cycle}")

    # ------------------------------------------------------------------ structure
    @property
    def nodes(self):
        """Node view: iterate names in program order; `g.nodes["z"]` is its attribute dict."""
        return self._dg.nodes

    @property
    def directed_edges(self) -> list[tuple[str, str]]:
        return list(self._dg.edges)

    @property
    def undirected_edges(self) -> list[tuple[str, str]]:
        return sorted(tuple(sorted(e)) for e in self._ug.edges)

    @property
    def kind(self) -> str:
        """'directed' (a DAG), 'undirected' (a Markov network) or 'mixed' (a chain graph)."""
        has_d, has_u = bool(self._dg.number_of_edges()), bool(self._ug.number_of_edges())
        if has_d and has_u:
            return "mixed"
        if has_u or (self.factors and not has_d):
            return "undirected"
        return "directed"

    def nodes_of_kind(self, kind: str) -> list[str]:
        """Nodes whose kind is `kind` (one of `NODE_KINDS`), in program order."""
        if kind not in NODE_KINDS:
            raise ValueError(f"kind: expected one of {NODE_KINDS}, got {kind!r}")
        return [n for n, a in self.nodes.items() if a["kind"] == kind]

    @property
    def observed(self) -> list[str]:
        return self.nodes_of_kind("observed")

    @property
    def latent(self) -> list[str]:
        return self.nodes_of_kind("latent")

    def parents(self, node: str) -> list[str]:
        self._check_nodes([node], "node")
        return list(self._dg.predecessors(node))

    def children(self, node: str) -> list[str]:
        self._check_nodes([node], "node")
        return list(self._dg.successors(node))

    def neighbors(self, node: str) -> list[str]:
        """Nodes joined to `node` by an undirected edge."""
        self._check_nodes([node], "node")
        return list(self._ug.neighbors(node))

    def to_networkx(self) -> nx.Graph:
        """A networkx copy: DiGraph for a DAG, Graph for a Markov network; a chain graph gives a
        DiGraph whose undirected edges appear in both directions with `directed=False`."""
        kind = self.kind
        if kind == "undirected":
            g = nx.Graph()
            g.add_nodes_from(self._dg.nodes(data=True))
            g.add_edges_from(self._ug.edges)
            return g
        g = self._dg.copy()
        nx.set_edge_attributes(g, True, "directed")
        for u, v in self._ug.edges:
            g.add_edge(u, v, directed=False)
            g.add_edge(v, u, directed=False)
        return g

    def is_isomorphic(self, other: "GraphicalModel", match_kinds: bool = True) -> bool:
        """Whether the two graphs are isomorphic (with node kinds matched by default)."""
        if not isinstance(other, GraphicalModel):
            raise TypeError(f"other: expected a GraphicalModel, got {type(other).__name__}")
        match = (lambda a, b: a["kind"] == b["kind"]) if match_kinds else None
        return nx.is_isomorphic(_labelled(self), _labelled(other), node_match=match, edge_match=lambda a, b: a == b)

    # ------------------------------------------------------------------ queries
    def is_d_separated(self, xs: Iterable[str] | str, ys: Iterable[str] | str, given: Iterable[str] | str = ()) -> bool:
        """Whether `xs` and `ys` are separated given `given` (d-separation for DAGs, graph
        separation for Markov networks, the chain-graph criterion for mixed graphs)."""
        xs, ys, given = (self._node_set(s, arg) for s, arg in ((xs, "xs"), (ys, "ys"), (given, "given")))
        if not xs or not ys:
            raise ValueError(f"xs, ys: expected non-empty node sets, got xs={sorted(xs)}, ys={sorted(ys)}")
        overlap = (xs & ys) | (xs & given) | (ys & given)
        if overlap:
            raise ValueError(f"xs, ys, given: expected disjoint sets, but {sorted(overlap)} appear in more than one")
        kind = self.kind
        if kind == "directed":
            return nx.is_d_separator(self._dg, xs, ys, given)
        if kind == "undirected":
            return _separated(self._ug, xs, ys, given)
        anterior = self._anterior(xs | ys | given)
        moral = _chain_moral_graph(self._dg.subgraph(anterior), self._ug.subgraph(anterior))
        return _separated(moral, xs, ys, given)

    def markov_blanket(self, node: str) -> set[str]:
        """The smallest set that separates `node` from every other node: its neighbours in the
        moral graph (parents, children and co-parents in a DAG; neighbours in a Markov network)."""
        self._check_nodes([node], "node")
        return set(self.moralize()._ug.neighbors(node))

    def moralize(self) -> "GraphicalModel":
        """The moral graph: parents of a common child married, directions dropped."""
        moral = _chain_moral_graph(self._dg, self._ug)
        return GraphicalModel(
            dict(self._dg.nodes(data=True)),
            undirected_edges=moral.edges,
            plates=self.plates,
            factors=self.factors,
            name=self.name,
            level=self.level,
        )

    def colliders(self, unshielded_only: bool = False) -> list[tuple[str, str, str]]:
        """Triples `(a, c, b)` with `a -> c <- b` (explaining away); with `unshielded_only`,
        only v-structures (a and b not adjacent)."""
        fn = nx.dag.v_structures if unshielded_only else nx.dag.colliders
        return sorted({(min(a, b), c, max(a, b)) for a, c, b in fn(self._dg)})

    def ancestral_order(self) -> list[str]:
        """Nodes so that every parent comes before its child; program order breaks ties."""
        position = {n: i for i, n in enumerate(self.nodes)}
        return list(nx.lexicographical_topological_sort(self._dg, key=position.__getitem__))

    def independencies(self, kind: str = "local") -> list[Independence]:
        """Conditional independencies the graph implies.

        - ``"local"``: each node given its parents is independent of its non-descendants (DAG);
          each node given its neighbours is independent of the rest (Markov network).
        - ``"pairwise"``: every non-adjacent pair, separated by a set found in the graph.
        """
        if kind not in ("local", "pairwise"):
            raise ValueError(f"kind: expected 'local' or 'pairwise', got {kind!r}")
        out = []
        if kind == "local":
            directed = self.kind == "directed"
            for n in self.nodes:
                if directed:
                    given = set(self._dg.predecessors(n))
                    rest = set(self.nodes) - nx.descendants(self._dg, n) - given - {n}
                else:
                    given = self.markov_blanket(n)
                    rest = set(self.nodes) - given - {n}
                if rest:
                    out.append(Independence(frozenset({n}), frozenset(rest), frozenset(given)))
            return _once(out)
        for a, b in itertools.combinations(self.nodes, 2):
            if self._dg.has_edge(a, b) or self._dg.has_edge(b, a) or self._ug.has_edge(a, b):
                continue
            given = self._separator(a, b)
            if given is not None:
                out.append(Independence(frozenset({a}), frozenset({b}), frozenset(given)))
        return out

    def factor_graph(self) -> "GraphicalModel":
        """The bipartite factor-graph view: one factor node per potential (`pyro.factor` site)
        and per conditional of a directed site (`p(x | parents)`), joined to its scope. At unit
        level a potential that splits into terms (`factors[f]["terms"]`: pairwise weights,
        biases) gives one factor node per term, named `f(u,w)`. A
        parentless variable in the scope of a potential gets no unary `p(x)` node: its density
        is the base measure the potentials are defined against."""
        nodes = dict(self._dg.nodes(data=True))
        edges = []
        in_potentials = {v for spec in self.factors.values() for v in spec["scope"]}
        for name, spec in self.factors.items():
            attrs = {"kind": "factor", "dist": "factor", "event_shape": (), "plates": tuple(spec.get("plates", ()))}
            terms = spec.get("terms")
            if not terms or (len(terms) == 1 and set(terms[0]) == set(spec["scope"])):
                nodes[name] = attrs
                edges += [(name, v) for v in spec["scope"]]
                continue
            for term in terms:  # a unit-level potential: one factor per term, on its units
                fname = f"{name}({','.join(term)})"
                nodes[fname] = {**attrs, "potential": name}
                edges += [(fname, v) for v in term]
        for node, attrs in self._dg.nodes(data=True):
            if attrs["kind"] in ("factor", "parameter"):
                continue
            parents = list(self._dg.predecessors(node))
            if not parents and (attrs["kind"] == "deterministic" or node in in_potentials):
                continue
            fname = f"p({node}|{','.join(parents)})" if parents else f"p({node})"
            nodes[fname] = {"kind": "factor", "dist": attrs.get("dist"), "event_shape": (), "plates": attrs.get("plates", ())}
            edges += [(fname, v) for v in [node, *parents]]
        return GraphicalModel(nodes, undirected_edges=edges, plates=self.plates, name=self.name, level=self.level, view="factor_graph")

    # ------------------------------------------------------------------ long chains
    def collapse_chain(self, sites: Iterable[str], middle: str = "x_t") -> "GraphicalModel":
        """The graph with the long Markov chain `sites` (in order: first ancestor first, e.g. a
        diffusion model's ``x_T, ..., x_1, x``, `DDPM.chain_sites()`) drawn collapsed as
        ``first -> ... -> middle -> ... -> last``: the first and last sites are kept, every
        site between them is replaced by one representative step `middle` (a latent with the
        attributes of the chain's central site) flanked by two *ellipsis* nodes, named
        ``"first..middle"`` and ``"middle..last"``, whose attributes say ``ellipsis=True``,
        ``label="⋯"`` and ``collapsed`` (how many of the chain's sites the collapsed part
        stands for, shared by the three). Edges between other nodes and collapsed sites go to
        `middle`. A chain of five sites or fewer is returned unchanged (there is nothing to
        gain); every query works on the result, which is a smaller DAG of the same shape.

        >>> g = GraphicalModel({f"x_{t}": {"kind": "latent"} for t in range(9, 0, -1)} | {"x": {"kind": "observed"}},
        ...                    directed_edges=[(f"x_{t}", f"x_{t - 1}") for t in range(9, 1, -1)] + [("x_1", "x")])
        >>> c = g.collapse_chain([f"x_{t}" for t in range(9, 0, -1)] + ["x"])
        >>> list(c.nodes), c.directed_edges[:2]
        (['x_9', 'x_9..x_t', 'x_t', 'x_t..x', 'x'], [('x_9', 'x_9..x_t'), ('x_9..x_t', 'x_t')])
        >>> c.nodes["x_t..x"]["label"], c.nodes["x_t"]["collapsed"]
        ('⋯', 8)
        """
        if isinstance(sites, str) or not isinstance(sites, Iterable):
            raise TypeError(f"sites: expected a sequence of node names, got {type(sites).__name__}")
        sites = list(sites)
        self._check_nodes(sites, "sites")
        if len(set(sites)) != len(sites):
            raise ValueError(f"sites: expected distinct nodes, got a repeat in {sites[:10]}")
        for a, b in zip(sites, sites[1:]):
            if not self._dg.has_edge(a, b):
                raise ValueError(f"sites: expected a directed chain, but there is no edge {a} -> {b}")
        position = {n: i for i, n in enumerate(sites)}
        shortcut = [(u, v) for u, v in self._dg.edges if u in position and v in position and position[v] != position[u] + 1]
        if shortcut:
            raise ValueError(f"sites: expected a Markov chain, but the edge {shortcut[0][0]} -> {shortcut[0][1]} skips steps")
        if len(sites) <= 5:
            return self
        if not isinstance(middle, str) or not middle:
            raise TypeError(f"middle: expected a node name (str), got {middle!r}")
        first, last, inner = sites[0], sites[-1], sites[1:-1]
        before, after = f"{first}..{middle}", f"{middle}..{last}"
        clash = {middle, before, after} & (set(self.nodes) - set(inner))
        if clash:
            raise ValueError(f"middle: the names {sorted(clash)} of the collapsed nodes are already nodes of the graph")
        central = self._dg.nodes[inner[len(inner) // 2]]
        collapsed = len(inner)
        dots = {"kind": central["kind"], "dist": None, "event_shape": central.get("event_shape", ()),
                "plates": central.get("plates", ()), "ellipsis": True, "label": "\u22ef", "collapsed": collapsed}
        nodes: dict[str, dict] = {}
        hidden = set(inner)
        for n, attrs in self._dg.nodes(data=True):
            if n == first:
                nodes[n] = dict(attrs)
                nodes[before] = dict(dots)
                nodes[middle] = {**{k: v for k, v in central.items() if k != "shape"}, "collapsed": collapsed}
                nodes[after] = dict(dots)
            elif n not in hidden:
                nodes[n] = dict(attrs)
        rename = {n: middle for n in hidden}
        directed = list(dict.fromkeys(
            [(first, before), (before, middle), (middle, after), (after, last)]
            + [(rename.get(u, u), rename.get(v, v)) for u, v in self._dg.edges
               if not (u in sites and v in sites) and rename.get(u, u) != rename.get(v, v)]))
        undirected = [(rename.get(u, u), rename.get(v, v)) for u, v in self._ug.edges if rename.get(u, u) != rename.get(v, v)]
        factors = {k: {**v, "scope": sorted({rename.get(s, s) for s in v["scope"]})} for k, v in self.factors.items()}
        return GraphicalModel(nodes, directed, undirected, plates=self.plates, factors=factors, name=self.name,
                              level=self.level, view=self.view)

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict:
        """A plain, JSON-friendly spec of the graph (what tests compare)."""
        return {
            "kind": self.kind,
            "level": self.level,
            "nodes": {
                n: {
                    "kind": a["kind"],
                    "dist": a.get("dist"),
                    "event_shape": list(a.get("event_shape", ())),
                    "plates": list(a.get("plates", ())),
                }
                for n, a in self.nodes.items()
            },
            "directed_edges": sorted([list(e) for e in self.directed_edges]),
            "undirected_edges": sorted([list(e) for e in self.undirected_edges]),
            "plates": {
                k: {"size": v.get("size"), "dim": v.get("dim"), **{x: v[x] for x in ("symbol", "subsample_size") if x in v}}
                for k, v in self.plates.items()
            },
            "factors": {k: sorted(v["scope"]) for k, v in self.factors.items()},
        }

    def to_dot(self) -> str:
        """Graphviz DOT source: plates as clusters (nested where nested), observed nodes filled,
        deterministic nodes dashed, factors as small squares, undirected edges without arrows."""
        from pgm.dot import to_dot

        return to_dot(self)

    def draw(self, path=None, ax=None, **kwargs):
        """Draw with matplotlib; `path` suffix picks PNG, SVG or PDF. Returns the Axes."""
        from pgm.draw import draw

        return draw(self, path=path, ax=ax, **kwargs)

    def __repr__(self) -> str:
        return (
            f"GraphicalModel({self.name or ''!s}{': ' if self.name else ''}{self.kind}, "
            f"{self._dg.number_of_nodes()} nodes, {len(self.directed_edges)} directed and "
            f"{len(self.undirected_edges)} undirected edges, plates {sorted(self.plates)})"
        )

    # ------------------------------------------------------------------ helpers
    def _check_nodes(self, nodes: Iterable[str], argname: str) -> None:
        for n in nodes:
            if not isinstance(n, str):
                raise TypeError(f"{argname}: expected node names (str), got {type(n).__name__} {n!r}")
        unknown = [n for n in nodes if n not in self._dg]
        if unknown:
            names = list(self._dg.nodes)
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ValueError(f"{argname}: unknown node(s) {unknown}; the graph has: {shown}")

    def _node_set(self, nodes, argname: str) -> set[str]:
        if isinstance(nodes, str):
            nodes = {nodes}
        elif nodes is None:
            nodes = set()
        elif not isinstance(nodes, Iterable):
            raise TypeError(f"{argname}: expected a node name or a set of names, got {type(nodes).__name__}")
        nodes = set(nodes)
        self._check_nodes(nodes, argname)
        return nodes

    def _anterior(self, nodes: set[str]) -> set[str]:
        """Nodes with a path to `nodes` that never goes against a directed edge."""
        seen, stack = set(nodes), list(nodes)
        while stack:
            n = stack.pop()
            for m in itertools.chain(self._dg.predecessors(n), self._ug.neighbors(n)):
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return seen

    def _separator(self, a: str, b: str) -> set[str] | None:
        """Some set separating `a` from `b`, or None when none exists (they are adjacent)."""
        if self.kind == "directed":
            given = set(self._dg.predecessors(a)) | set(self._dg.predecessors(b))
            given -= {a, b}
            if nx.is_d_separator(self._dg, {a}, {b}, given):
                return given
            try:
                return set(nx.find_minimal_d_separator(self._dg, {a}, {b}) or ())
            except nx.NetworkXError:
                return None
        given = (self.markov_blanket(a)) - {b}
        return given if self.is_d_separated({a}, {b}, given) else None


def _once(statements: list[Independence]) -> list[Independence]:
    """Each statement once: X ⊥ Y | Z and Y ⊥ X | Z are the same (symmetry)."""
    seen, out = set(), []
    for s in statements:
        key = (frozenset((s.xs, s.ys)), s.given)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def _node_attrs(node: str, attrs: Mapping[str, Any]) -> dict:
    if not isinstance(node, str):
        raise TypeError(f"nodes: expected str names, got {type(node).__name__} {node!r}")
    out = dict(attrs)
    kind = out.setdefault("kind", "latent")
    if kind not in NODE_KINDS:
        raise ValueError(f"nodes[{node!r}]['kind']: expected one of {NODE_KINDS}, got {kind!r}")
    out.setdefault("dist", None)
    out["event_shape"] = tuple(out.get("event_shape", ()))
    out["plates"] = tuple(out.get("plates", ()))
    return out


def _labelled(g: GraphicalModel) -> nx.DiGraph:
    out = nx.DiGraph()
    out.add_nodes_from(g._dg.nodes(data=True))
    out.add_edges_from(g._dg.edges, kind="directed")
    for u, v in g._ug.edges:
        out.add_edge(u, v, kind="undirected")
        out.add_edge(v, u, kind="undirected")
    return out


def _separated(ug: nx.Graph, xs: set, ys: set, given: set) -> bool:
    """Graph separation: every path from xs to ys passes through `given`."""
    rest = ug.subgraph(set(ug.nodes) - set(given))
    reach = set()
    for x in xs:
        if x not in reach:
            reach |= nx.node_connected_component(rest, x)
    return not (reach & ys)


def _chain_moral_graph(dg: nx.DiGraph, ug: nx.Graph) -> nx.Graph:
    """Moral graph of a chain graph: within each chain component (connected by undirected
    edges), the parents of the component are married to each other and joined to it."""
    moral = nx.Graph()
    moral.add_nodes_from(dg.nodes)
    moral.add_nodes_from(ug.nodes)
    moral.add_edges_from(ug.edges)
    moral.add_edges_from(dg.edges)
    for component in nx.connected_components(ug.subgraph(moral.nodes)):
        parents = {p for c in component for p in dg.predecessors(c)} - component
        moral.add_edges_from(itertools.combinations(parents, 2))
    return moral
