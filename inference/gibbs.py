"""Block Gibbs sampling of Boltzmann machines, with the schedule derived from the Markov network.

The blocks: a greedy colouring (`networkx.greedy_color`) of the model's Markov network gives
sets of units no two of which share a potential, so each set is conditionally independent given
the rest and can be drawn at once. An RBM gets two blocks (all hidden units, then all visible
ones); a Boltzmann machine with lateral connections gets more. The schedule is `Gibbs.blocks`,
a list of lists of unit names as ``pgm.graph_of(model, level="unit")`` names them (``"v[0]"``).
Blocks holding hidden units come first.

Where the schedule comes from, by size (``unit_limit``, total units of all sites):

- at most `unit_limit` units: the unit-level graph, ``pgm.graph_of(model, level="unit")``;
- more (a 784-500 RBM), or a model with closed-form conditionals for every site: the
  site-level graph, coloured site by site, which is exact when no
  two units of one site interact. That is checked on a probe: a Hessian-vector product of the
  log joint with a random direction inside each site must vanish (the energy has no
  within-site second derivative). A site whose units interact is refused, naming
  `unit_limit` as the way to get the unit-level schedule.

The conditionals: for binary units whose energy is linear in each unit (every Boltzmann
machine: no self-interaction), log p(u_i = 1 | rest) - log p(u_i = 0 | rest) is the derivative
of the log joint with respect to u_i, and within a block these derivatives do not depend on each
other. So one autograd gradient of the program's log joint (factors and base measures) gives the
logits of a whole block. That gradient is traced once per block into a graph of tensor operations
(`inference.compiled.CompiledGradient`: the forward products it does not need are dropped, the
base measures folded into constants: an RBM's become c + v W and b + h W^T, as written by hand);
``compile=False``, or a program that cannot be traced, uses eager autograd. A model that offers
closed-form conditionals (``model.gibbs_conditionals()``: site name -> (chains -> distribution
of the site given the rest), e.g. `models.rbm.RBM`) has them used instead for whole-site blocks (set
``closed_form=False`` to use the derived ones); a Gaussian RBM's real visible units are drawn
that way too. A model whose hidden sites are all drawn first, given the visible units alone,
and that offers ``model.free_energy_and_hidden(v)`` (the free energy and the hidden sites'
conditional distributions, computed together) has `from_data` use it for the first draw and
hand the energy back: contrastive divergence's positive phase then costs no extra product.
Any other real-valued site is refused with an error naming the engines (and the Langevin
sampler) that serve continuous models.

>>> from models.rbm import RBM
>>> gibbs = Gibbs(RBM(v_dim=3, h_dim=2))
>>> gibbs.blocks
[['h[0]', 'h[1]'], ['v[0]', 'v[1]', 'v[2]']]
>>> gibbs.visible(gibbs.run(gibbs.init_random(4), 5)).shape
torch.Size([4, 3])
"""

from __future__ import annotations

import math
from typing import Any

import networkx as nx
import pyro
import pyro.poutine as poutine
import torch

import pgm
from inference.compiled import CompiledGradient
from inference.engine import EngineError, _refusal
from inference.sampler import Chains, Sampler, bernoulli, draw
from pgm.enumerate import _log_joint
from pgm.extract import _is_binary, _unit_names
from pgm.program import isolated, sample_sites, trace_program, unwrap

__all__ = ["Gibbs", "UNIT_LIMIT"]

#: Models with more units than this get their blocks from the site-level graph.
UNIT_LIMIT = 512


class Gibbs(Sampler):
    """Block Gibbs sampler for a model with binary units (see the module docstring).

    - `closed_form`: use ``model.gibbs_conditionals()`` where the model has it (default True);
    - `unit_limit`: the largest total number of units whose schedule comes from the unit-level
      graph (larger models use the site-level graph);
    - `num_steps`: the default number of sweeps of `sample`;
    - `compile`: trace the derived conditionals' gradients into graphs (`inference.compiled`).

    Chains are ``{site: tensor (n, *unit_shape)}`` for the observed site and every latent site.
    """

    requires = frozenset()

    def __init__(self, model: Any, *, closed_form: bool = True, unit_limit: int = UNIT_LIMIT, num_steps: int = 1000,
                 compile: bool = True) -> None:
        if not isinstance(model, pgm.Model):
            if callable(model):
                raise TypeError(
                    f"model: expected a pgm.Model, got {type(model).__name__}; wrap a plain program with "
                    "pgm.Model.from_program(program, example_args=(data,))"
                )
            raise TypeError(f"model: expected a pgm.Model, got {type(model).__name__}")
        super().__init__(model)
        if not isinstance(unit_limit, int) or isinstance(unit_limit, bool) or unit_limit < 1:
            raise ValueError(f"unit_limit: expected a positive int, got {unit_limit!r}")
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
            raise ValueError(f"num_steps: expected a non-negative int, got {num_steps!r}")
        self.num_steps = num_steps
        self.compile = bool(compile)
        self._compiled: dict[tuple[str, ...], CompiledGradient] = {}
        structure = model.structure()
        if len(structure.observed) != 1:
            raise ValueError(
                f"model: Gibbs needs exactly one observed site (the data), {type(model).__name__} has {list(structure.observed)}"
            )
        self.site = structure.observed[0]
        self.latent_sites = tuple(structure.latent)
        self.sites = (self.site, *self.latent_sites)
        with isolated(), torch.no_grad():
            trace = model.trace()
        self.unit_shapes = {}
        binary = {}
        for name, node in sample_sites(trace):
            if name in self.sites:
                self.unit_shapes[name] = tuple(node["value"].shape[1:])
                binary[name] = _is_binary(unwrap(node["fn"]))
        self.closed = {}
        if closed_form and callable(getattr(model, "gibbs_conditionals", None)):
            self.closed = {k: v for k, v in model.gibbs_conditionals().items() if k in self.sites}
        nonbinary = [s for s in self.sites if not binary[s] and s not in self.closed]
        if nonbinary:
            reason = (
                f"its site(s) {nonbinary} are not binary units and it gives no closed-form conditional for them "
                "(Gibbs draws binary units from conditionals derived from the energy; for real-valued data use "
                "the sampler inference.Langevin (ULA, MALA))"
            )
            raise EngineError(_refusal(Gibbs, model, reason))
        self.binary = binary
        self.unit_limit = unit_limit
        total = sum(math.prod(s) for s in self.unit_shapes.values())
        whole_sites = all(s in self.closed for s in self.sites)  # closed forms draw whole sites anyway
        self.level = "unit" if total <= unit_limit and not whole_sites else "site"
        self.blocks, self._plan = self._schedule()
        self._lead = self._hidden_lead() if self.closed and callable(getattr(model, "free_energy_and_hidden", None)) else 0

    def _hidden_lead(self) -> int:
        """The number of leading blocks that together draw every hidden site whole, given the
        visible site alone (0 when the schedule does not start that way)."""
        drawn: set[str] = set()
        for i, block in enumerate(self._plan):
            if any(s == self.site for s, _ in block):
                return i if drawn == set(self.latent_sites) else 0
            if any(idx is not None for _, idx in block):
                return 0
            drawn.update(s for s, _ in block)
        return 0

    # ------------------------------------------------------------------ the schedule
    def _names(self, site: str) -> list[str]:
        return _unit_names(site, self.unit_shapes[site])

    def _schedule(self) -> tuple[list[list[str]], list[list[tuple[str, torch.Tensor | None]]]]:
        if self.level == "unit":
            graph = pgm.graph_of(self.model, level="unit", unit_limit=max(self.unit_limit, 1))
            self._check_undirected(graph)
            keep = [n for n, a in graph.nodes.items() if a["kind"] in ("latent", "observed")]
            network = graph.to_networkx().subgraph(keep)
            colour = nx.greedy_color(network, strategy="largest_first")
            where = {n: (graph.nodes[n]["site"], graph.nodes[n]["index"]) for n in keep}
        else:
            graph = pgm.graph_of(self.model)
            self._check_undirected(graph)
            interacting = self._within_site_interactions()
            if interacting:
                raise ValueError(
                    f"unit_limit: the units of site(s) {interacting} interact with each other, so whole sites cannot be "
                    f"Gibbs blocks, and the model's {self._total()} units exceed unit_limit={self.unit_limit}; pass a "
                    "larger unit_limit= to derive the blocks from the unit-level graph"
                )
            keep = [n for n in graph.nodes if n in self.sites]
            site_colour = nx.greedy_color(graph.to_networkx().subgraph(keep), strategy="largest_first")
            colour, where = {}, {}
            for s in keep:
                for i, u in enumerate(self._names(s)):
                    colour[u], where[u] = site_colour[s], (s, i)
        order = {u: i for i, u in enumerate(u for s in self.sites for u in self._names(s))}
        groups: dict[int, list[str]] = {}
        for u in sorted(colour, key=order.__getitem__):
            groups.setdefault(colour[u], []).append(u)
        blocks = sorted(groups.values(), key=lambda b: (not any(where[u][0] in self.latent_sites for u in b), order[b[0]]))
        plan = []
        for block in blocks:
            by_site: dict[str, list[int]] = {}
            for u in block:
                s, i = where[u]
                by_site.setdefault(s, []).append(i)
            plan.append([
                (s, None if len(idx) == math.prod(self.unit_shapes[s]) else torch.tensor(idx, dtype=torch.long))
                for s, idx in by_site.items()
            ])
        return blocks, plan

    def _total(self) -> int:
        return sum(math.prod(s) for s in self.unit_shapes.values())

    def _check_undirected(self, graph) -> None:
        if graph.kind != "undirected":
            raise EngineError(_refusal(
                Gibbs, self.model,
                f"its graph is {graph.kind}, not a Markov network: Gibbs derives conditionals for undirected "
                "programs of binary units (Boltzmann machines)",
            ))

    @torch.enable_grad()
    def _within_site_interactions(self) -> list[str]:
        """Sites whose units interact (a nonzero within-site Hessian-vector product at a probe)."""
        values = {}
        for s in self.sites:
            shape = (2, *self.unit_shapes[s])
            if self.binary[s]:
                v = 0.1 + 0.8 * torch.rand(shape, dtype=self.model.dtype, device=self.model.device)
            else:
                v = torch.randn(shape, dtype=self.model.dtype, device=self.model.device)
            values[s] = v.requires_grad_(True)
        with pyro.validation_enabled(False):
            total = self._log_joint(values)
        grads = torch.autograd.grad(total, [values[s] for s in self.sites], create_graph=True, allow_unused=True)
        found = []
        for s, g in zip(self.sites, grads):
            if g is None or not g.requires_grad or not self.binary[s]:
                continue  # closed-form real sites interact with themselves (a quadratic) by design
            (hv,) = torch.autograd.grad((g * torch.randn_like(g)).sum(), values[s], retain_graph=True, allow_unused=True)
            if hv is not None and bool((hv.abs() > 1e-10 * (1 + g.abs().max())).any()):
                found.append(s)
        return found

    # ------------------------------------------------------------------ conditionals
    def _log_joint(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over chains of the program's log joint at `values` (every site given)."""
        latent = {s: values[s] for s in self.latent_sites}
        args = self._args(values[self.site])
        trace = trace_program(poutine.condition(self.model.model, data=latent), args, {})
        return _log_joint(trace).sum()

    def _args(self, x: torch.Tensor) -> tuple:
        example = self.model.example_inputs(x.shape[0])
        return (x, *example[1:])

    def _quiet_log_joint(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        with pyro.validation_enabled(False):
            return self._log_joint(values)

    def logits(self, chains: Chains, sites=None) -> dict[str, torch.Tensor]:
        """d log joint / d unit for the binary sites `sites` (default: all) at the chains' state: the
        conditional logit log p(u=1|rest) - log p(u=0|rest) of each unit whose energy is linear in
        it. One gradient (compiled, see the module docstring)."""
        sites = self.sites if sites is None else tuple(sites)
        values = {s: chains[s].detach().to(self.model.dtype) for s in self.sites}
        if self.compile:
            grad = self._compiled.get(sites)
            if grad is None:
                grad = self._compiled[sites] = CompiledGradient(self._quiet_log_joint, self.model, sites)
            out = grad(values)
            if out is not None:
                return out
        with torch.enable_grad():
            values = {s: v.requires_grad_(s in sites) for s, v in values.items()}
            total = self._quiet_log_joint(values)
            grads = torch.autograd.grad(total, [values[s] for s in sites], allow_unused=True)
        return {s: (torch.zeros_like(values[s]) if g is None else g.detach()) for s, g in zip(sites, grads)}

    # ------------------------------------------------------------------ the Sampler protocol
    def _draw_block(self, chains: Chains, block, clamp: bool) -> Chains:
        chains = dict(chains)
        sites = [(s, idx) for s, idx in block if not (clamp and s == self.site)]
        if not sites:
            return chains
        if all(idx is None and s in self.closed for s, idx in sites):
            for s, _ in sites:
                chains[s] = draw(self.closed[s](chains)).to(self.model.dtype)
            return chains
        logits = self.logits(chains, [s for s, _ in sites])
        for s, idx in sites:
            lg = logits[s].reshape(chains[s].shape[0], -1)
            if idx is None:
                x = bernoulli(torch.sigmoid(lg))
            else:
                x = chains[s].reshape(chains[s].shape[0], -1).clone()
                idx = idx.to(x.device)
                x[:, idx] = bernoulli(torch.sigmoid(lg[:, idx]))
            chains[s] = x.reshape(chains[s].shape)
        return chains

    @torch.no_grad()
    def step(self, chains: Chains, clamp_visible: bool = False) -> Chains:
        """One sweep over the blocks in order (the visible site held fixed with `clamp_visible`)."""
        self._check_chains(chains)
        for block in self._plan:
            chains = self._draw_block(chains, block, clamp_visible)
        return chains

    def _check_chains(self, chains: Chains) -> None:
        if not isinstance(chains, dict) or any(s not in chains for s in self.sites):
            got = sorted(chains) if isinstance(chains, dict) else type(chains).__name__
            raise ValueError(f"chains: expected a dict with sites {list(self.sites)}, got {got}")

    @torch.no_grad()
    def init(self, data: torch.Tensor, draw_hidden: bool = True) -> Chains:
        """Chains at the data (n, *visible shape); hidden sites drawn by one sweep with the data
        clamped (`draw_hidden=False` leaves them at zero, for callers whose next sweep starts
        with the hidden blocks)."""
        if not torch.is_tensor(data):
            raise TypeError(f"data: expected a tensor, got {type(data).__name__}")
        shape = self.unit_shapes[self.site]
        if tuple(data.shape[1:]) != shape or data.dim() < 1:
            raise ValueError(f"data: expected shape (n, {', '.join(map(str, shape))}), got {tuple(data.shape)}")
        n = data.shape[0]
        chains = {self.site: data.detach().to(device=self.model.device, dtype=self.model.dtype).clone()}
        for s in self.latent_sites:
            chains[s] = torch.zeros(n, *self.unit_shapes[s], dtype=self.model.dtype, device=self.model.device)
        return self.step(chains, clamp_visible=True) if draw_hidden and self.latent_sites else chains

    @torch.no_grad()
    def init_random(self, n: int) -> Chains:
        """`n` chains with every binary unit a fair coin (real sites: standard normal)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive number of chains, got {n!r}")
        kw = dict(dtype=self.model.dtype, device=self.model.device)
        return {
            s: bernoulli(torch.full((n, *self.unit_shapes[s]), 0.5, **kw)) if self.binary[s]
            else torch.randn(n, *self.unit_shapes[s], **kw)
            for s in self.sites
        }

    def visible(self, chains: Chains) -> torch.Tensor:
        return chains[self.site]

    def from_data(
        self, data: torch.Tensor, num_steps: int, energy: bool = False
    ) -> tuple[Chains, torch.Tensor | None, dict | None]:
        """Chains after `num_steps` sweeps started at `data` (hidden blocks first, drawn given the
        data), and with ``energy=True``, where the model offers ``free_energy_and_hidden``, the
        data's energy (with gradients unless under ``torch.no_grad()``) and the hidden sites'
        conditionals given the data, from which the first hidden draw came; else None, None."""
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
            raise ValueError(f"num_steps: expected a non-negative int, got {num_steps!r}")
        if not (energy and self._lead and num_steps > 0):
            with torch.no_grad():
                return self.run(self.init(data, draw_hidden=False), num_steps), None, None
        chains = self.init(data, draw_hidden=False)  # checks the data; hidden sites at zero
        e, hidden = self.model.free_energy_and_hidden(chains[self.site])
        with torch.no_grad():
            for s in self.latent_sites:
                chains[s] = draw(hidden[s]).to(self.model.dtype)
            for block in self._plan[self._lead:]:
                chains = self._draw_block(chains, block, clamp=False)
            chains = self.run(chains, num_steps - 1)
        return chains, e, hidden

    @torch.no_grad()
    def sample(self, n: int, num_steps: int | None = None) -> torch.Tensor:
        """`n` visible draws after `num_steps` sweeps from `init_random(n)`, shape (n, *visible)."""
        return self.visible(self.run(self.init_random(n), self.num_steps if num_steps is None else num_steps))

    @torch.no_grad()
    def sample_hidden(self, data: torch.Tensor, num_steps: int = 1) -> Chains:
        """Chains with the visible site clamped at `data` after `num_steps` sweeps over the hidden
        blocks: draws from p(hidden | data) (exact after one sweep for an RBM)."""
        chains = self.init(data, draw_hidden=False)
        for _ in range(num_steps):
            chains = self.step(chains, clamp_visible=True)
        return chains

    def __repr__(self) -> str:
        return f"Gibbs({type(self.model).__name__}, {len(self.blocks)} blocks, level={self.level!r}, compile={self.compile})"
