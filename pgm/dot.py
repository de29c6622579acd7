"""Graphviz DOT export of a `GraphicalModel`, for people who have graphviz installed.

Plates become clusters labelled with their sizes. Clusters must nest in DOT, so a node's
plates are ordered outermost first (by batch dimension, leftmost outermost) and each distinct
prefix becomes one cluster; two overlapping plates that do not nest (users x items) give a
cluster for each combination, each labelled with its own plate.

>>> import pgm, models
>>> print(pgm.graph_of(models.Chain()).to_dot())  # doctest: +NORMALIZE_WHITESPACE
digraph "Chain" {
  node [shape=circle, fontname="Helvetica"];
  "a" [label="a"];
  "b" [label="b"];
  subgraph cluster_data {
    label="N"; labeljust=r; labelloc=b; style=rounded;
    "c" [label="c", style=filled, fillcolor="#bfbfbf"];
  }
  "a" -> "b";
  "b" -> "c";
}
"""

from __future__ import annotations

_STYLE = {
    "latent": "",
    "observed": ', style=filled, fillcolor="#bfbfbf"',
    "deterministic": ", style=dashed",
    "factor": ', shape=square, style=filled, fillcolor=black, label="", width=0.15',
    "parameter": ', shape=point, width=0.08, xlabel="{name}"',
}


def _quote(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cluster_id(path: tuple[str, ...]) -> str:
    safe = ["".join(c if c.isalnum() else "_" for c in p) for p in path]
    return "cluster_" + "__".join(safe)


def to_dot(g) -> str:
    """DOT source of `g`: ``graph`` when all its edges are undirected, ``digraph`` otherwise
    (undirected edges of a mixed graph get ``dir=none``)."""
    undirected_only = bool(g.undirected_edges) and not g.directed_edges
    header, arrow = ("graph", "--") if undirected_only else ("digraph", "->")
    plates = g.plates

    def order(ps):
        return tuple(sorted(ps, key=lambda p: (plates.get(p, {}).get("dim") or 0, p)))

    # Build the cluster tree: path (tuple of plates) -> nodes directly inside it.
    members: dict[tuple[str, ...], list[str]] = {}
    for n, attrs in g.nodes.items():
        members.setdefault(order(attrs.get("plates", ())), []).append(n)
    paths = set()
    for path in members:
        paths.update(path[:i] for i in range(len(path) + 1))

    def node_line(n, indent):
        kind = g.nodes[n]["kind"]
        style = _STYLE.get(kind, "").replace("{name}", str(n).replace('"', '\\"'))
        label = "" if kind in ("factor", "parameter") else f"label={_quote(g.nodes[n].get('label') or n)}"
        if g.nodes[n].get("ellipsis"):  # a collapsed chain's dots (GraphicalModel.collapse_chain)
            style = ", shape=plaintext"
        attrs = ", ".join(a for a in (label, style.lstrip(", ")) if a)
        return f"{indent}{_quote(n)} [{attrs}];"

    def emit(path, depth, out):
        indent = "  " * depth
        for n in members.get(path, []):
            out.append(node_line(n, indent))
        children = sorted(p for p in paths if len(p) == len(path) + 1 and p[: len(path)] == path)
        for child in children:
            plate = child[-1]
            from pgm.draw import _plate_label

            label = _plate_label(plate, plates.get(plate, {}))
            out.append(f"{indent}subgraph {_cluster_id(child)} {{")
            out.append(f"{indent}  label={_quote(label)}; labeljust=r; labelloc=b; style=rounded;")
            emit(child, depth + 1, out)
            out.append(f"{indent}}}")

    lines = [f"{header} {_quote(g.name or 'model')} {{", '  node [shape=circle, fontname="Helvetica"];']
    emit((), 1, lines)
    for u, v in g.directed_edges:
        lines.append(f"  {_quote(u)} -> {_quote(v)};")
    for u, v in g.undirected_edges:
        extra = "" if undirected_only else " [dir=none]"
        lines.append(f"  {_quote(u)} {arrow} {_quote(v)}{extra};")
    lines.append("}")
    return "\n".join(lines)
