"""Graph-layer benchmark: extraction of a long chain program and drawing a 100-node graph.

Targets (issue 2): extracting the graph of a 1,000-site chain program (the latent chain of a
diffusion model) in under 1 s, and drawing a 100-node graph in under 3 s, on a 2-core CPU.
Also reports the ratio of extraction time to one plain `poutine.trace` of the same program,
which is what extraction costs over running the program once.

    python benchmarks/bench_graph.py [--sites 1000] [--draw-nodes 100] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402

import pgm  # noqa: E402


def diffusion_chain(num_sites: int):
    """x_T -> ... -> x_0: a Gaussian Markov chain of `num_sites` vector sites, x_0 observed."""

    def program(x0):
        x = pyro.sample(f"x{num_sites - 1}", dist.Normal(torch.zeros(4), 1.0).to_event(1))
        for t in reversed(range(num_sites - 1)):
            x = pyro.sample(f"x{t}", dist.Normal(0.99 * x, 0.1).to_event(1), obs=x0 if t == 0 else None)
        return x

    return program


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--draw-nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    program = diffusion_chain(args.sites)
    x0 = torch.zeros(4)
    pgm.graph_of(program, x0)  # warm-up
    extract = timed(lambda: pgm.graph_of(program, x0), args.repeat)
    plain = timed(lambda: poutine.trace(program).get_trace(x0), args.repeat)
    g = pgm.graph_of(program, x0)
    assert len(g.directed_edges) == args.sites - 1
    print(f"extract {args.sites}-site chain: {extract:.3f} s (target < 1 s); "
          f"one plain trace {plain:.3f} s; ratio {extract / plain:.1f}x")

    small = pgm.graph_of(diffusion_chain(args.draw_nodes), x0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.png"
        small.draw(path)  # warm-up (font cache)
        draw = timed(lambda: small.draw(path), args.repeat)
    print(f"draw + save PNG of a {args.draw_nodes}-node graph: {draw:.3f} s (target < 3 s)")


if __name__ == "__main__":
    main()
