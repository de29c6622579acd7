"""Graph-layer benchmark: extraction of long chain programs and drawing a 100-node graph.

Targets: extracting the graph of a 1,000-site chain program (the latent chain of a diffusion
model) in under 1 s (issue 2); extraction within 3x one plain `poutine.trace` of the same
program at 1,000 and 10,000 sites, and linear in the number of sites (issue 10: the curve of
time against sites is printed and plotted, `--plot PATH`); drawing a 100-node graph in under
3 s. Times are medians of `--repeat` runs, extraction and plain trace interleaved so that both
see the same machine load.

    python benchmarks/bench_graph.py [--sites 1000 10000] [--curve 250 500 1000 2000 4000 10000]
                                     [--draw-nodes 100] [--repeat 3] [--plot graph_bench.png]
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


def paired(n: int, repeat: int) -> tuple[float, float]:
    """Median extraction and plain-trace times of the n-site chain, measured interleaved."""
    program, x0 = diffusion_chain(n), torch.zeros(4)
    pgm.graph_of(program, x0)  # warm-up
    ext, pl = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        g = pgm.graph_of(program, x0)
        ext.append(time.perf_counter() - start)
        start = time.perf_counter()
        poutine.trace(program).get_trace(x0)
        pl.append(time.perf_counter() - start)
    assert len(g.directed_edges) == n - 1
    return statistics.median(ext), statistics.median(pl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--curve", type=int, nargs="*", default=[250, 500, 1000, 2000, 4000, 10000])
    parser.add_argument("--draw-nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plot", default=None, help="save the time-against-sites curve to this PNG")
    args = parser.parse_args()

    measured = {}
    for n in sorted(set(args.sites) | set(args.curve)):
        measured[n] = paired(n, args.repeat)
    for n in args.sites:
        extract, plain = measured[n]
        target = " (target < 1 s)" if n == 1000 else ""
        print(f"extract {n}-site chain: {extract:.3f} s{target}; one plain trace {plain:.3f} s; "
              f"ratio {extract / plain:.2f}x (target <= 3x)")
    print("time against sites (extraction / plain trace, per site):")
    for n in args.curve:
        extract, plain = measured[n]
        print(f"  {n:6d} sites: extract {extract:7.3f} s ({1e6 * extract / n:6.1f} us/site)  "
              f"plain {plain:7.3f} s ({1e6 * plain / n:6.1f} us/site)  ratio {extract / plain:.2f}x")
    if args.curve:
        lo, hi = min(args.curve), max(args.curve)
        growth = (measured[hi][0] / measured[lo][0]) / (hi / lo)
        print(f"  extraction time grows {growth:.2f}x as fast as the site count from {lo} to {hi} (1.0 = linear)")
    if args.plot and args.curve:
        import matplotlib.pyplot as plt

        ns = list(args.curve)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.loglog(ns, [measured[n][0] for n in ns], "o-", label="pgm.graph_of")
        ax.loglog(ns, [measured[n][1] for n in ns], "s--", label="plain poutine.trace")
        ax.loglog(ns, [3 * measured[n][1] for n in ns], ":", color="grey", label="3x plain trace")
        ax.set_xlabel("sites in the chain")
        ax.set_ylabel("seconds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"curve saved to {args.plot}")

    x0 = torch.zeros(4)
    small = pgm.graph_of(diffusion_chain(args.draw_nodes), x0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.png"
        small.draw(path)  # warm-up (font cache)
        draw = timed(lambda: small.draw(path), args.repeat)
    print(f"draw + save PNG of a {args.draw_nodes}-node graph: {draw:.3f} s (target < 3 s)")


if __name__ == "__main__":
    main()
