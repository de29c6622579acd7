"""`pgm.graph_of`: extract the graphical model of a Pyro program.

Site level: provenance tracking (`pgm.provenance`, the idea behind
`pyro.infer.inspect.get_model_relations`) tells which sample sites each site's density depends
on. A sample site's dependencies become directed edges; a `pyro.factor` potential's
dependencies become its scope, a clique of undirected edges.

Unit level: each site is expanded into one node per unit (element of its value, plates aside),
and dependencies are found by autograd at random probe points: a directed edge `w -> u`
wherever the log density of unit `u` has a nonzero derivative with respect to the value of unit
`w`, and an undirected edge `u - w` wherever a potential has a nonzero mixed second derivative
in `u` and `w` (its units interact). A joint event whose distribution states its per-unit
conditionals (`unit_log_prob(value)`, e.g. `models.autoregressive.Autoregressive`) is expanded
into its units too, so an autoregressive site shows its complete DAG, its masks' connectivity or
its receptive field. A transformed distribution over a joint event (a normalizing flow) is
expanded through its base-side value u = T^{-1}(x): x_j -> x_i where u_i depends on x_j one way
only, x_i - x_j where they depend on each other (the flow's Jacobian pattern: triangular for an
autoregressive layer, two blocks for one coupling layer, dense after several). Networks are
invisible to both: only sample sites are nodes.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import warnings
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

from pgm.graph import GraphicalModel
from pgm.model import Model
from pgm.provenance import TrackParameters, TrackSites, density_provenance, is_arg_token, plain, track_arguments
from pgm.program import ProgramError, buffers_kept, check_program, isolated, sample_sites, site_kind, trace_program, unwrap

__all__ = ["graph_of", "UNIT_LIMIT", "GraphExtractionWarning"]


class GraphExtractionWarning(UserWarning):
    """Extraction saw something that may make the graph miss edges (named in the message)."""


#: Largest number of units a site may be expanded into at `level="unit"`.
UNIT_LIMIT = 1024
#: The plate that holds the data (the model contract), and its symbol where no data is given.
DATA_PLATE, DATA_SYMBOL = "data", "N"
#: Random probe points at which unit dependencies are evaluated (their union is taken):
#: at least MIN_PROBES, then more until two in a row find nothing new, at most MAX_PROBES.
MIN_PROBES, MAX_PROBES = 3, 16
#: Largest unit scope of a potential whose third derivatives are checked (to split it into
#: pairwise terms when its interaction graph has triangles).
THIRD_ORDER_LIMIT = 64
#: Binary units are probed inside (0.1, 0.9) first, then at wider points 0.5 + SPREAD * N(0, 1)
#: so that gated networks (ReLU units dead on [0, 1]) still reveal every allowed dependency.
SPREAD = 2.0


def graph_of(
    model: Any,
    *args,
    level: str = "site",
    show_params: bool = False,
    unit_limit: int = UNIT_LIMIT,
    name: str | None = None,
    data_size: int | str | None = None,
    **kwargs,
) -> GraphicalModel:
    """The graphical model of a program: a `pgm.Model` or any Pyro program with its arguments.

    `level="site"` gives one node per sample site; `level="unit"` one node per unit (an RBM's
    4 visible and 3 hidden units become `v[0]..v[3]`, `h[0]..h[2]`), for sites of at most
    `unit_limit` units. `show_params=True` adds `pyro.param`/`pyro.module` parameters as nodes.

    `data_size` labels the data plate (`pyro.plate("data", ...)`): an int is the data's size
    (a training set's length), a str a symbol. By default a `pgm.Model` traced on its own
    example inputs gets the symbol "N" (the example batch's size means nothing), and a program
    given its data keeps the size it was traced with. Subsampled plates keep their full size
    (`plates[p]["size"]`) and record the subsample's (`plates[p]["subsample_size"]`).

    Extraction leaves the RNG states, Pyro's param store, torch's grad mode and every module's
    buffers (BatchNorm statistics) unchanged. It warns (`GraphExtractionWarning`) when the
    program turns a site's value into a Python number, which hides what it computes from it.

    >>> import pyro, pyro.distributions as dist
    >>> def chain():
    ...     a = pyro.sample("a", dist.Normal(0., 1.))
    ...     b = pyro.sample("b", dist.Normal(a, 1.))
    ...     pyro.sample("c", dist.Normal(b, 1.), obs=torch.tensor(0.))
    >>> g = graph_of(chain)
    >>> g.directed_edges, g.nodes["c"]["kind"]
    ([('a', 'b'), ('b', 'c')], 'observed')
    """
    if level not in ("site", "unit"):
        raise ValueError(f"level: expected 'site' or 'unit', got {level!r}")
    if not isinstance(unit_limit, int) or unit_limit < 1:
        raise ValueError(f"unit_limit: expected a positive int, got {unit_limit!r}")
    if data_size is not None and not (
        (isinstance(data_size, int) and not isinstance(data_size, bool) and data_size > 0)
        or (isinstance(data_size, str) and data_size.strip())
    ):
        raise ValueError(f"data_size: expected a positive int (the data's size) or a symbol such as 'N', got {data_size!r}")
    if data_size is None and isinstance(model, Model) and not args and not kwargs:
        data_size = DATA_SYMBOL
    program, args, name = _resolve(model, args, kwargs, name)
    params = _network_parameters(model, args, kwargs) if show_params else None
    with isolated(), buffers_kept(), pyro.validation_enabled(False), _gc_paused():
        sites, plates, trace = _site_relations(program, args, kwargs, params)
        _label_data_plate(plates, data_size)
        if level == "site":
            return _site_graph(sites, plates, show_params, name)
        return _unit_graph(program, args, kwargs, sites, plates, trace, unit_limit, name)


@contextlib.contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused while a program is traced: a long program
    keeps many tensors alive, and the collector's full passes over them cost a third of the
    extraction time of a 4,000-site chain. Reference counting still frees what is released."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _label_data_plate(plates: dict, data_size) -> None:
    info = plates.get(DATA_PLATE)
    if info is None or data_size is None:
        return
    if isinstance(data_size, str):
        info["traced_size"] = info.pop("size")
        info["size"] = None
        info["symbol"] = data_size.strip()
    else:
        info["size"] = data_size


# ---------------------------------------------------------------------- resolving the input
def _resolve(model, args, kwargs, name):
    if isinstance(model, Model):
        if not args and not kwargs:
            args = tuple(model.example_inputs())
        return model.model, args, name or type(model).__name__
    if isinstance(model, nn.Module) and not callable(getattr(model, "model", None)):
        check_program(model, "model")
    elif isinstance(model, nn.Module):
        return model.model, args, name or type(model).__name__
    check_program(model, "model")
    return model, args, name or getattr(model, "__name__", None)


# ---------------------------------------------------------------------- site level
def _network_parameters(model, args, kwargs) -> dict[int, str]:
    """Parameter node names for the `nn.Parameter`s a program may use: a model's networks by
    their attribute name ("decoder"), its own parameters by theirs ("W"), networks passed as
    arguments by their argument position or keyword."""
    names: dict[int, str] = {}
    owners = []
    if isinstance(model, nn.Module):
        owners.append(("", model))
    owners += [(f"arg{i}", a) for i, a in enumerate(args) if isinstance(a, nn.Module)]
    owners += [(k, v) for k, v in kwargs.items() if isinstance(v, nn.Module)]
    for prefix, module in owners:
        for pname, p in module.named_parameters():
            head = pname.split(".")[0] if not prefix else prefix
            container = getattr(module, head, None) if not prefix else None
            if isinstance(container, (nn.ModuleList, nn.ParameterList, nn.ModuleDict, nn.ParameterDict)):
                head = f"{head}[{pname.split('.')[1]}]"  # one node per layer of a stack
            names.setdefault(id(p), f"{_PARAM_PREFIX}{head}")
    return names


_PARAM_PREFIX = "\x00param:"


def _site_relations(program: Callable, args: tuple, kwargs: dict, params: dict | None = None):
    """One provenance-tracked trace: per site its kind, distribution, shapes, plates and the
    sites and parameters its density depends on (networks' parameters too, given `params`)."""
    tracked_args, tracked_kwargs, arguments = track_arguments(args, kwargs)
    mode = TrackParameters(params) if params else contextlib.nullcontext()
    with torch.no_grad(), TrackSites(arguments) as tracker, mode:
        trace = trace_program(program, tracked_args, tracked_kwargs)
    claimed = tracker.claimed
    _warn_leaks(tracker.leaks, claimed)
    sites: dict[str, dict] = {}
    plates: dict[str, dict] = {}
    kinds = {name: site["type"] for name, site in trace.nodes.items()}
    position = {name: i for i, name in enumerate(trace.nodes)}
    for name, site in sample_sites(trace):
        kind = site_kind(site)
        fn = site["fn"]
        if kind == "deterministic":
            inner = fn.base_dist if isinstance(fn, dist.MaskedDistribution) else fn
            density = density_provenance(inner, site["value"])
            dist_name = "Deterministic"
        else:
            density = density_provenance(fn, site["value"])
            dist_name = "Factor" if kind == "factor" else type(unwrap(fn)).__name__
        upstream = [claimed.get(u, u) for u in density]
        upstream = [u for u in upstream if u != name and not is_arg_token(u)]
        networks = sorted(u[len(_PARAM_PREFIX):] for u in upstream if u.startswith(_PARAM_PREFIX))
        frames = [f for f in site["cond_indep_stack"]]
        for f in frames:
            if f.name not in plates:
                full = f.full_size if getattr(f, "full_size", None) is not None else f.size
                plates[f.name] = {"size": full, "dim": f.dim if f.vectorized else None}
                if full != f.size:
                    plates[f.name]["subsample_size"] = f.size
        sites[name] = {
            "kind": kind,
            "dist": dist_name,
            "event_shape": tuple(fn.event_shape),
            "shape": tuple(plain(site["value"]).shape) if kind != "factor" else (),
            "plates": tuple(f.name for f in frames),
            "parents": _in_order(position, [u for u in upstream if kinds.get(u) == "sample"]),
            "params": _in_order(position, [u for u in upstream if kinds.get(u) == "param"]) + networks,
        }
    return sites, plates, trace


def _warn_leaks(leaks, claimed) -> None:
    """One warning per site whose value the program turned into Python numbers."""
    seen = {}
    for prov, how, where in leaks:
        for p in prov:
            site = claimed.get(p, p)
            if not is_arg_token(site):
                seen.setdefault(site, (how, where))
    for site, (how, where) in seen.items():
        warnings.warn(
            f"graph_of: the value of site {site!r} was turned into a Python number ({how}, at {where}); "
            f"whatever the program computed from that number is invisible to extraction, so edges from "
            f"{site!r} may be missing. Keep site values as tensors to get every edge.",
            GraphExtractionWarning,
            stacklevel=4,
        )


def _in_order(position: dict[str, int], names) -> list[str]:
    """`names` in program order (a sort by trace position: linear in the site count overall)."""
    return sorted(set(names), key=position.__getitem__)


def _param_node(name: str) -> str:
    # pyro.module registers "module$$$sub.weight": one node per module.
    return name.split("$$$")[0]


def _site_graph(sites, plates, show_params, name) -> GraphicalModel:
    nodes, directed, undirected, factors = {}, [], [], {}
    for s, info in sites.items():
        if info["kind"] == "factor":
            scope = tuple(info["parents"])
            factors[s] = {"scope": scope, "plates": info["plates"]}
            undirected += list(itertools.combinations(scope, 2))
            continue
        nodes[s] = {k: info[k] for k in ("kind", "dist", "event_shape", "shape", "plates")}
        directed += [(p, s) for p in info["parents"] if sites[p]["kind"] != "factor"]
    if show_params:
        for s, info in sites.items():
            for p in info["params"]:
                node = _param_node(p)
                if node in sites:  # a parameter named like a site ("v" the site, "v" a weight)
                    node = f"{node}_param"
                nodes.setdefault(node, {"kind": "parameter", "dist": None, "plates": ()})
                if info["kind"] == "factor":
                    targets = list(info["parents"])
                else:
                    targets = [s]
                directed += [(node, t) for t in targets if (node, t) not in directed]
    used = {p for n in nodes.values() for p in n["plates"]} | {p for f in factors.values() for p in f["plates"]}
    plates = {k: v for k, v in plates.items() if k in used}
    return GraphicalModel(nodes, directed, undirected, plates, factors, name=name, level="site")


# ---------------------------------------------------------------------- unit level
class _Probe(Messenger):
    """Replaces every sample site's value by a leaf tensor that requires grad, at a random
    point of its support (floats strictly inside (0, 1) for binary units), so that autograd
    can tell which units each density depends on. Deterministic sites become leaves too, so
    that dependencies stop at them as they do at site level."""

    def __init__(self, bound: set[str], spread: float, keep=frozenset()):
        super().__init__()
        self.spread = spread
        self.keep = keep  # sites left at their own (discrete) draws: not differentiable
        self.bound = bound  # observed sites whose value is a probe argument: left as they are
        self.leaves: dict[str, torch.Tensor] = {}
        self.computed: dict[str, torch.Tensor] = {}

    def _pyro_post_sample(self, msg):
        if site_is_subsample(msg):
            return
        kind = site_kind(msg)
        if kind == "factor" or msg["name"] in self.leaves:
            return
        value = msg["value"]
        if kind == "deterministic":
            self.computed[msg["name"]] = value
            leaf = value.detach().clone().requires_grad_(value.is_floating_point())
        elif msg["name"] in self.bound or msg["name"] in self.keep:
            leaf = value
        else:
            leaf = _probe_value(msg["fn"], value, self.spread)
        msg["value"] = leaf
        self.leaves[msg["name"]] = leaf


def _probe_value(fn, like: torch.Tensor, spread: float = 0.0) -> torch.Tensor:
    """A random probe point for a site, as a leaf: a draw from `fn`, or for binary units a float
    in (0.1, 0.9) (`spread=0`) or around 1/2 with standard deviation `spread`."""
    base = unwrap(fn)
    with torch.no_grad():
        if _is_binary(base):
            dtype = _float_dtype(like)
            if spread:
                value = 0.5 + spread * torch.randn(like.shape, dtype=dtype, device=like.device)
            else:
                value = torch.rand(like.shape, dtype=dtype, device=like.device) * 0.8 + 0.1
        else:
            try:
                value = fn.sample().detach()
            except NotImplementedError:  # an improper base measure: any point of its support
                dtype = _float_dtype(like)
                noise = torch.randn(like.shape, dtype=dtype, device=like.device)
                value = torch.distributions.transform_to(fn.support)(noise)
            if value.shape != like.shape:
                value = value.expand(like.shape).clone()
    if value.is_floating_point():
        value.requires_grad_(True)
    return value


def _is_binary(base) -> bool:
    support = base.support
    while hasattr(support, "base_constraint"):  # independent(boolean, k): binary units in a joint event
        support = support.base_constraint
    return isinstance(base, (dist.Bernoulli, torch.distributions.Bernoulli)) or getattr(
        support, "lower_bound", None
    ) == 0 and getattr(support, "upper_bound", None) == 1 and getattr(support, "is_discrete", False)


def _is_discrete(base) -> bool:
    return _is_binary(base) or bool(getattr(base.support, "is_discrete", False))


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def _unit_layout(info: dict, plates: dict) -> tuple[dict[str, int], tuple[int, ...]]:
    """Which dim of a site's value each of its plates uses, and the shape of its units."""
    shape = info["shape"]
    batch = len(shape) - len(info["event_shape"])
    plate_dims = {}
    for p in info["plates"]:
        d = plates[p]["dim"]
        if d is not None and -d <= batch:
            plate_dims[p] = batch + d
    # Size-1 batch dims outside the site's plates only broadcast against other plates.
    unit_shape = tuple(
        n for i, n in enumerate(shape) if i not in plate_dims.values() and not (i < batch and n == 1)
    )
    return plate_dims, unit_shape


def _unit_names(name: str, unit_shape: tuple[int, ...]) -> list[str]:
    if math.prod(unit_shape) == 1:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in itertools.product(*map(range, unit_shape))]


def _first_element(t: torch.Tensor, plate_dims) -> torch.Tensor:
    """`t` at index 0 of each plate dim, flattened to one entry per unit."""
    dims = set(plate_dims)
    index = tuple(0 if i in dims else slice(None) for i in range(t.dim()))
    return t[index].reshape(-1)


def _per_unit_density(fn, value: torch.Tensor) -> torch.Tensor | None:
    """Elementwise log density over the site's full value shape (a joint event's per-unit
    conditionals where its distribution has `unit_log_prob`), or None if the event does not
    factorise into units (e.g. a MultivariateNormal, which then stays one node)."""
    base = unwrap(fn)
    unit_log_prob = getattr(base, "unit_log_prob", None)
    if callable(unit_log_prob):  # a joint event that states its per-unit conditionals (autoregressive)
        lp = unit_log_prob(value)
        return lp.expand(value.shape) if lp.shape != value.shape else lp
    if tuple(base.event_shape):
        return None
    lp = base.log_prob(value)
    return lp.expand(value.shape) if lp.shape != value.shape else lp


def _base_side(fn, value: torch.Tensor) -> torch.Tensor | None:
    """For a transformed distribution over a joint event (a normalizing flow): its base-side
    value u = T^{-1}(value), unit for unit, or None. Unit u_i depends on data unit x_j exactly
    where the flow's Jacobian du/dx has a nonzero entry, so autograd through u draws x_j -> x_i:
    triangular for autoregressive layers, two blocks for one coupling layer."""
    base = unwrap(fn)
    if not isinstance(base, torch.distributions.TransformedDistribution) or not tuple(base.event_shape):
        return None
    u = value
    for t in reversed(base.transforms):
        u = t.inv(u)
    return u if u.shape == value.shape else None


class _Units:
    """The unit-level bookkeeping shared by every probe: names, plate dims, found edges."""

    def __init__(self, sites: dict, plates: dict, unit_limit: int):
        self.sites = sites
        self.variables = [s for s, i in sites.items() if i["kind"] != "factor"]
        self.layout: dict[str, dict[str, int]] = {}
        self.names: dict[str, list[str]] = {}
        for s in self.variables:
            plate_dims, unit_shape = _unit_layout(sites[s], plates)
            n = math.prod(unit_shape)
            if n > unit_limit:
                raise ValueError(
                    f"site {s!r} has {n} units (shape {unit_shape}), more than unit_limit={unit_limit}; "
                    "pass a larger unit_limit= or use level='site'"
                )
            self.layout[s] = plate_dims
            self.names[s] = _unit_names(s, unit_shape)
        self.directed: set[tuple[str, str]] = set()
        self.undirected: set[tuple[str, str]] = set()
        self.scopes: dict[str, set[str]] = {f: set() for f, i in sites.items() if i["kind"] == "factor"}
        self.interactions: dict[str, set[tuple[str, str]]] = {f: set() for f in self.scopes}
        self.higher: set[str] = set()  # potentials with a term in three or more units

    def size(self) -> tuple[int, int, int]:
        """How much has been found so far (to tell when probing stops finding anything)."""
        return len(self.directed), len(self.undirected), sum(map(len, self.scopes.values()))

    def units_hit(self, grads: dict[str, torch.Tensor], target_plates: set) -> list[str]:
        """Units whose gradient entry is nonzero, for the plate element the target lives in:
        index 0 of plates shared with the target, any element of the others."""
        hit = []
        for w, g in grads.items():
            g = g.detach() != 0
            dims = self.layout[w]
            other = [d for p, d in dims.items() if p not in target_plates]
            if other:
                g = g.any(dim=other, keepdim=True)
            mask = _first_element(g, dims.values())
            hit += [self.names[w][j] for j in torch.nonzero(mask).flatten().tolist()]
        return hit

    def graph(self, nodes_info: dict, plates: dict, name) -> GraphicalModel:
        nodes = {}
        for s in self.variables:
            for i, u in enumerate(self.names[s]):
                nodes[u] = {k: self.sites[s][k] for k in ("kind", "dist", "plates")}
                nodes[u].update(event_shape=(), site=s, index=i)
        order = {u: i for i, u in enumerate(nodes)}
        factors = {
            f: {
                "scope": tuple(sorted(self.scopes[f], key=order.__getitem__)),
                "plates": self.sites[f]["plates"],
                "terms": _terms(self.scopes[f], self.interactions[f], order, f not in self.higher),
            }
            for f in self.scopes
        }
        directed, undirected = _mutual_within_sites(self.directed, nodes, set(self.undirected))
        directed = sorted(directed, key=lambda e: (order[e[1]], order[e[0]]))
        return GraphicalModel(nodes, directed, sorted(undirected), plates, factors, name=name, level="unit")


def _mutual_within_sites(directed: set, nodes: dict, undirected: set) -> tuple[set, set]:
    """Units of one joint site that depend on each other both ways (a flow whose Jacobian is
    dense, as after two coupling layers) are joined by an undirected edge: a directed edge stays
    where the dependence goes one way only, so the graph keeps the Jacobian's exact pattern.
    Should one-way edges within a site still close a cycle, the edges of that cycle's strongly
    connected units become undirected too."""
    same = lambda a, b: nodes[a]["site"] == nodes[b]["site"]  # noqa: E731
    mutual = {e for e in directed if (e[1], e[0]) in directed and same(*e)}
    if not mutual:
        return directed, undirected
    directed = directed - mutual
    undirected = undirected | {tuple(sorted(e)) for e in mutual}
    import networkx as nx

    g = nx.DiGraph(list(directed))
    for component in nx.strongly_connected_components(g):
        if len(component) > 1:
            inside = {e for e in directed if e[0] in component and e[1] in component and same(*e)}
            directed = directed - inside
            undirected = undirected | {tuple(sorted(e)) for e in inside}
    return directed, undirected


def _terms(scope: set[str], interactions: set[tuple[str, str]], order: dict[str, int], pairwise: bool) -> list[tuple[str, ...]]:
    """The terms a potential splits into at unit level: the maximal cliques of its interaction
    graph (units with a nonzero mixed second derivative), a unit that interacts with none a
    term of its own. A function whose mixed derivative in u and w vanishes everywhere is a sum
    of terms free of u or of w, so it is a sum over these cliques (an RBM's v'Wh: one term per
    nonzero weight; its biases: one per unit). With no third mixed derivative (`pairwise`) the
    cliques split further into their edges (a Boltzmann machine's lateral weights)."""
    import networkx as nx

    ig = nx.Graph()
    ig.add_nodes_from(scope)
    ig.add_edges_from(interactions)
    if pairwise:
        cliques = [e for e in ig.edges] + [(u,) for u in ig.nodes if ig.degree(u) == 0]
    else:
        cliques = list(nx.find_cliques(ig))
    terms = [tuple(sorted(c, key=order.__getitem__)) for c in cliques]
    return sorted(terms, key=lambda t: [order[u] for u in t])


def _unit_graph(program, args, kwargs, sites, plates, trace, unit_limit, name) -> GraphicalModel:
    units = _Units(sites, plates, unit_limit)
    probes, quiet, discrete = 0, 0, None
    while probes < MAX_PROBES and (probes < MIN_PROBES or quiet < 2):
        before = units.size()
        try:
            _probe_once(program, args, kwargs, units, spread=0.0 if probes == 0 else SPREAD, discrete=discrete)
        except ProgramError:
            if discrete is not None:
                raise
            # The program computes with a discrete value (an index into a table): probe its
            # discrete sites at their own draws; their units join every unit they influence.
            discrete = {s for s in units.variables if _is_discrete(unwrap(trace.nodes[s]["fn"]))}
            if not discrete:
                raise
            continue
        quiet = quiet + 1 if units.size() == before else 0
        probes += 1
    # Parents that autograd cannot see (integer-valued sites): every unit to every unit.
    for s in units.variables:
        for p in sites[s]["parents"]:
            if p in units.nondifferentiable:
                units.directed.update((a, b) for a in units.names[p] for b in units.names[s] if a != b)
    # A density flat in a parent at every probe point (a regression on all-zero example
    # covariates, a weight initialised at zero) still depends on it: every unit to every unit.
    for s in units.variables:
        for p in sites[s]["parents"]:
            if p not in units.names or p in units.nondifferentiable:
                continue
            sources, targets = set(units.names[p]), set(units.names[s])
            if not any(a in sources and b in targets for a, b in units.directed):
                units.directed.update((a, b) for a in units.names[p] for b in units.names[s] if a != b)
    # A potential that is flat in a site at every probe point (a bias initialised at zero)
    # still depends on it: its units join the scope, each a term of its own.
    for f, scope in units.scopes.items():
        for p in sites[f]["parents"]:
            if p in units.names and p not in units.nondifferentiable and not scope & set(units.names[p]):
                scope.update(units.names[p])
    # Likewise potentials over such sites: their units join the scope and interact with it.
    for f, scope in units.scopes.items():
        hidden = [p for p in sites[f]["parents"] if p in units.nondifferentiable and p in units.names]
        for p in hidden:
            for a in units.names[p]:
                pairs = {tuple(sorted((a, b))) for b in scope if b != a}
                units.undirected.update(pairs)
                units.interactions[f].update(pairs)
            scope.update(units.names[p])
    used = {p for i in sites.values() for p in i["plates"]}
    return units.graph(sites, {k: v for k, v in plates.items() if k in used}, name)


@torch.enable_grad()
def _probe_once(program, args, kwargs, units: _Units, spread: float, discrete=None) -> None:
    with torch.no_grad():
        first = trace_program(program, args, kwargs)
    # Observed sites whose value is (a reshape of) a tensor argument: the program may compute
    # other densities from that argument (autoregressive models), so the argument becomes the
    # leaf, at a random point of the site's support.
    arg_leaves, bound = {}, {}
    for s, site in sample_sites(first):
        if site_kind(site) != "observed":
            continue
        for i, a in enumerate(args):
            if torch.is_tensor(a) and a.numel() == site["value"].numel() and a.numel() and a.data_ptr() == site["value"].data_ptr():
                if i not in arg_leaves:
                    arg_leaves[i] = _probe_value(site["fn"], site["value"], spread).reshape(a.shape).detach().requires_grad_(
                        site["value"].is_floating_point() or _is_binary(unwrap(site["fn"]))
                    )
                bound[s] = arg_leaves[i]
    probe_args = tuple(arg_leaves.get(i, a) for i, a in enumerate(args))
    probe = _Probe(set(bound), spread, keep=discrete or set())
    with probe:
        trace = trace_program(program, probe_args, kwargs)
    inputs, owners = [], []
    units.nondifferentiable = set()
    for s in units.variables:
        leaf = bound.get(s, probe.leaves.get(s))
        if leaf is None or not leaf.requires_grad:
            units.nondifferentiable.add(s)
            continue
        inputs.append(leaf)
        owners.append(s)

    def by_site(grads) -> dict[str, torch.Tensor]:
        return {
            w: g.reshape(units.sites[w]["shape"]) for w, g in zip(owners, grads) if g is not None
        }

    for s, site in sample_sites(trace):
        kind = site_kind(site)
        if kind == "factor":
            _factor_units(site, s, units, inputs, owners, by_site)
            continue
        dims = units.layout[s].values()
        if kind == "deterministic":
            out = probe.computed.get(s)
            if out is None:
                continue
            rows = _first_element(out, dims)
        else:
            lp = _per_unit_density(site["fn"], site["value"])
            base_side = _base_side(site["fn"], site["value"]) if lp is None else None
            if base_side is not None:  # a flow: its units depend as its Jacobian's pattern says
                rows = _first_element(base_side, dims)
            elif lp is None:  # a joint event stays one node: use its total density
                lp = site["fn"].log_prob(site["value"])
                rows = _first_element(lp, dims).sum().reshape(1)
            else:
                rows = _first_element(lp, dims)
        if not rows.requires_grad:
            continue
        plates_of_s = set(units.sites[s]["plates"])
        for i, grads in enumerate(_jacobian_rows(rows, inputs)):
            target = units.names[s][i] if len(units.names[s]) == rows.shape[0] else units.names[s][0]
            for source in units.units_hit(by_site(grads), plates_of_s):
                if source != target:
                    units.directed.add((source, target))


def _jacobian_rows(rows: torch.Tensor, inputs: list[torch.Tensor]) -> list[tuple]:
    """Gradients of each entry of `rows` w.r.t. `inputs`: one tuple per entry."""
    n = rows.shape[0]
    if not inputs:
        return [() for _ in range(n)]
    try:
        eye = torch.eye(n, dtype=rows.dtype, device=rows.device)
        grads = torch.autograd.grad(rows, inputs, eye, retain_graph=True, allow_unused=True, is_grads_batched=True)
        return [tuple(None if g is None else g[i] for g in grads) for i in range(n)]
    except RuntimeError:
        return [torch.autograd.grad(rows[i], inputs, retain_graph=True, allow_unused=True) for i in range(n)]


def _factor_units(site, s, units: _Units, inputs, owners, by_site) -> None:
    """A potential's unit scope (nonzero gradient) and its interactions (nonzero Hessian)."""
    log_factor = site["fn"].log_prob(site["value"])
    if not log_factor.requires_grad or not inputs:
        return
    plate_set = set(units.sites[s]["plates"])
    total = _first_element(log_factor, range(log_factor.dim())).sum()
    grads = torch.autograd.grad(total, inputs, create_graph=True, allow_unused=True)
    units.scopes[s].update(units.units_hit(by_site(grads), plate_set))
    # Second derivatives, one row per unit of the scope (plate element 0).
    flat = []
    for w, g in by_site(grads).items():
        if not g.requires_grad:
            continue
        entries = _first_element(g, units.layout[w].values())
        flat += [(units.names[w][j], entries[j]) for j in range(entries.shape[0])]
    if not flat:
        return
    rows = torch.stack([v for _, v in flat])
    found = set()
    for (u, _), grads in zip(flat, _jacobian_rows(rows, inputs)):
        for v in units.units_hit(by_site(grads), plate_set):
            if v != u:
                found.add(tuple(sorted((u, v))))
    units.undirected.update(found)
    units.interactions[s].update(found)
    if s not in units.higher and _has_triangle(found) and len(flat) <= THIRD_ORDER_LIMIT:
        if _third_order(flat, found, units, inputs, by_site, plate_set):
            units.higher.add(s)


def _has_triangle(pairs) -> bool:
    import networkx as nx

    return any(n for n in nx.triangles(nx.Graph(list(pairs))).values())


def _third_order(flat, pairs, units: _Units, inputs, by_site, plate_set) -> bool:
    """Whether a potential has a term in three or more units (a nonzero third mixed
    derivative); if not, it is a sum of pairwise and unary terms, whatever its interaction
    graph's cliques (a Boltzmann machine's x'Lx)."""
    where = {u: (s, j) for s in units.variables for j, u in enumerate(units.names[s])}
    entry = {u: v for u, v in flat}
    partners: dict[str, list[str]] = {}
    for u, w in pairs:
        partners.setdefault(u, []).append(w)
    for u, ws in partners.items():
        second = torch.autograd.grad(entry[u], inputs, create_graph=True, retain_graph=True, allow_unused=True)
        hess = by_site(second)
        for w in ws:
            site, j = where[w]
            h = hess.get(site)
            if h is None or not h.requires_grad:
                continue
            h_uw = _first_element(h, units.layout[site].values())[j]
            third = torch.autograd.grad(h_uw, inputs, retain_graph=True, allow_unused=True)
            if set(units.units_hit(by_site(third), plate_set)) - {u, w}:
                return True
    return False
