"""Flow benchmarks: the framework's maximum-likelihood step against a hand-written one, the
MAF / IAF speed asymmetry at D = 784, and bits/dim on the dequantized digits after a CPU budget.

1. ``step``: time per maximum-likelihood step of `models.RealNVP` and `models.MAF` through
   `inference.fit` (engine `MaximumLikelihood`; whole epochs of the dequantized digits, so fit's
   per-epoch work counts), against a hand-written PyTorch loop (a fresh order each epoch) that runs
   the same conditioner networks (deep copies, identical weights) through the change of
   variables written out by hand, with Adam at the same learning rate. Target: at most 1.1x.
   Repeats are paired and interleaved (order alternated) and the median of the paired ratios
   reported, so that load on a shared machine hits both sides alike; times are the process's
   CPU time (one thread), which other processes' load disturbs less than wall time.
2. ``asymmetry``: MAF scores a batch in one pass per layer and samples in D passes; IAF the
   reverse. Times of `log_prob` on new data and of `sample` for both, D = 784.
3. ``bits``: RealNVP (multi-scale, checkerboard and channel couplings) and Glow on the digits
   (8x8, 17 grey levels, uniform dequantization) trained for `--budget` CPU seconds each; test
   bits/dim of the discrete data (dequantization bound, mean of 5 noise draws). The 8x8 digits
   are not MNIST, so no published figure compares directly; the MNIST bits/dim of the RealNVP,
   Glow and MAF papers could not be checked against the papers' tables from this machine and are
   not quoted here.

    OMP_NUM_THREADS=1 python benchmarks/bench_flows.py [step] [asymmetry] [bits] [--budget 120]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time

import torch

import inference
import pgm
from models.flow_layers import ActNorm, Inverted, Reverse
from models.flows import IAF, MAF, Glow, RealNVP


# ------------------------------------------------------------------------------------ 1. step
def hand_written(flow, lr: float):
    """A plain PyTorch step of -mean log p(x) for a vector RealNVP or MAF built by this project,
    on deep copies of its layers, the change of variables written out by hand."""
    layers = copy.deepcopy(flow.layers)  # before any pass: Pyro's transform caches hold no graph
    optimizer = torch.optim.Adam(layers.parameters(), lr=lr)
    d = flow.dim
    log_norm = -0.5 * d * math.log(2 * math.pi)
    flip = torch.arange(d - 1, -1, -1)

    def log_prob(x):
        h, total = x, x.new_zeros(x.shape[0])
        for layer in reversed(layers):  # data -> base
            if isinstance(layer, ActNorm):
                h = (h - layer.loc) * torch.exp(-layer.log_scale)
                total = total - layer.log_scale.sum()
            elif isinstance(layer, Reverse):
                h = h[:, flip]
            elif isinstance(layer, Inverted):  # MAF: the autoregressive map, one pass
                mean, log_scale = layer.inner.arn(h)
                log_scale = log_scale.clamp(-5.0, 3.0)
                h = torch.exp(log_scale) * h + mean
                total = total + log_scale.sum(-1)
            else:  # affine coupling, inverse direction
                h1, h2 = h[:, : layer.split_dim], h[:, layer.split_dim:]
                mean, log_scale = layer.nn(h1)
                log_scale = log_scale.clamp(-5.0, 3.0)
                h = torch.cat([h1, (h2 - mean) * torch.exp(-log_scale)], dim=-1)
                total = total - log_scale.sum(-1)
        return total + log_norm - 0.5 * h.pow(2).sum(-1)

    def step(x):
        loss = -log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step.log_prob, step.layers = log_prob, layers
    return step


def bench_step(args) -> None:
    torch.manual_seed(0)
    data = pgm.data.load("digits", seed=0).train  # (1437, 64) in [0, 1]
    data = (data + torch.rand_like(data) / 17).float()
    lr, bs = 1e-3, args.batch_size
    steps_per_epoch = math.ceil(data.shape[0] / bs)
    for name, flow in [("RealNVP(x_dim=64, 8 couplings of (256, 256))", RealNVP(x_dim=64, num_layers=8, hidden_dims=(256, 256))),
                       ("MAF(x_dim=64, 5 layers of (512,))", MAF(x_dim=64, num_layers=5, hidden_dims=(512,)))]:
        hand = hand_written(flow, lr)
        flow.init_from(data[:512])
        hand.layers.load_state_dict(flow.layers.state_dict())
        with torch.no_grad():  # the hand-written density is the flow's
            assert torch.allclose(hand.log_prob(data[:64]), flow.log_prob(data[:64]), atol=1e-3)
        engine = inference.MaximumLikelihood(flow, lr=lr)

        def time_hand() -> float:  # the usual PyTorch loop: a fresh order each epoch, minibatches gathered
            start = time.process_time()
            for _ in range(args.epochs):
                order = torch.randperm(data.shape[0])
                for b in range(steps_per_epoch):
                    hand(data.index_select(0, order[b * bs: (b + 1) * bs]))
            return (time.process_time() - start) / (args.epochs * steps_per_epoch)

        def time_fit() -> float:
            start = time.process_time()
            inference.fit(engine, data, epochs=args.epochs, batch_size=bs, progress=False, validate=False, seed=0)
            return (time.process_time() - start) / (args.epochs * steps_per_epoch)

        time_hand(), time_fit()  # warm-up
        hands, fits, ratios = [], [], []
        for k in range(args.repeat):  # paired and interleaved, the order alternated
            if k % 2:
                f, h = time_fit(), time_hand()
            else:
                h, f = time_hand(), time_fit()
            hands.append(h)
            fits.append(f)
            ratios.append(f / h)
        print(f"{name}, batch {bs}, {args.epochs} epochs of {steps_per_epoch} steps a pair: hand {1e3 * statistics.median(hands):.2f} ms, "
              f"fit {1e3 * statistics.median(fits):.2f} ms per step; median of {args.repeat} paired ratios "
              f"{statistics.median(ratios):.3f} (quartiles {_quartiles(ratios)})")


def _quartiles(values) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.3f}-{q[2]:.3f}"


# ------------------------------------------------------------------------------- 2. asymmetry
def bench_asymmetry(args) -> None:
    torch.manual_seed(0)
    d = 784
    kwargs = dict(x_dim=d, num_layers=args.layers, hidden_dims=(1024,), normalize=False)
    maf, iaf = MAF(**kwargs), IAF(**kwargs)
    x = torch.randn(args.batch_size, d)
    n = args.num_samples

    def timed(fn) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        return time.perf_counter() - start

    rows = [
        ("MAF log_prob", args.batch_size, timed(lambda: maf.log_prob(x))),
        ("MAF sample", n, timed(lambda: maf.sample(n))),
        ("IAF sample", n, timed(lambda: iaf.sample(n))),
        ("IAF log_prob (new data)", args.batch_size, timed(lambda: iaf.log_prob(x))),
    ]
    print(f"D = {d}, {args.layers} layers, MADE hidden (1024,)")
    for what, count, seconds in rows:
        print(f"  {what:26s} {count:4d} points: {seconds:8.3f} s  ({1e3 * seconds / count:8.2f} ms/point)")
    print(f"  density: IAF/MAF = {rows[3][2] / rows[0][2]:.0f}x; sampling: MAF/IAF = {rows[1][2] / rows[2][2]:.0f}x")


# ----------------------------------------------------------------------------------- 3. bits
def bench_bits(args) -> None:
    data = pgm.data.load("digits", seed=0)
    for name, flow in [("RealNVP multi-scale", RealNVP(x_shape=(1, 8, 8), num_scales=2, hidden_channels=64, levels=17)),
                       ("Glow", Glow(x_shape=(1, 8, 8), num_scales=2, steps_per_scale=6, hidden_channels=64, levels=17))]:
        torch.manual_seed(0)
        train = data.train.reshape(-1, 1, 8, 8)
        test = data.test.reshape(-1, 1, 8, 8)
        flow.init_from(train[:512])
        engine = inference.MaximumLikelihood(flow, lr=1e-3)
        start = time.process_time()

        def stop(state):
            return "stop" if time.process_time() - start > args.budget else None

        history = inference.fit(engine, train, epochs=10_000, batch_size=64, progress=False, callbacks=stop, seed=0)
        with torch.no_grad():
            bpd = statistics.mean(float(flow.bits_per_dim(test)) for _ in range(5))
        print(f"{name}: {len(history)} steps in {time.process_time() - start:.0f} CPU s; test {bpd:.3f} bits/dim "
              f"(17 levels: uniform noise would give {math.log2(17):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", default=["step", "asymmetry", "bits"])
    parser.add_argument("--epochs", type=int, default=2, help="step: epochs of the digits (1437 rows) per timed block")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=5, help="asymmetry: autoregressive layers")
    parser.add_argument("--num-samples", type=int, default=16, help="asymmetry: draws timed")
    parser.add_argument("--budget", type=float, default=120.0, help="bits: CPU seconds of training per flow")
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} torch threads={torch.get_num_threads()}")
    for part in args.parts:
        {"step": bench_step, "asymmetry": bench_asymmetry, "bits": bench_bits}[part](args)


if __name__ == "__main__":
    main()
