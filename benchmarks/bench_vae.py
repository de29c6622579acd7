"""SVI speed: time per training step of `models.VAE` through `inference.fit`, against a
hand-written PyTorch VAE step with the same networks.

Target (issue 3): ``VAE(x_dim=784, z_dim=20, hidden_dims=(400,))``, Bernoulli likelihood,
batch 128: the framework's step at most 1.15x the hand-written one. Both sides run the same
encoder and decoder (`models.nets` copies with identical weights), Adam at the same learning
rate, one reparameterised sample per datum. The hand-written step uses the analytic Gaussian
KL, so the framework side is run with ``elbo="meanfield"`` (Pyro's `TraceMeanField_ELBO`, also
analytic KL) and, for reference, ``elbo="trace"`` (sampled KL). Plain `pyro.infer.SVI` with
`Trace_ELBO` is timed too.

Repeats are interleaved (hand, framework, plain Pyro, hand, ...) and the median per-step
time of each is reported, so that load from other processes hits all sides alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_vae.py [--steps 50] [--repeat 7] [--elbo meanfield]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import pyro
import torch
import torch.nn.functional as F

from inference.fit import fit
from inference.svi import SVI
from models.vae import VAE


def hand_written(vae: VAE, lr: float):
    """A plain PyTorch VAE step on copies of `vae`'s encoder and decoder: BCE with logits plus
    the analytic KL(N(loc, scale) || N(0, I)), per datum."""
    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)

    def step(x: torch.Tensor) -> float:
        loc, scale = encoder(x)
        z = loc + scale * torch.randn_like(loc)
        logits = decoder(z).reshape(x.shape)
        nll = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum()
        loss = (nll + kl) / x.shape[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def plain_pyro(vae: VAE, lr: float):
    """`pyro.infer.SVI` with `Trace_ELBO` on a copy of the model (Pyro's own optimiser wrapper)."""
    model = copy.deepcopy(vae)

    def program(x):
        pyro.module("bench_vae", model)
        return model.model(x)

    def guide(x):
        pyro.module("bench_vae", model)
        return model.guide(x)

    svi = pyro.infer.SVI(program, guide, pyro.optim.Adam({"lr": lr}), pyro.infer.Trace_ELBO())
    return lambda x: svi.step(x) / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--elbo", default="meanfield", choices=["meanfield", "trace"])
    parser.add_argument("--jit", action="store_true", help="SVI(jit=True): Pyro's compiled ELBO")
    parser.add_argument("--no-pyro", action="store_true", help="skip plain pyro.infer.SVI")
    args = parser.parse_args()

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    lr = 1e-3
    n = args.steps * args.batch_size
    data = torch.bernoulli(torch.full((n, 784), 0.3))
    vae = VAE(x_dim=784, z_dim=20, hidden_dims=(400,))
    hand = hand_written(vae, lr)
    engine = SVI(copy.deepcopy(vae), elbo=args.elbo, lr=lr, jit=args.jit)
    pyro_step = None if args.no_pyro else plain_pyro(vae, lr)

    batches = data.split(args.batch_size)

    def time_hand() -> float:
        start = time.perf_counter()
        for x in batches:
            hand(x)
        return (time.perf_counter() - start) / len(batches)

    def time_fit() -> float:
        start = time.perf_counter()
        fit(engine, data, epochs=1, batch_size=args.batch_size, progress=False, validate=False, seed=0)
        return (time.perf_counter() - start) / len(batches)

    def time_pyro() -> float:
        start = time.perf_counter()
        for x in batches:
            pyro_step(x)
        return (time.perf_counter() - start) / len(batches)

    # warm-up (first-step set-up, allocator)
    time_hand(), time_fit()
    if pyro_step is not None:
        time_pyro()
    times: dict[str, list[float]] = {"hand": [], "fit": [], "pyro": []}
    for _ in range(args.repeat):
        times["hand"].append(time_hand())
        times["fit"].append(time_fit())
        if pyro_step is not None:
            times["pyro"].append(time_pyro())
    med = {k: statistics.median(v) for k, v in times.items() if v}
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} torch threads={torch.get_num_threads()} "
          f"batch={args.batch_size} steps/repeat={args.steps} repeats={args.repeat} elbo={args.elbo} jit={args.jit}")
    print(f"hand-written PyTorch step : {1e3 * med['hand']:.2f} ms")
    print(f"inference.fit + SVI step  : {1e3 * med['fit']:.2f} ms   ratio {med['fit'] / med['hand']:.3f}")
    if "pyro" in med:
        print(f"plain pyro SVI Trace_ELBO : {1e3 * med['pyro']:.2f} ms   ratio {med['pyro'] / med['hand']:.3f}")
    ratios = [f / h for f, h in zip(times["fit"], times["hand"])]
    print(f"per-repeat fit/hand ratios: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
