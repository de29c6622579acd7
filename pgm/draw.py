"""Textbook pictures of a `GraphicalModel` with networkx + matplotlib (no graphviz binary).

The figures follow the conventions of Bishop's *Pattern Recognition and Machine Learning*
(ch. 8) and Koller & Friedman: random variables are circles with their name inside, observed
variables shaded grey, deterministic variables with a dashed outline, parameters small filled
dots, factors small black squares; directed edges are arrows whose heads stop at the circle's
edge, undirected edges plain lines; plates are labelled rectangles around their members with
the plate's size in a corner ("N = 100" for names of one or two characters, "data (100)"
otherwise), nested plates drawn nested. A node whose attributes say ``ellipsis=True`` (the dots of
a long chain drawn collapsed by `GraphicalModel.collapse_chain`, x_T -> ... -> x_t -> ... -> x) is
drawn as its ``label`` ("⋯") alone, without a circle; any node's ``label`` attribute replaces its
name as its text.

>>> from matplotlib.figure import Figure
>>> from pgm.graph import GraphicalModel
>>> g = GraphicalModel({"z": {"kind": "latent", "plates": ("N",)},
...                     "x": {"kind": "observed", "plates": ("N",)}},
...                    directed_edges=[("z", "x")], plates={"N": {"size": 100, "dim": -1}})
>>> ax = draw(g, ax=Figure().add_subplot())
>>> sorted(a.get_gid() for a in ax.patches)
['node:x', 'node:z', 'plate:N']
>>> pos = layout_positions(g)
>>> pos["z"][1] > pos["x"][1]
True

Every artist that stands for part of the graph carries a gid (also the `id` in SVG output):
``node:<name>`` (the node's patch: a `Circle`, or a `Rectangle` for a factor), ``label:<name>``
(its label), ``plate:<name>`` (a `FancyBboxPatch`), ``plate-label:<name>``, and the edge
collections ``edges:directed`` and ``edges:undirected`` (`LineCollection`s, one segment list
per edge in the order of `g.directed_edges` / `g.undirected_edges`) and ``arrowheads`` (a
`PolyCollection`, one triangle per directed edge, tip on the child's outline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import networkx as nx
import numpy as np

__all__ = [
    "draw",
    "layout_positions",
    "LAYOUTS",
    "UNIT_DRAW_LIMIT",
    "SAVE_SUFFIXES",
    "OBSERVED_COLOR",
    "LATENT_COLOR",
    "FACTOR_COLOR",
    "PARAMETER_COLOR",
    "EDGE_COLOR",
    "PLATE_COLOR",
]

#: Fill of observed variables (a fixed grey, as in textbook figures).
OBSERVED_COLOR = "#bdbdbd"
#: Fill of latent and deterministic variables.
LATENT_COLOR = "#ffffff"
#: Fill of factor squares.
FACTOR_COLOR = "#000000"
#: Fill of parameter dots.
PARAMETER_COLOR = "#000000"
#: Colour of node outlines and edges.
EDGE_COLOR = "#000000"
#: Colour of plate rectangles and their labels.
PLATE_COLOR = "#333333"

#: File suffixes `draw(path=...)` accepts; the suffix picks the format.
SAVE_SUFFIXES = (".png", ".svg", ".pdf")
#: Most units a unit-level graph may have for `draw` to lay it out itself (more are refused
#: with a hint to draw the site level; an explicit `layout=` draws them anyway).
UNIT_DRAW_LIMIT = 64
#: Layout names `draw(layout=...)` accepts (or pass a dict of positions).
LAYOUTS = ("auto", "layered", "bipartite", "spring", "kamada_kawai", "circular")

# Geometry, in units of the spacing between neighbouring nodes of a layout.
_SEP = 1.0  # distance between neighbouring nodes in a row and between rows
_PLATE_PAD = 0.15  # gap between a plate's contents and its outline
_SLANT = 0.42  # unit level: least row gap per unit of an edge's horizontal run
_LABEL_BAND = 0.22  # height of the strip of a plate that holds its label
_MARGIN = 0.12  # around the whole picture
_INCHES_PER_UNIT = 0.85  # picture scale when draw() sizes the figure itself
_MAX_FIGURE_INCHES = 28.0  # longest side of a figure draw() sizes itself
_MIN_FIGURE_INCHES = 1.2
_CHAR_WIDTH = 0.62  # average glyph width of DejaVu Sans, in ems (no text measurement needed)
_LABEL_FILL = 0.85  # share of a circle's diameter a label inside it may take
_LONG_LABEL = 10  # labels longer than this do not shrink the common font size
_PARAMETER_SCALE = 0.22  # parameter dot radius / variable circle radius
_FACTOR_SCALE = 0.35  # factor square half-side / variable circle radius
_ELLIPSIS_SCALE = 0.8  # half-width of a collapsed chain's "⋯" / variable circle radius


# ---------------------------------------------------------------------------------- public API
def draw(
    g,
    path=None,
    ax=None,
    *,
    layout=None,
    node_size: float = 0.6,
    figsize=None,
    title: str | None = None,
    show_plates: bool = True,
    dpi: int = 150,
):
    """Draw `g` as a textbook figure; save it to `path` if given; return the matplotlib Axes.

    Options:

    - `path`: a file name ending in ``.png``, ``.svg`` or ``.pdf`` (the suffix picks the
      format; parent folders are created). The figure `draw` created is closed after saving.
    - `ax`: draw into this Axes (no figure is created, nothing is closed); otherwise a figure is
      created, sized so that the picture keeps a fixed scale (0.85 inch between neighbouring
      nodes, shrunk so that no side exceeds 28 inches).
    - `layout`: ``None``/``"auto"`` (see below), a name from `LAYOUTS`, or a dict
      ``{node: (x, y)}`` giving every node's position (sizes then scale with the median
      distance between nearest neighbours).
    - `node_size`: circle diameter as a fraction of the spacing between neighbouring nodes,
      in (0, 1]; parameter dots and factor squares are drawn smaller in proportion.
    - `figsize`: ``(width, height)`` in inches for the created figure (not with `ax`).
    - `title`: a title above the picture.
    - `show_plates`: draw plate rectangles and their labels (the layout groups plates anyway).
    - `dpi`: resolution of the created figure and of a saved PNG.

    The ``"auto"`` layout: a DAG (or a chain graph, or any graph under ``"layered"``) is drawn
    in layers by topological order, roots on top and arrows pointing down; a factor graph
    (`g.view == "factor_graph"`) is layered with each conditional's factor square between its
    parents and its child, and each potential's square below its scope; an undirected graph
    that is bipartite like an RBM goes in two rows (observed nodes in the bottom row); any
    other undirected graph gets a seeded Kamada-Kawai (connected, up to 200 nodes) or spring
    layout. In layered layouts the nodes of each plate combination occupy a column block of
    their own, so plate rectangles enclose their members and no other nodes.
    """
    _check_graph(g)
    fmt = _check_path(path)
    if not isinstance(node_size, (int, float)) or isinstance(node_size, bool) or not 0 < node_size <= 1:
        raise ValueError(f"node_size: expected a number in (0, 1] (diameter / node spacing), got {node_size!r}")
    if not isinstance(dpi, (int, float)) or isinstance(dpi, bool) or dpi <= 0:
        raise ValueError(f"dpi: expected a positive number, got {dpi!r}")
    if figsize is not None:
        if ax is not None:
            raise ValueError(f"figsize: cannot be used with ax (the Axes' figure has its size), got figsize={figsize!r}")
        ok = isinstance(figsize, (tuple, list)) and len(figsize) == 2
        if not ok or not all(isinstance(v, (int, float)) and v > 0 for v in figsize):
            raise ValueError(f"figsize: expected (width, height) in inches, both positive, got {figsize!r}")

    if g.level == "unit" and (layout is None or layout == "auto"):
        units = sum(1 for n in g.nodes if g.nodes[n]["kind"] != "factor")
        if units > UNIT_DRAW_LIMIT:
            raise ValueError(
                f"g: a unit-level graph of {units} units (more than {UNIT_DRAW_LIMIT}) makes no readable "
                "figure; draw the site-level graph (pgm.graph_of(model) / `pgm draw` without --units), "
                "or a smaller model (e.g. `--set x_dim=4`), or pass layout= to draw it anyway"
            )
    pos, unit = _positions(g, layout)
    # Two rows (an RBM): edges cross between the rows, straight, as in the textbook figures.
    two_rows = len({round(y, 6) for _, y in pos.values()}) <= 2 and not g.directed_edges
    # Unit-level factor graphs keep straight edges: arcs around the many squares would leave
    # the plates (an edge then runs from a square to its unit, as in the textbook figures).
    straight = two_rows or (g.level == "unit" and g.view == "factor_graph")
    scene = _Scene(g, pos, unit, node_size, show_plates, bend=not straight)

    created = ax is None
    if created:
        fig, ax = _new_figure(scene, figsize, title, dpi, keep=path is None)
    else:
        if title is not None:
            ax.set_title(title)
        _fit_to_axes(scene, ax)
    scene.render(ax)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, format=fmt, dpi=dpi)
        if created:
            _close(ax.figure)
    return ax


def layout_positions(g, layout="auto") -> dict[str, tuple[float, float]]:
    """Node positions `{name: (x, y)}` that `draw(g, layout=layout)` uses (see `draw`).

    Layered layouts put neighbouring nodes one unit apart and rows about one unit apart
    (more where a plate boundary runs between them); y decreases downwards, so parents have
    larger y than their children.
    """
    _check_graph(g)
    return _positions(g, layout)[0]


# ------------------------------------------------------------------------------- validation
def _check_graph(g) -> None:
    from pgm.graph import GraphicalModel

    if not isinstance(g, GraphicalModel):
        raise TypeError(f"g: expected a pgm.GraphicalModel, got {type(g).__name__}")


def _check_path(path) -> str | None:
    if path is None:
        return None
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected a file name (str or Path), got {type(path).__name__} {path!r}")
    suffix = Path(path).suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise ValueError(
            f"path: expected a file name ending in one of {', '.join(SAVE_SUFFIXES)}, got {str(path)!r}"
        )
    return suffix[1:]


# ----------------------------------------------------------------------------------- layout
def _positions(g, layout) -> tuple[dict[str, tuple[float, float]], float]:
    """Positions and the layout's unit (distance between neighbouring nodes)."""
    nodes = list(g.nodes)
    if isinstance(layout, Mapping):
        missing = [n for n in nodes if n not in layout]
        if missing:
            shown = ", ".join(map(repr, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(f"layout: expected a position for every node, but {len(missing)} are missing: {shown}")
        pos = {}
        for n in nodes:
            p = layout[n]
            try:
                x, y = (float(v) for v in p)
            except (TypeError, ValueError):
                raise ValueError(f"layout[{n!r}]: expected an (x, y) pair of numbers, got {p!r}") from None
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"layout[{n!r}]: expected finite coordinates, got {p!r}")
            pos[n] = (x, y)
        return pos, _typical_spacing(pos)
    if layout is None:
        layout = "auto"
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS} or a dict of node positions, got {layout!r}")
    if not nodes:
        return {}, 1.0
    if layout == "auto":
        layout = _auto_layout(g)
    if layout == "layered":
        if g.view == "factor_graph":
            return _layered(g, _orient(g), _factor_layers(g)), 1.0
        chain = _chain_positions(g)
        if chain is not None:
            return chain, 1.0
        return _layered(g, _orient(g)), 1.0
    if layout == "bipartite":
        rows = _bipartite_rows(g)
        if rows is None:
            raise ValueError(f"layout: 'bipartite' needs a bipartite graph, but {g!r} has an odd cycle")
        return _layered(g, _orient(g), rows), 1.0
    return _normalised(_networkx_layout(g, layout), g.directed_edges + g.undirected_edges), 1.0


def _auto_layout(g) -> str:
    if g.view == "factor_graph" or g.kind in ("directed", "mixed"):
        return "layered"
    if _looks_like_rbm(g):
        return "bipartite"
    return "kamada_kawai"


def _undirected(g) -> nx.Graph:
    ug = nx.Graph()
    ug.add_nodes_from(g.nodes)
    ug.add_edges_from(g.undirected_edges)
    return ug


def _looks_like_rbm(g) -> bool:
    """Bipartite with two clean sides: dense (site level) or split by site (unit level)."""
    ug = _undirected(g)
    if ug.number_of_edges() == 0 or not nx.is_bipartite(ug):
        return False
    for comp in nx.connected_components(ug):
        if len(comp) < 2:
            continue
        a, b = _two_colouring(ug.subgraph(comp))
        site = lambda n: g.nodes[n].get("site", n)  # noqa: E731
        if {site(n) for n in a} & {site(n) for n in b}:
            return False
        dense = ug.subgraph(comp).number_of_edges() >= 0.5 * len(a) * len(b)
        if not (dense or g.level == "unit"):
            return False
    return True


def _two_colouring(sub: nx.Graph) -> tuple[list, list]:
    colour = nx.bipartite.color(sub)
    return [n for n in sub if colour[n] == 0], [n for n in sub if colour[n] == 1]


def _bipartite_rows(g) -> dict[str, int] | None:
    """Row of each node (0 top, 1 bottom): per component, the side with more observed nodes
    (or, failing that, the side holding the component's first node) goes to the bottom."""
    ug = _undirected(g)
    if not nx.is_bipartite(ug):
        return None
    order = {n: i for i, n in enumerate(g.nodes)}
    rows = {}
    for comp in nx.connected_components(ug):
        if len(comp) == 1:
            (n,) = comp
            rows[n] = 1 if g.nodes[n]["kind"] == "observed" else 0
            continue
        a, b = _two_colouring(ug.subgraph(comp))
        obs = lambda side: sum(g.nodes[n]["kind"] == "observed" for n in side)  # noqa: E731
        first = lambda side: min(order[n] for n in side)  # noqa: E731
        bottom_a = (obs(a), -first(a)) >= (obs(b), -first(b))
        for n in a:
            rows[n] = 1 if bottom_a else 0
        for n in b:
            rows[n] = 0 if bottom_a else 1
    return rows


def _factor_child(g, f: str, scope: list[str]) -> str | None:
    """The child of a conditional's factor node: attribute "child", or the name p(child|...)."""
    attrs = g.nodes[f]
    child = attrs.get("child")
    if child in scope:
        return child
    if attrs.get("dist") == "factor":  # a potential
        return None
    best = None
    for v in scope:
        if f == f"p({v})" or f.startswith(f"p({v}|"):
            if best is None or len(v) > len(best):
                best = v
    return best


def _orient(g) -> nx.DiGraph:
    """A DAG over all nodes for layering: the directed edges; factor-graph edges from parents
    to a conditional's factor to its child, from a potential's scope to its factor; any other
    undirected edge from the node with the smaller (directed depth, program position)."""
    h = nx.DiGraph()
    h.add_nodes_from(g.nodes)
    h.add_edges_from(g.directed_edges)
    undirected = g.undirected_edges
    if not undirected:
        return h
    ug = _undirected(g)
    done = set()
    if g.view == "factor_graph":
        for f in g.nodes:
            if g.nodes[f]["kind"] != "factor":
                continue
            scope = list(ug.neighbors(f))
            child = _factor_child(g, f, scope)
            for v in scope:
                if v == child:
                    h.add_edge(f, v)
                else:
                    h.add_edge(v, f)
                done.add(frozenset((f, v)))
    depth = {}
    for i, gen in enumerate(nx.topological_generations(h)):
        for n in gen:
            depth[n] = i
    # In a chain graph (a DBN), of two nodes joined by an undirected edge the one with a longer
    # directed path below it goes lower: the top RBM's layers stack above the directed ones.
    height = _heights(nx.DiGraph(g.directed_edges)) if g.directed_edges else {}
    order = {n: i for i, n in enumerate(g.nodes)}
    observed = {n for n in g.nodes if g.nodes[n]["kind"] == "observed"}
    key = lambda n: (height.get(n, 0), depth[n], n in observed, order[n])  # noqa: E731  (observed lower)
    for u, v in undirected:
        if frozenset((u, v)) in done:
            continue
        h.add_edge(*((u, v) if key(u) < key(v) else (v, u)))
    return h


def _heights(dg: nx.DiGraph) -> dict[str, int]:
    """Length of the longest directed path starting at each node."""
    height = {}
    for n in reversed(list(nx.topological_sort(dg))):
        height[n] = 1 + max((height[c] for c in dg.successors(n)), default=-1)
    return height


def _factor_layers(g) -> dict[str, int]:
    """Layers of a factor graph: the variables layered as their own graph would be (parents
    above children, an RBM's observed side at the bottom, a DBN's top layers above), each
    conditional's square just above its child, each potential's square between the layers of
    its scope (a pairwise weight between its two units), a unary potential's square above its
    unit in the top layer, below it otherwise."""
    from pgm.graph import GraphicalModel

    ug = _undirected(g)
    factors = [n for n in g.nodes if g.nodes[n]["kind"] == "factor"]
    variables = [n for n in g.nodes if g.nodes[n]["kind"] != "factor"]
    directed, pairs, scopes = [], set(), {}
    for f in factors:
        scope = list(ug.neighbors(f))
        scopes[f] = scope
        child = _factor_child(g, f, scope)
        if child is not None:
            directed += [(p, child) for p in scope if p != child]
        else:
            pairs.update(tuple(sorted(e)) for e in __import__("itertools").combinations(scope, 2))
    inner = GraphicalModel({n: dict(g.nodes[n]) for n in variables}, directed, sorted(pairs), level=g.level)
    rows = _bipartite_rows(inner) if not directed and pairs and _looks_like_rbm(inner) else None
    if rows is None and not directed and g.level == "unit":
        # Units of a Markov network with lateral interactions (a Boltzmann machine): one row
        # per site, latent sites on top in program order, observed ones at the bottom.
        site = {n: g.nodes[n].get("site", n) for n in variables}
        sites = list(dict.fromkeys(site[n] for n in variables))
        observed = {site[n] for n in variables if g.nodes[n]["kind"] == "observed"}
        ranked = [s for s in sites if s not in observed] + [s for s in sites if s in observed]
        rows = {n: ranked.index(site[n]) for n in variables}
    h = _orient(inner)
    if rows is not None:
        layer = dict(rows)
    else:
        layer = {}
        for i, gen in enumerate(nx.topological_generations(h)):
            for n in gen:
                layer[n] = i
        for n in variables:
            if h.in_degree(n) == 0 and h.out_degree(n) > 0:
                layer[n] = min(layer[c] for c in h.successors(n)) - 1
    top = min(layer.values(), default=0)
    out = {n: 2 * layer[n] for n in variables}
    for f in factors:
        scope = scopes[f]
        child = _factor_child(g, f, scope)
        if child is not None:
            out[f] = 2 * layer[child] - 1
        elif not scope:
            out[f] = 2 * top - 1
        else:
            lo, hi = min(layer[v] for v in scope), max(layer[v] for v in scope)
            if hi > lo:
                out[f] = 2 * lo + 1
            else:
                out[f] = 2 * lo - 1 if lo == top else 2 * lo + 1
    return out


def _plate_ranks(g) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Canonical plate order (more members first, then first appearance) and plate members."""
    members: dict[str, list[str]] = {}
    for n, a in g.nodes.items():
        for p in a.get("plates", ()):
            members.setdefault(p, []).append(n)
    first = {p: i for i, p in enumerate(members)}
    ranked = sorted(members, key=lambda p: (-len(members[p]), first[p]))
    return {p: i for i, p in enumerate(ranked)}, members


def _layered(g, h: nx.DiGraph, layer: dict[str, int] | None = None) -> dict[str, tuple[float, float]]:
    """Layered positions (y decreasing with the layer), in four steps:

    1. layers by longest path from the roots, roots with children pulled down to sit just
       above their highest child (unless `layer` is given);
    2. one column block per plate combination, blocks ordered so that each plate's blocks are
       adjacent (lexicographic order of the canonically ranked plate sets), nodes ordered within
       blocks by barycentre sweeps -- this start is free of plate intrusions;
    3. coordinate sweeps that move every node towards its neighbours' mean x, never closer to
       a row neighbour than the spacing, and never into the x-range of a plate whose rows it
       shares but whose member it is not (so a parent can sit right above a plate it is not in);
    4. row gaps widened where plate outlines and labels run between rows.
    """
    nodes = list(g.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    if layer is None:
        layer = {}
        for i, gen in enumerate(nx.topological_generations(h)):
            for n in gen:
                layer[n] = i
        for n in nodes:
            if h.in_degree(n) == 0 and h.out_degree(n) > 0:
                layer[n] = min(layer[c] for c in h.successors(n)) - 1
    used = sorted(set(layer.values()))
    renumber = {v: i for i, v in enumerate(used)}
    layer = {n: renumber[layer[n]] for n in nodes}
    nlayers = len(used)

    rank, members = _plate_ranks(g)
    key = {n: tuple(sorted(rank[p] for p in set(g.nodes[n].get("plates", ())))) for n in nodes}
    groups = sorted(set(key.values()))

    def gap(ga, gb) -> float:
        return _SEP + 2 * _PLATE_PAD * len(set(ga) ^ set(gb))

    cells: dict[tuple, list[str]] = {}
    for n in nodes:  # program order within a cell to start with
        cells.setdefault((key[n], layer[n]), []).append(n)
    width = {grp: max(len(v) for (k, _), v in cells.items() if k == grp) for grp in groups}
    start, cursor = {}, 0.0
    for i, grp in enumerate(groups):
        if i:
            cursor += gap(groups[i - 1], grp)
        start[grp] = cursor
        cursor += (width[grp] - 1) * _SEP

    x: dict[str, float] = {}

    def place(grp, lyr):
        cell = cells[(grp, lyr)]
        offset = (width[grp] - len(cell)) / 2
        for j, n in enumerate(cell):
            x[n] = start[grp] + (offset + j) * _SEP

    for grp, lyr in cells:
        place(grp, lyr)
    for sweep in range(4):  # barycentre ordering within cells, stable on ties
        down = sweep % 2 == 0
        neighbours = h.predecessors if down else h.successors
        for lyr in range(nlayers) if down else range(nlayers - 1, -1, -1):
            for grp in groups:
                cell = cells.get((grp, lyr))
                if not cell or len(cell) < 2:
                    continue
                bary = {}
                for n in cell:
                    xs = [x[m] for m in neighbours(n)]
                    bary[n] = sum(xs) / len(xs) if xs else x[n]
                cell.sort(key=lambda n: (bary[n], x[n], order[n]))
                place(grp, lyr)

    rows = [[n for grp in groups for n in cells.get((grp, lyr), ())] for lyr in range(nlayers)]
    spans = {p: (min(layer[n] for n in ms), max(layer[n] for n in ms)) for p, ms in members.items()}
    # Plate constraints, fixed by the start layout: for each plate, the non-members in the rows
    # it spans and the side of the plate they are on (none where plates overlap and a
    # non-member starts inside the range: nothing can be kept out there).
    mset = {p: set(ms) for p, ms in members.items()}
    sides: dict[str, list[tuple[str, int]]] = {}
    for p, (lo, hi) in spans.items():
        left, right = min(x[n] for n in members[p]), max(x[n] for n in members[p])
        sides[p] = []
        for lyr in range(lo, hi + 1):
            for n in rows[lyr]:
                if n not in mset[p]:
                    if x[n] < left:
                        sides[p].append((n, -1))
                    elif x[n] > right:
                        sides[p].append((n, +1))
    plates_at = [[p for p, (lo, hi) in spans.items() if lo <= lyr <= hi] for lyr in range(nlayers)]
    nbrs = {n: (list(h.predecessors(n)), list(h.successors(n))) for n in nodes}

    for sweep in range(9):
        down = sweep % 2 == 0
        for lyr in range(nlayers) if down else range(nlayers - 1, -1, -1):
            row = rows[lyr]
            lo = {n: -math.inf for n in row}
            hi = {n: math.inf for n in row}
            for p in plates_at[lyr]:
                # Extremes of the plate's members and non-members in the other rows.
                mem = {}
                for m in members[p]:
                    if layer[m] != lyr:
                        a, b = mem.get(key[m], (math.inf, -math.inf))
                        mem[key[m]] = (min(a, x[m]), max(b, x[m]))
                out = {}
                for m, side in sides[p]:
                    if layer[m] != lyr:
                        a = out.get((key[m], side))
                        out[(key[m], side)] = x[m] if a is None else (max(a, x[m]) if side < 0 else min(a, x[m]))
                for n in row:
                    if n in mset[p]:
                        for (grp, side), v in out.items():
                            if side < 0:
                                lo[n] = max(lo[n], v + gap(grp, key[n]))
                            else:
                                hi[n] = min(hi[n], v - gap(grp, key[n]))
                for n, side in sides[p]:
                    if layer[n] != lyr:
                        continue
                    for grp, (a, b) in mem.items():
                        if side < 0:
                            hi[n] = min(hi[n], a - gap(grp, key[n]))
                        else:
                            lo[n] = max(lo[n], b + gap(grp, key[n]))
            desired = []
            for n in row:
                first, second = nbrs[n] if down else nbrs[n][::-1]
                xs = [x[m] for m in first] or [x[m] for m in second]
                desired.append(sum(xs) / len(xs) if xs else x[n])
            gaps = [gap(key[a], key[b]) for a, b in zip(row, row[1:])]
            cand = [min(max(v, lo[n]), hi[n]) for n, v in zip(row, _spread(desired, gaps))]
            if all(b - a >= gp - 1e-9 for a, b, gp in zip(cand, cand[1:], gaps)):
                for n, v in zip(row, cand):
                    x[n] = v
                continue
            # Fall back to moving one node at a time within its current bounds.
            for i in range(len(row)) if sweep % 4 < 2 else range(len(row) - 1, -1, -1):
                n = row[i]
                a = x[row[i - 1]] + gaps[i - 1] if i else -math.inf
                b = x[row[i + 1]] - gaps[i] if i + 1 < len(row) else math.inf
                a, b = max(a, lo[n]), min(b, hi[n])
                if a <= b:
                    x[n] = min(max(desired[i], a), b)

    ends = [0] * nlayers
    begins = [0] * nlayers
    for lo_, hi_ in spans.values():
        ends[hi_] += 1
        begins[lo_] += 1
    # At unit level, rows joined by long slanted edges move apart until an edge clears the
    # nodes next to its ends (rather than bending around them, out of the plates).
    reach = [0.0] * nlayers
    if g.level == "unit":
        for u, v in h.edges:
            lo_, hi_ = sorted((layer[u], layer[v]))
            if hi_ == lo_ + 1:
                reach[hi_] = max(reach[hi_], abs(x[u] - x[v]))
    ys = [0.0]
    for lyr in range(1, nlayers):
        step = _SEP + ends[lyr - 1] * (2 * _PLATE_PAD + _LABEL_BAND) + begins[lyr] * 2 * _PLATE_PAD
        step = max(step, min(_SLANT * reach[lyr], 4 * _SEP))
        ys.append(ys[-1] - step)
    shift = (min(x.values()) + max(x.values())) / 2
    return {n: (x[n] - shift, ys[layer[n]]) for n in nodes}


#: Shortest directed path drawn left to right (a Markov chain: an HMM, a diffusion chain).
CHAIN_MIN = 4


def _chain_positions(g) -> dict[str, tuple[float, float]] | None:
    """Left-to-right positions for a DAG whose backbone is a long Markov chain (an HMM's
    hidden states, a diffusion model's x_T ... x_0): the chain along a row, each other node
    in the column of the one chain node it hangs from, parents above and children below.
    None when the graph is not of that shape (then it is layered top to bottom)."""
    if g.undirected_edges or not g.directed_edges or g.view == "factor_graph":
        return None
    dg = nx.DiGraph()
    dg.add_nodes_from(g.nodes)
    dg.add_edges_from(g.directed_edges)
    # The backbone: the longest path of unobserved nodes (an HMM's states), continued into a
    # single observed end when nothing else hangs from the chain (a diffusion chain's x_0).
    hidden = [n for n in g.nodes if g.nodes[n]["kind"] != "observed"]
    path = nx.dag_longest_path(dg.subgraph(hidden)) if hidden else []
    if len(path) < CHAIN_MIN:
        path = nx.dag_longest_path(dg)
    if len(path) < CHAIN_MIN:
        return None
    hanging = [c for n in path[:-1] for c in dg.successors(n) if c not in path]
    ends = list(dg.successors(path[-1]))
    if not hanging and len(ends) == 1 and dg.in_degree(ends[0]) == 1:
        path = path + ends
    on_path = set(path)
    # The backbone must be a chain: consecutive nodes joined, no shortcut edges along it.
    if any(dg.has_edge(a, b) for i, a in enumerate(path) for b in path[i + 2:]):
        return None
    plates = {tuple(g.nodes[n].get("plates", ())) for n in g.nodes}
    if len(plates) > 1:
        return None
    column = {n: i for i, n in enumerate(path)}
    pos = {n: (float(i), 0.0) for i, n in enumerate(path)}
    stacks: dict[tuple[int, int], int] = {}
    for n in g.nodes:
        if n in on_path:
            continue
        children = [c for c in dg.successors(n) if c in on_path]
        parents = [p for p in dg.predecessors(n) if p in on_path]
        if len(children) + len(parents) != 1 or dg.degree(n) != 1:
            return None
        anchor, side = (parents[0], -1) if parents else (children[0], +1)
        key = (column[anchor], side)
        stacks[key] = stacks.get(key, 0) + 1
        pos[n] = (float(column[anchor]), side * stacks[key] * _SEP)
    shift = (len(path) - 1) / 2
    return {n: (x - shift, y) for n, (x, y) in pos.items()}


def _spread(desired: list[float], gaps: list[float]) -> list[float]:
    """Closest positions (least squares) to `desired` that keep their order with neighbours at
    least `gaps[i]` apart: pool-adjacent-violators on desired[i] - offset[i]."""
    offsets = [0.0]
    for gp in gaps:
        offsets.append(offsets[-1] + gp)
    blocks: list[list[float]] = []
    for d, off in zip(desired, offsets):
        blocks.append([d - off, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out = []
    for s, c in blocks:
        out += [s / c] * int(c)
    return [z + off for z, off in zip(out, offsets)]


def _networkx_layout(g, name: str) -> dict:
    ug = _undirected(g)
    ug.add_edges_from(g.directed_edges)
    n = ug.number_of_nodes()
    if n == 1:
        return {next(iter(ug)): (0.0, 0.0)}
    if name == "circular":
        return nx.circular_layout(ug)
    if name == "kamada_kawai" and n <= 200 and nx.is_connected(ug):
        try:
            return nx.kamada_kawai_layout(ug, pos=nx.circular_layout(ug))
        except ImportError:  # scipy missing
            pass
    try:
        return nx.spring_layout(ug, seed=0)
    except ImportError:  # large graphs need scipy
        return nx.circular_layout(ug)


def _nearest_distances(pts: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point (chunked, O(n^2) time, O(n) memory)."""
    out = np.empty(len(pts))
    for i in range(0, len(pts), 512):
        d = np.linalg.norm(pts[i : i + 512, None, :] - pts[None, :, :], axis=-1)
        d[np.arange(d.shape[0]), np.arange(i, i + d.shape[0])] = np.inf
        out[i : i + 512] = d.min(axis=1)
    return out


def _typical_spacing(pos: Mapping) -> float:
    if len(pos) < 2:
        return 1.0
    nn = _nearest_distances(np.array(list(pos.values()), dtype=float))
    nn = nn[nn > 0]
    return float(np.median(nn)) if len(nn) else 1.0


def _normalised(pos: Mapping, edges=()) -> dict[str, tuple[float, float]]:
    """Scale a networkx layout so that nearest neighbours are about one unit apart, rotated so
    that edges run as nearly as possible horizontally or vertically (a grid comes out square)."""
    names = list(pos)
    pts = np.array([pos[n] for n in names], dtype=float)
    if edges:
        index = {n: i for i, n in enumerate(names)}
        d = np.array([pts[index[v]] - pts[index[u]] for u, v in edges])
        theta = np.arctan2(d[:, 1], d[:, 0])
        phi = np.arctan2(np.sin(4 * theta).sum(), np.cos(4 * theta).sum()) / 4
        c, s = np.cos(-phi), np.sin(-phi)
        pts = pts @ np.array([[c, s], [-s, c]])
    if len(pts) > 1:
        nn = _nearest_distances(pts)
        scale = max(float(nn.min()), float(np.median(nn)) / 2.5, 1e-9)
        pts = (pts - pts.mean(axis=0)) * (_SEP / scale)
    return {n: (float(p[0]), float(p[1])) for n, p in zip(names, pts)}


# ---------------------------------------------------------------------------------- drawing
class _Scene:
    """Everything to draw, in data coordinates; `fit` sets the font sizes for a scale."""

    def __init__(self, g, pos, unit, node_size, show_plates, bend=True):
        self.g, self.pos, self.unit = g, pos, unit
        self.bend = bend
        self.names = list(g.nodes)
        self.kinds = {n: g.nodes[n]["kind"] for n in self.names}
        # a node's text: its name, or its "label" attribute (the "⋯" of a collapsed chain)
        self.texts = {n: str(g.nodes[n].get("label") or n) for n in self.names}
        self.ellipses = {n for n in self.names if g.nodes[n].get("ellipsis")}
        self.r = node_size / 2 * unit
        self.extent = {}  # half-size of each node's shape
        for n in self.names:
            kind = self.kinds[n]
            if kind == "parameter":
                self.extent[n] = self.r * _PARAMETER_SCALE
            elif kind == "factor":
                self.extent[n] = self.r * _FACTOR_SCALE
            elif n in self.ellipses:
                self.extent[n] = self.r * _ELLIPSIS_SCALE
            else:
                self.extent[n] = self.r
        self.show_plates = show_plates
        self.pad = _PLATE_PAD * unit
        self.band = _LABEL_BAND * unit
        self.ppu = 72 * _INCHES_PER_UNIT / unit  # points per data unit; set by fit()
        self.directed = self._edge_polylines(g.directed_edges)
        self.undirected = self._edge_polylines(g.undirected_edges)
        self._edge_points = _densify(self.directed + self.undirected, 0.05 * unit)
        boxes = [(x - self.extent[n], y - self.extent[n], x + self.extent[n], y + self.extent[n])
                 for n, (x, y) in ((n, pos[n]) for n in self.names)]
        self._node_boxes = np.array(boxes, dtype=float).reshape(-1, 4)
        self._layout_text()

    # ------------------------------------------------------------------ sizes for a scale
    def fit(self, ppu: float) -> None:
        self.ppu = ppu
        self._layout_text()

    def _inside(self, n) -> bool:
        return self.kinds[n] not in ("parameter", "factor")

    def preferred_inches(self) -> float:
        """Inches per unit at which the longest label (up to 10 characters) fits its circle at
        8 pt, between 0.85 and 1.6 inches between neighbouring nodes."""
        longest = max((len(self.texts[n]) for n in self.names if self._inside(n)), default=1)
        r_pts = _CHAR_WIDTH * 8.0 * min(longest, _LONG_LABEL) / (2 * _LABEL_FILL)
        return float(np.clip(r_pts / (72 * self.r), _INCHES_PER_UNIT, 1.6)) / self.unit

    def _layout_text(self):
        """Font sizes and label places for the current scale: one font size for all labels
        inside circles (the largest that fits every label of up to 10 characters); a longer
        label gets a smaller font, or goes beside its node when that would be under 70% of the
        common size; parameters and factors are labelled beside their dot or square."""
        ppu = self.ppu
        r_pts = self.r * ppu
        self.lw = float(np.clip(0.02 * self.unit * ppu, 0.4, 1.3))
        fits = {n: _LABEL_FILL * 2 * r_pts / (_CHAR_WIDTH * max(len(self.texts[n]), 1))
                for n in self.names if self._inside(n) and n not in self.ellipses}
        common = min([11.0, 0.9 * r_pts] + [f for n, f in fits.items() if len(self.texts[n]) <= _LONG_LABEL])
        side = min(9.0, common)
        beside = sum(1 for n in self.names if not (n in fits and fits[n] >= 0.7 * common))
        check_edges = beside * len(self._edge_points) <= 2_000_000
        self.node_labels = {}  # name -> (x, y, text, fontsize, ha, va)
        self.label_boxes = {}  # name -> (x0, y0, x1, y1) of a label beside its node
        for n in self.names:
            x, y = self.pos[n]
            text = self.texts[n]
            if n in self.ellipses:  # the dots alone, as large as the labels in circles
                self.node_labels[n] = (x, y, text, 1.6 * common, "center", "center")
                continue
            if self.g.nodes[n].get("potential") or (self.g.level == "unit" and self.kinds[n] == "factor"):
                # unit-level factor squares (one per term or conditional) go unlabelled
                self.node_labels[n] = (x, y, "", side, "center", "center")
                continue
            if n in fits and fits[n] >= 0.7 * common:
                self.node_labels[n] = (x, y, text, min(common, fits[n]), "center", "center")
                continue
            self.node_labels[n], self.label_boxes[n] = self._beside(n, text, side, check_edges)
        self.plate_fontsize = min(9.0, 0.7 * self.band * ppu)
        self._plates()

    def _beside(self, n, text, fontsize, check_edges):
        """Label place next to node n: of right, upper right, left, below and above, the one
        whose text box covers the fewest other nodes and edge points."""
        x, y = self.pos[n]
        e, g = self.extent[n], 0.04 * self.unit
        w = _CHAR_WIDTH * fontsize * len(text) / self.ppu
        h = 1.2 * fontsize / self.ppu
        d = e * 0.7
        candidates = [
            ((x + e + g, y, "left", "center"), (x + e + g, y - h / 2, x + e + g + w, y + h / 2)),
            ((x + d + g, y + d, "left", "bottom"), (x + d + g, y + d, x + d + g + w, y + d + h)),
            ((x - e - g, y, "right", "center"), (x - e - g - w, y - h / 2, x - e - g, y + h / 2)),
            ((x, y - e - g, "center", "top"), (x - w / 2, y - e - g - h, x + w / 2, y - e - g)),
            ((x, y + e + g, "center", "bottom"), (x - w / 2, y + e + g, x + w / 2, y + e + g + h)),
        ]
        nb = self._node_boxes
        best = None
        for i, ((tx, ty, ha, va), rect) in enumerate(candidates):
            ow = np.minimum(nb[:, 2], rect[2]) - np.maximum(nb[:, 0], rect[0])
            oh = np.minimum(nb[:, 3], rect[3]) - np.maximum(nb[:, 1], rect[1])
            cost = 50 * float((np.clip(ow, 0, None) * np.clip(oh, 0, None)).sum()) / (w * h)
            if check_edges and len(self._edge_points):
                p = self._edge_points
                inside = (p[:, 0] > rect[0]) & (p[:, 0] < rect[2]) & (p[:, 1] > rect[1]) & (p[:, 1] < rect[3])
                cost += float(inside.sum())
            cost += 0.01 * i
            if best is None or cost < best[0]:
                best = (cost, (tx, ty, text, fontsize, ha, va), rect)
        return best[1], best[2]

    def node_box(self, n):
        x, y = self.pos[n]
        e = self.extent[n]
        box = (x - e, y - e, x + e, y + e)
        if n in self.label_boxes:
            box = _union(box, self.label_boxes[n])
        return box

    def _plates(self):
        """Plate rectangles, innermost first: each encloses its members and the rectangles of
        the plates nested in it, with a margin, plus a strip for its label in the corner that
        collides least with labels placed before and with nodes."""
        self.plates = []  # (name, (x0, y0, x1, y1), label, (tx, ty, ha, va))
        if not self.show_plates or not self.names:
            return
        rank, members = _plate_ranks(self.g)
        mset = {p: set(ms) for p, ms in members.items()}
        boxes: dict[str, tuple] = {}
        placed: list[tuple] = []
        obstacles = [self.node_box(n) for n in self.names]
        for p in sorted(members, key=rank.__getitem__, reverse=True):
            box = None
            for n in members[p]:
                box = _union(box, self.node_box(n))
            for q, qbox in boxes.items():
                if mset[q] <= mset[p]:
                    box = _union(box, qbox)
            x0, y0, x1, y1 = box
            x0, y0, x1, y1 = x0 - self.pad, y0 - self.pad, x1 + self.pad, y1 + self.pad
            label = _plate_label(p, self.g.plates.get(p, {}))
            m = 0.05 * self.unit
            w = _CHAR_WIDTH * self.plate_fontsize * len(label) / self.ppu + 2 * m
            best = None
            for i, corner in enumerate(("bottom-right", "bottom-left", "top-right", "top-left")):
                vert, horiz = corner.split("-")
                ly0, ly1 = (y0 - self.band, y0) if vert == "bottom" else (y1, y1 + self.band)
                lx0, lx1 = (x1 - w, x1) if horiz == "right" else (x0, x0 + w)
                rect = (lx0, ly0, lx1, ly1)
                cost = 10 * sum(_overlap(rect, o) for o in placed) + sum(_overlap(rect, o) for o in obstacles)
                cost += 0.01 * self.unit**2 * _points_in(self._edge_points, rect)
                cost += 10 * sum(_crosses(rect, qbox) for q, qbox in boxes.items() if not mset[q] <= mset[p])
                cost += 1e-6 * i * self.unit**2
                if best is None or cost < best[0]:
                    best = (cost, corner, rect)
            _, corner, rect = best
            vert, horiz = corner.split("-")
            if vert == "bottom":
                y0 -= self.band
            else:
                y1 += self.band
            if horiz == "right":
                x0 = min(x0, rect[0])
                anchor = (rect[2] - m, (rect[1] + rect[3]) / 2, "right", "center")
            else:
                x1 = max(x1, rect[2])
                anchor = (rect[0] + m, (rect[1] + rect[3]) / 2, "left", "center")
            anchor_x0, anchor_y0 = anchor[0], anchor[1]
            # Overlapping plates that are not nested: keep their outlines apart where they would
            # coincide, so that each rectangle can be followed by eye.
            tx, ty, ha, va = anchor
            for q, (qx0, qy0, qx1, qy1) in boxes.items():
                if mset[q] <= mset[p] or _overlap((x0, y0, x1, y1), (qx0, qy0, qx1, qy1)) == 0:
                    continue
                near = 0.5 * self.pad
                if abs(y0 - qy0) < near:
                    y0 -= self.pad
                    ty -= self.pad if vert == "bottom" else 0
                if abs(y1 - qy1) < near:
                    y1 += self.pad
                    ty += self.pad if vert == "top" else 0
                if abs(x0 - qx0) < near:
                    x0 -= self.pad
                    tx -= self.pad if horiz == "left" else 0
                if abs(x1 - qx1) < near:
                    x1 += self.pad
                    tx += self.pad if horiz == "right" else 0
            anchor = (tx, ty, ha, va)
            placed.append((rect[0] + tx - anchor_x0, rect[1] + ty - anchor_y0, rect[2] + tx - anchor_x0, rect[3] + ty - anchor_y0))
            boxes[p] = (x0, y0, x1, y1)
            self.plates.append((p, boxes[p], label, anchor))

    def bounds(self):
        box = None
        for n in self.names:
            box = _union(box, self.node_box(n))
        for _, pbox, _, _ in self.plates:
            box = _union(box, pbox)
        for line in self.directed + self.undirected:
            box = _union(box, (*line.min(axis=0), *line.max(axis=0)))
        if box is None:
            return (-1.0, -1.0, 1.0, 1.0)
        m = _MARGIN * self.unit
        return (box[0] - m, box[1] - m, box[2] + m, box[3] + m)

    # ------------------------------------------------------------------ artists
    def render(self, ax):
        from matplotlib.collections import LineCollection, PolyCollection
        from matplotlib.patches import Circle, FancyBboxPatch, Rectangle

        # Limits widened to the Axes' own aspect ratio, so that equal aspect needs no change.
        x0, y0, x1, y1 = self.bounds()
        fw, fh = ax.figure.get_size_inches()
        p = ax.get_position()
        box_aspect = (fh * p.height) / max(fw * p.width, 1e-12)
        w, h = x1 - x0, y1 - y0
        if h / w < box_aspect:
            extra = (w * box_aspect - h) / 2
            y0, y1 = y0 - extra, y1 + extra
        else:
            extra = (h / box_aspect - w) / 2
            x0, x1 = x0 - extra, x1 + extra
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_axis_off()

        rounding = 0.06 * self.unit
        for p, (bx0, by0, bx1, by1), label, (tx, ty, ha, va) in self.plates:
            patch = FancyBboxPatch(
                (bx0, by0), bx1 - bx0, by1 - by0,
                boxstyle=f"round,pad=0,rounding_size={rounding}",
                facecolor="none", edgecolor=PLATE_COLOR, linewidth=self.lw, zorder=1,
            )
            patch.set_gid(f"plate:{p}")
            ax.add_artist(patch)  # not add_patch: limits are set once, not per patch
            ax.text(
                tx, ty, label, ha=ha, va=va, fontsize=self.plate_fontsize, color=PLATE_COLOR,
                zorder=1, gid=f"plate-label:{p}", parse_math=False,
            )

        directed, heads = self._arrows(self.directed)
        undirected = self.undirected
        lines = LineCollection(directed, colors=EDGE_COLOR, linewidths=self.lw, zorder=2, capstyle="butt")
        lines.set_gid("edges:directed")
        ax.add_collection(lines, autolim=False)
        polys = PolyCollection(heads, facecolors=EDGE_COLOR, edgecolors=EDGE_COLOR, linewidths=0.3 * self.lw, zorder=2)
        polys.set_gid("arrowheads")
        ax.add_collection(polys, autolim=False)
        plain = LineCollection(undirected, colors=EDGE_COLOR, linewidths=self.lw, zorder=2)
        plain.set_gid("edges:undirected")
        ax.add_collection(plain, autolim=False)

        for n in self.names:
            x, y = self.pos[n]
            kind, e = self.kinds[n], self.extent[n]
            if kind == "factor":
                patch = Rectangle((x - e, y - e), 2 * e, 2 * e, facecolor=FACTOR_COLOR, edgecolor=EDGE_COLOR,
                                  linewidth=self.lw, zorder=3)
            elif kind == "parameter":
                patch = Circle((x, y), e, facecolor=PARAMETER_COLOR, edgecolor=EDGE_COLOR, linewidth=self.lw,
                               zorder=3)
            elif n in self.ellipses:  # no outline: the dots stand for the collapsed steps
                patch = Circle((x, y), e, facecolor="none", edgecolor="none", zorder=3)
            else:
                fill = OBSERVED_COLOR if kind == "observed" else LATENT_COLOR
                style = "--" if kind == "deterministic" else "-"
                patch = Circle((x, y), e, facecolor=fill, edgecolor=EDGE_COLOR, linewidth=self.lw,
                               linestyle=style, zorder=3)
            patch.set_gid(f"node:{n}")
            ax.add_artist(patch)  # not add_patch: limits are set once, not per patch
            tx, ty, text, fs, ha, va = self.node_labels[n]
            ax.text(tx, ty, text, ha=ha, va=va, fontsize=fs, zorder=4, gid=f"label:{n}", parse_math=False,
                    clip_on=False)

    def _hits(self, pts: np.ndarray, skip: tuple) -> np.ndarray:
        """Which of `pts` (k, 2) lie within (or touch) a node other than those in `skip`."""
        centres, reach = self._centres()
        d = np.linalg.norm(pts[:, None, :] - centres[None, :, :], axis=-1)
        near = d < reach[None, :]
        for n in skip:
            near[:, self._index[n]] = False
        return near.any(axis=1)

    def _centres(self):
        if not hasattr(self, "_c"):
            self._index = {n: i for i, n in enumerate(self.names)}
            self._c = np.array([self.pos[n] for n in self.names], dtype=float).reshape(-1, 2)
            self._reach = np.array([self.extent[n] * (1.42 if self.kinds[n] == "factor" else 1.0) for n in self.names])
            self._reach = self._reach + 0.04 * self.unit
        return self._c, self._reach

    def _blocked(self, edges) -> np.ndarray:
        """For each edge, whether its straight segment passes through a third node."""
        out = np.zeros(len(edges), dtype=bool)
        if not edges or len(self.names) < 3 or not self.bend:
            return out
        centres, reach = self._centres()
        idx = self._index
        for s in range(0, len(edges), 256):
            chunk = edges[s : s + 256]
            a = centres[[idx[u] for u, _ in chunk]]
            b = centres[[idx[v] for _, v in chunk]]
            ab = b - a
            ll = np.maximum((ab**2).sum(-1), 1e-12)
            t = np.clip(((centres[None] - a[:, None]) * ab[:, None]).sum(-1) / ll[:, None], 0, 1)
            closest = a[:, None] + t[..., None] * ab[:, None]
            d = np.linalg.norm(centres[None] - closest, axis=-1)
            near = d < reach[None]
            rows = np.arange(len(chunk))
            near[rows, [idx[u] for u, _ in chunk]] = False
            near[rows, [idx[v] for _, v in chunk]] = False
            out[s : s + len(chunk)] = near.any(axis=1)
        return out

    def _exit(self, n, inside, outside):
        """The point where the segment inside -> outside leaves node n's shape (bisection)."""
        c = np.asarray(self.pos[n], dtype=float)
        e, square = self.extent[n], self.kinds[n] == "factor"
        lo, hi = np.asarray(inside, dtype=float), np.asarray(outside, dtype=float)
        for _ in range(30):
            mid = (lo + hi) / 2
            d = mid - c
            within = max(abs(d[0]), abs(d[1])) <= e if square else d @ d <= e * e
            if within:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def _within(self, n, pts):
        c = np.asarray(self.pos[n], dtype=float)
        d = pts - c
        if self.kinds[n] == "factor":
            return np.abs(d).max(axis=-1) <= self.extent[n]
        return (d**2).sum(-1) <= self.extent[n] ** 2

    def _edge_polylines(self, edges) -> list[np.ndarray]:
        """Edge polylines clipped to the node outlines: straight, or a quadratic Bezier arc
        where the straight segment would cross a third node."""
        edges = [tuple(e) for e in edges]
        blocked = self._blocked(edges)
        paths = []
        ts = np.linspace(0, 1, 41)[:, None]
        for (u, v), bent in zip(edges, blocked):
            a = np.asarray(self.pos[u], dtype=float)
            b = np.asarray(self.pos[v], dtype=float)
            ab = b - a
            length = float(np.hypot(*ab))
            if length <= self.extent[u] + self.extent[v]:
                paths.append(np.array([a, b]))  # overlapping nodes: nothing sensible to clip
                continue
            if not bent:
                d = ab / length
                p0 = self._exit(u, a, b) if self.kinds[u] == "factor" else a + d * self.extent[u]
                p1 = self._exit(v, b, a) if self.kinds[v] == "factor" else b - d * self.extent[v]
                paths.append(np.array([p0, p1]))
                continue
            # An arc bulging (at its middle) further the longer it is, so that arcs from one
            # node nest; sides alternate with the length to share the load.
            normal = np.array([-ab[1], ab[0]]) / length
            bulge = 1.3 * self.r + 0.18 * max(length - self.unit, 0.0)
            first = 1.0 if round(length / self.unit) % 2 == 0 else -1.0
            best = None
            for sign in (first, -first, 1.6 * first, -1.6 * first):
                ctrl = (a + b) / 2 + normal * (2 * bulge * sign)
                curve = (1 - ts) ** 2 * a + 2 * (1 - ts) * ts * ctrl + ts**2 * b
                hits = int(self._hits(curve, (u, v)).sum())
                if best is None or hits < best[0]:
                    best = (hits, curve)
                if hits == 0:
                    break
            curve = best[1]
            out_u = ~self._within(u, curve)
            out_v = ~self._within(v, curve)
            i0 = int(np.argmax(out_u))
            i1 = len(curve) - 1 - int(np.argmax(out_v[::-1]))
            if i1 <= i0:
                paths.append(np.array([a, b]))
                continue
            p0 = self._exit(u, curve[i0 - 1], curve[i0])
            p1 = self._exit(v, curve[i1 + 1], curve[i1])
            paths.append(np.vstack([p0, curve[i0 : i1 + 1], p1]))
        return paths

    def _arrows(self, paths):
        """Shafts (shortened to end inside their heads) and arrowhead triangles whose tips lie
        on the child's outline; heads scale with the nodes, up to 10 points long."""
        head_len = min(0.45 * self.r, 10.0 / self.ppu)
        head_half = 0.36 * head_len
        shafts, heads = [], []
        for pts in paths:
            tip, back = pts[-1], pts[-2]
            d = tip - back
            dl = float(np.hypot(*d))
            if dl == 0:
                shafts.append(pts)
                heads.append(np.zeros((3, 2)) + tip)
                continue
            d = d / dl
            base = tip - head_len * d
            perp = np.array([-d[1], d[0]]) * head_half
            heads.append(np.array([tip, base + perp, base - perp]))
            shafts.append(_trim_end(pts, 0.8 * head_len))
        return shafts, heads


def _trim_end(pts: np.ndarray, amount: float) -> np.ndarray:
    """The polyline shortened by `amount` at its end (so the shaft ends inside the arrowhead)."""
    pts = [p for p in pts]
    while len(pts) > 1 and amount > 0:
        seg = pts[-1] - pts[-2]
        ln = float(np.hypot(*seg))
        if ln > amount:
            pts[-1] = pts[-1] - seg / ln * amount
            break
        amount -= ln
        if len(pts) == 2:
            pts[-1] = pts[-2] + seg * 1e-3
            break
        pts.pop()
    return np.array(pts)


def _densify(paths, step: float) -> np.ndarray:
    """Points along the polylines, at most `step` apart (for label collision tests)."""
    out = [np.zeros((0, 2))]
    for pts in paths:
        for a, b in zip(pts[:-1], pts[1:]):
            k = max(int(np.hypot(*(b - a)) / step), 1)
            t = np.linspace(0, 1, k + 1)[:, None]
            out.append(a + t * (b - a))
    return np.vstack(out)


def _plate_label(name: str, info) -> str:
    """"N = 100" for a short name, "data (100)" otherwise; a plate whose size is a symbol (the
    data plate of a model drawn without data) shows the symbol alone, as textbooks do."""
    if not isinstance(info, Mapping):
        info = {"size": info}
    symbol, size = info.get("symbol"), info.get("size")
    if symbol:
        return str(symbol) if size is None else f"{symbol} = {size}"
    if size is None:
        return str(name)
    return f"{name} = {size}" if len(str(name)) <= 2 else f"{name} ({size})"


def _points_in(points: np.ndarray, rect) -> int:
    if not len(points):
        return 0
    x, y = points[:, 0], points[:, 1]
    return int(((x > rect[0]) & (x < rect[2]) & (y > rect[1]) & (y < rect[3])).sum())


def _crosses(rect, box) -> float:
    """Area of `rect` that the outline of `box` runs through (0 if it is inside or outside)."""
    inter = _overlap(rect, box)
    return 0.0 if inter == 0 or inter == _overlap(rect, rect) else inter


def _union(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


# ---------------------------------------------------------------------------------- figures
def _new_figure(scene: _Scene, figsize, title, dpi, keep: bool):
    """A figure whose single Axes fills it (below the title), sized from the picture's extent
    unless `figsize` is given; registered with pyplot only when it is kept (not saved)."""
    title_in = 0.4 if title is not None else 0.0
    if figsize is None:
        x0, y0, x1, y1 = scene.bounds()
        w, h = x1 - x0, y1 - y0
        inches = min(scene.preferred_inches(), _MAX_FIGURE_INCHES / max(w, h, 1e-9))
        scene.fit(72 * inches)
        x0, y0, x1, y1 = scene.bounds()
        w, h = (x1 - x0) * inches, (y1 - y0) * inches
        title_w = 0.0 if title is None else len(str(title)) * _CHAR_WIDTH * 12 / 72 + 0.3  # 12 pt title
        figsize = (max(w, _MIN_FIGURE_INCHES, title_w), max(h, _MIN_FIGURE_INCHES) + title_in)
    if keep:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize, dpi=dpi)
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=dpi)
    frac = 1 - title_in / figsize[1]
    ax = fig.add_axes((0, 0, 1, frac))
    if title is not None:
        ax.set_title(title)
    _fit_to_axes(scene, ax)
    return fig, ax


def _fit_to_axes(scene: _Scene, ax) -> None:
    """Set the scene's scale (points per data unit) to what `ax` shows with equal aspect.
    Text sizes depend on the scale and the extent on the text: two rounds settle it."""
    fig = ax.figure
    fw, fh = fig.get_size_inches()
    p = ax.get_position()
    for _ in range(2):
        x0, y0, x1, y1 = scene.bounds()
        scene.fit(72 * min(fw * p.width / max(x1 - x0, 1e-12), fh * p.height / max(y1 - y0, 1e-12)))


def _close(fig) -> None:
    """Close a figure `draw` created (only pyplot-managed figures need it; saved figures are
    created outside pyplot and are freed with their last reference)."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and getattr(fig, "number", None) is not None and plt.fignum_exists(fig.number):
        plt.close(fig)
