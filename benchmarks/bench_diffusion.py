"""Diffusion and score-based models: step speed against hand-written PyTorch, and DDIM's speed /
quality trade-off on the digits.

1. Step speed (issue 14: at most 1.1x). A multi-level denoising-score-matching step of
   `models.NCSN` (`inference.ScoreMatching(method="denoising")`) and a simplified-objective step
   of `models.DDPM` (`inference.Diffusion`, EMA and gradient clipping on) through
   `inference.fit`, each against a hand-written PyTorch step on a copy of the same network doing
   the same work (noise level / time step per datum, the same loss, Adam, and for the DDPM the
   same gradient clipping and EMA update). Repeats are interleaved and medians reported, so that
   load from other processes hits both sides alike; steps are timed in process CPU time
   (``--wall`` for wall-clock time).
2. Sampling (``--fd``): the `pgm train ddpm` preset's DDPM on the 8x8 digits (``--load`` a
   state dict with the averaged weights saved by ``--save``, or trained here for ``--epochs``), 1,000 samples by ancestral sampling (1000
   steps) and DDIM with 50, 20 and 10 steps: the sampling time and the Frechet distance to the
   test digits on the penultimate features of the project's digit classifier
   (`inference.metrics`). A table, and a
   plot with ``--plot PATH`` (and 32 samples of each sampler beside it, ``PATH_samples.png``).

    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py [--steps 100] [--repeat 5]
    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --fd --load ddpm_digits.pt --plot fd.png
    OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py --fd --run runs/ddpm --plot fd.png   # after `pgm train ddpm`
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from pathlib import Path

import torch

import models
import pgm.data
import pgm.pictures
from inference.diffusion import Diffusion
from inference.fit import fit
from inference.score_matching import ScoreMatching
from models.ddpm import DDPM
from models.ncsn import NCSN


# ---------------------------------------------------------------------------------------------
# 1. step speed
# ---------------------------------------------------------------------------------------------
def hand_dsm(ncsn: NCSN, lr: float):
    net = copy.deepcopy(ncsn.net)
    sigmas = torch.tensor(ncsn.sigmas)
    low, high = math.log(ncsn.sigmas[-1]), math.log(ncsn.sigmas[0])
    opt = torch.optim.Adam(net.parameters(), lr=lr)

    def step(x):
        sigma = sigmas[torch.randint(len(sigmas), (x.shape[0],))]
        z = torch.randn_like(x)
        noisy = x + sigma[:, None] * z
        score = net(noisy, 1000.0 * (sigma.log() - low) / (high - low)) / sigma[:, None]
        loss = 0.5 * (sigma[:, None] * score + z).pow(2).sum(1).mean()
        value = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return value

    return step


def hand_ddpm(ddpm: DDPM, lr: float, ema_decay: float, clip: float):
    net = copy.deepcopy(ddpm.net)
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params]
    ab = ddpm.alphas_bar.clone()
    T = ddpm.num_steps
    opt = torch.optim.Adam(params, lr=lr)
    count = [0]

    def step(x):
        x0 = (x - 0.5) / 0.5
        t = torch.randint(1, T + 1, (x.shape[0],))
        eps = torch.randn_like(x0)
        a = ab[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = (net(xt, t.to(x.dtype)) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        with torch.no_grad():
            n = count[0]
            d = min(ema_decay, (1 + n) / (10 + n))
            for e, p in zip(ema, params):
                e.lerp_(p, 1 - d)
        count[0] += 1
        return float(loss.detach())

    return step


#: Time with this process's CPU time (``--wall``: wall-clock time): on a shared machine, time spent
#: waiting for a core is other processes' load, not this code's cost, and it hits the two sides
#: unevenly; with one thread (OMP_NUM_THREADS=1) CPU time is the work done.
CPU_CLOCK = True


def compare(name: str, hand, engine, data: torch.Tensor, batch_size: int, repeat: int) -> None:
    batches = data.split(batch_size)

    clock = time.process_time if CPU_CLOCK else time.perf_counter

    def time_hand():
        start = clock()
        for x in batches:
            hand(x)
        return (clock() - start) / len(batches)

    def time_fit():
        start = clock()
        fit(engine, data, epochs=1, batch_size=batch_size, progress=False, validate=False, seed=0)
        return (clock() - start) / len(batches)

    time_hand(), time_fit()  # warm-up
    hands, fits = [], []
    for _ in range(repeat):
        hands.append(time_hand())
        fits.append(time_fit())
    ratios = [f / h for f, h in zip(fits, hands)]
    print(f"{name} [{'process CPU' if CPU_CLOCK else 'wall-clock'} time]: hand-written {1e3 * statistics.median(hands):.2f} ms, inference.fit {1e3 * statistics.median(fits):.2f} ms, "
          f"ratio of medians {statistics.median(fits) / statistics.median(hands):.3f}; per repeat "
          f"{', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}, min {min(ratios):.3f})")


def speed(args) -> None:
    torch.manual_seed(0)
    moons = pgm.data.load("moons", n_samples=args.steps * 256, seed=0).train.float()
    ncsn = NCSN(x_dim=2, hidden_dim=128, num_layers=3)
    compare("NCSN DSM step (2D, MLP 128x3, batch 256)", hand_dsm(ncsn, 1e-3),
            ScoreMatching(copy.deepcopy(ncsn), method="denoising", lr=1e-3), moons[: args.steps * 256], 256, args.repeat)
    digits = pgm.data.load("digits", seed=0).train.float()
    digits = digits.repeat(math.ceil(args.steps * 128 / len(digits)), 1)[: args.steps * 128]
    ddpm = DDPM(x_dim=64, num_steps=1000, schedule="cosine", shift=0.5, scale=0.5, hidden_dim=256, num_layers=3)
    compare("DDPM step (digits, MLP 256x3, batch 128, EMA + clipping)", hand_ddpm(ddpm, 1e-3, 0.999, 1.0),
            Diffusion(copy.deepcopy(ddpm), lr=1e-3, ema_decay=0.999, grad_clip=1.0), digits, 128, args.repeat)


# ---------------------------------------------------------------------------------------------
# 2. DDIM against ancestral sampling
# ---------------------------------------------------------------------------------------------
def sampling(args) -> None:
    data = pgm.data.load("digits", seed=0)
    torch.manual_seed(0)
    preset = models.preset("ddpm")  # the `pgm train ddpm` settings
    ddpm = models.get("ddpm", **{**preset.settings, "x_dim": 64})
    if args.run:  # a `pgm train ddpm` run directory: its checkpoint's averaged weights
        from inference.checkpoint import load_latest
        from inference.diffusion import ema_model_state

        state, _ = load_latest(args.run)
        ddpm.load_state_dict(ema_model_state(state) or state["model"])
    elif args.load:
        ddpm.load_state_dict(torch.load(args.load))
    else:
        engine = Diffusion(ddpm, lr=preset.lr, **preset.engine_settings)
        fit(engine, data.train, epochs=args.epochs, batch_size=preset.batch_size, seed=0, progress=True)
        ddpm.load_state_dict(engine.ema_state_dict())
        if args.save:
            torch.save(ddpm.state_dict(), args.save)
    from inference.metrics import features as project_features, frechet_distance

    features, fd, which = (lambda x: project_features(x)[0]), frechet_distance, "the project classifier (inference.metrics)"
    test = torch.cat([data.test, data.valid])
    reference = fd(features(data.train[: len(test)]), features(test))
    rows, grids = [], []
    for steps in (None, 50, 20, 10):
        torch.manual_seed(1)
        start = time.perf_counter()
        x = ddpm.sample(args.num, steps=steps, progress=False)
        seconds = time.perf_counter() - start
        rows.append(("ancestral (1000)" if steps is None else f"DDIM {steps}", seconds, fd(features(x), features(test))))
        grids.append(x[:32])
    print(f"Frechet distance to the {len(test)} held-out digits (features of {which}), {args.num} samples each; "
          f"training digits themselves: {reference:.2f}")
    print(f"{'sampler':<18}{'seconds':>10}{'FD':>10}")
    for name, seconds, fd in rows:
        print(f"{name:<18}{seconds:>10.1f}{fd:>10.2f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        ax.plot([r[1] for r in rows], [r[2] for r in rows], "o")
        for name, seconds, fd in rows:
            ax.annotate(name, (seconds, fd), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(reference, color="grey", ls="--", lw=1, label="training digits")
        ax.set_xscale("log")
        ax.set_xlabel("sampling time for %d samples (s)" % args.num)
        ax.set_ylabel("Frechet distance")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot -> {args.plot}")
        fig, axes = plt.subplots(1, len(rows), figsize=(3 * len(rows), 1.9))
        for ax, (name, _, value), x in zip(axes, rows, grids):
            pgm.pictures.image_grid(x, ax=ax, nrow=8, title=f"{name}: FD {value:.2f}")
        fig.tight_layout()
        grid = Path(args.plot).with_name(Path(args.plot).stem + "_samples.png")
        fig.savefig(grid, dpi=120)
        print(f"samples -> {grid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed repeat (one fit call: its per-call set-up is amortised over them)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fd", action="store_true", help="the sampling table (part 2) instead of step speed")
    parser.add_argument("--load", default=None, help="a DDPM state dict (part 2)")
    parser.add_argument("--run", default=None, help="a `pgm train ddpm` run directory: sample its averaged weights (part 2)")
    parser.add_argument("--save", default=None, help="save the DDPM trained here (part 2)")
    parser.add_argument("--epochs", type=int, default=250, help="training epochs when not --load (part 2)")
    parser.add_argument("--num", type=int, default=1000, help="samples per sampler (part 2)")
    parser.add_argument("--plot", default=None, help="write the FD-vs-time plot here (part 2)")
    parser.add_argument("--wall", action="store_true", help="time steps by wall clock instead of process CPU time (part 1)")
    args = parser.parse_args()
    global CPU_CLOCK
    CPU_CLOCK = not args.wall
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} torch threads={torch.get_num_threads()}")
    sampling(args) if args.fd else speed(args)


if __name__ == "__main__":
    main()
