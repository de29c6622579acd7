"""Adversarial speed: time per training step (one discriminator and one generator update) of
`models.GAN` through `inference.Adversarial` and `inference.fit`, against a hand-written
PyTorch GAN step with the same networks, loss and optimisers.

Target (issue 13): at most 1.1x the hand-written step. Both sides run identical copies of the
generator and discriminator, the non-saturating loss, Adam(lr=2e-4, betas=(0.5, 0.999)) for
each, fresh samples for the discriminator update (no gradient through the generator) and for
the generator update, and the moving average of the generator's weights (EMA, decay 0.999,
`torch._foreach_lerp_`) on both sides. The framework side adds fit's batching, the finiteness
check of every update and the metrics dict.

Two settings: the 8 Gaussians (MLPs 2 -> 128 -> 128 -> 2 / 2 -> 256 -> 256 -> 1, batch 256) and
the digits (the `pgm train gan` sizes: MLPs 16 -> 256 -> 256 -> 64 / 64 -> 256 -> 256 -> 1, batch 64). Repeats are
interleaved (hand, framework, hand, ...) and medians of per-step times reported.

    OMP_NUM_THREADS=1 python benchmarks/bench_gan.py [--steps 50] [--repeat 7] [--setting toy|digits|both]

Figures (2 shared CPU cores under a load average of 7-10, `--steps 100 --repeat 7`, 2026-12-02):
8 Gaussians 9.77 ms hand-written vs 10.43 ms through fit (CPU time), median paired ratio 1.067
(wall 1.066); digits 6.09 vs 6.72 ms, median paired ratio 1.107 (wall 1.100). Paired ratios spread
0.92-1.28 from repeat to repeat on this machine. A second run (same command, 08:55 UTC): 8 Gaussians
9.15 vs 10.26 ms, median 1.064; digits 5.82 vs 6.03 ms, median 1.021. The engine's own step (without fit) measured 1.07-1.08x the hand-written one: its extra
work is the finiteness check of each update, the loss as a float and the d_real/d_fake metrics.
To be remeasured on a quiet machine.

The table (`--table [--max-epochs E] [--samples N] [--models a,b]`): every registry model whose
preset trains on the digits (RBM, Boltzmann machine, DBN, VAE, VQ-VAE, GAN, FVSBN, NADE, MADE,
PixelCNN, MAF, Glow, DDPM, conditional DDPM), each trained by `pgm train NAME` with its preset
(epochs capped by --max-epochs), N true samples from `pgm sample RUN -o samples.pt`, and FD / KID /
IS / precision / recall / MMD p-value against the 180 test digits, with each row's sample size
and training time; the references are 180 validation digits and N training digits (a memoriser).
Tutorial 08 prints the same table for a subset trained there.

Sample quality (`--quality`) trains the `pgm train gan` preset settings for the digits and prints
FD / KID / IS / precision / recall of 1,000 samples against the 180 test digits, and of the 180
validation digits (the real-data reference), on the features of `inference.metrics`' classifier.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

from inference.adversarial import Adversarial
from inference.fit import fit
from models.gan import GAN


def hand_written(gan: GAN, discriminator: torch.nn.Module, lr: float, ema: float = 0.999):
    g, d = copy.deepcopy(gan.generator), copy.deepcopy(discriminator)
    g_opt = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    average = [p.detach().clone() for p in g.parameters()]
    z_dim = gan.z_dim
    t = 0

    def step(x: torch.Tensor) -> float:
        nonlocal t
        n = x.shape[0]
        with torch.no_grad():
            fake = g(torch.randn(n, z_dim))
        d_loss = F.softplus(-d(x)).mean() + F.softplus(d(fake)).mean()
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        g_loss = F.softplus(-d(g(torch.randn(n, z_dim)))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        t += 1
        with torch.no_grad():
            torch._foreach_lerp_(average, [p.detach() for p in g.parameters()], 1 - min(ema, (1 + t) / (10 + t)))
        return float(g_loss.detach())

    return step


def bench(setting: str, steps: int, repeat: int) -> float:
    torch.manual_seed(0)
    lr = 2e-4
    if setting == "toy":
        batch, gan = 256, GAN(x_dim=2, z_dim=2, hidden_dims=(128, 128))
        data = torch.randn(steps * batch, 2)
    else:
        batch, gan = 64, GAN(x_dim=64, z_dim=16, hidden_dims=(256, 256))
        data = torch.rand(steps * batch, 64)
    engine = Adversarial(copy.deepcopy(gan), lr=lr)
    hand = hand_written(gan, engine.discriminator, lr)
    batches = data.split(batch)

    def timed(run) -> tuple[float, float]:
        """(wall, CPU) seconds per step: on a shared machine the process's CPU time is the
        steadier measure of a single-threaded step."""
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return (time.perf_counter() - wall) / len(batches), (time.process_time() - cpu) / len(batches)

    def run_hand() -> None:
        for x in batches:
            hand(x)

    def run_fit() -> None:
        fit(engine, data, epochs=1, batch_size=batch, progress=False, validate=False, seed=0)

    timed(run_hand), timed(run_fit)  # warm-up
    times: dict[str, list[tuple[float, float]]] = {"hand": [], "fit": []}
    for _ in range(repeat):  # interleaved: hand, fit, hand, fit, ...
        times["hand"].append(timed(run_hand))
        times["fit"].append(timed(run_fit))
    print(f"[{setting}] batch={batch} steps/repeat={steps} repeats={repeat}")
    ratios = {}
    for i, clock in enumerate(("wall", "cpu")):
        hand_t = statistics.median(t[i] for t in times["hand"])
        fit_t = statistics.median(t[i] for t in times["fit"])
        per = [f[i] / h[i] for f, h in zip(times["fit"], times["hand"])]
        ratios[clock] = statistics.median(per)
        print(f"  {clock:4s} hand-written {1e3 * hand_t:7.2f} ms   inference.fit {1e3 * fit_t:7.2f} ms   "
              f"paired ratios {', '.join(f'{r:.3f}' for r in per)} -> median {ratios[clock]:.3f}")
    return ratios["cpu"]


def quality(steps: int) -> None:
    import warnings

    import pgm.data
    from inference.metrics import evaluate_samples

    data = pgm.data.load("digits")
    torch.manual_seed(0)
    gan = GAN(x_dim=64, z_dim=16, hidden_dims=(256, 256))  # the `pgm train gan` preset
    engine = Adversarial(gan, lr=5e-4, r1=1.0)
    start = time.perf_counter()
    fit(engine, data, epochs=10_000, batch_size=64, max_steps=steps, seed=0, progress=False)
    minutes = (time.perf_counter() - start) / 60
    torch.manual_seed(1)
    x = engine.sample(1000)
    names = ("fd", "kid", "is", "pr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fake = evaluate_samples(x, data, names)
        real = evaluate_samples(data.valid, data, names)
    print(f"digits GAN, {steps} steps ({minutes:.1f} min); 1000 samples vs 180 test digits; real = 180 valid digits")
    for k in fake:
        print(f"  {k:10s} GAN {fake[k]:9.3f}   real {real[k]:9.3f}")


def digits_families() -> list[str]:
    """The registry's models whose training preset is on the digits (one or more per family)."""
    import models

    return [name for name in models.available() if models.preset(name).data == "digits"]


def family_table(names: list[str], epochs: int | None, n: int, folder: str) -> None:
    """Every model in `names` trained by its `pgm train NAME` preset (at most `epochs` epochs),
    `n` true samples drawn by `pgm sample RUN -o samples.pt`, scored against the 180 test
    digits on the classifier's features; a markdown table with each row's sample size."""
    import warnings
    from pathlib import Path

    import models
    import pgm.data
    from inference.metrics import SampleSizeWarning, evaluate_samples
    from pgm.cli import main as pgm_cli

    os.environ.setdefault("TQDM_DISABLE", "1")
    digits = pgm.data.load("digits")
    metrics = ("fd", "kid", "is", "pr", "mmd")
    columns = ("fd", "kid", "is", "precision", "recall", "mmd_p")
    rows: list[tuple[str, str, int, dict | str]] = []
    warnings.simplefilter("ignore", SampleSizeWarning)
    rows.append(("real (180 valid digits)", "-", len(digits.valid), evaluate_samples(digits.valid, digits, metrics)))
    rows.append((f"memoriser ({n} train digits)", "-", n, evaluate_samples(digits.train[:n], digits, metrics)))
    for name in names:
        preset = models.preset(name)
        run_epochs = preset.epochs if epochs is None else min(epochs, preset.epochs)
        out = Path(folder) / name
        start = time.perf_counter()
        code = pgm_cli(["train", name, "--epochs", str(run_epochs), "--out", str(out), "--overwrite", "--quiet",
                    "--num-samples", "16"])
        if code == 0:
            code = pgm_cli(["sample", str(out), "-n", str(n), "--seed", "1", "-o", str(out / "samples.pt")])
        minutes = (time.perf_counter() - start) / 60
        trained = f"{run_epochs}/{preset.epochs} ep, {minutes:.1f} min"
        if code != 0:
            rows.append((name, trained, 0, f"pgm exited with {code}"))
            continue
        x = torch.load(out / "samples.pt").reshape(n, -1).to(torch.float64)
        rows.append((name, trained, n, evaluate_samples(x, digits, metrics)))
    print(f"\nSample quality on the digits: {n} samples per model against the {len(digits.test)} test digits "
          f"(features and IS from inference.metrics' classifier; MMD test on pixels)\n")
    print("| model | trained | n | " + " | ".join(columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for name, trained, size, result in rows:
        cells = ([f"{result[c]:.3f}" for c in columns] if isinstance(result, dict) else [result] + [""] * (len(columns) - 1))
        print(f"| {name} | {trained} | {size} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--setting", default="both", choices=["toy", "digits", "both"])
    parser.add_argument("--quality", type=int, default=0, metavar="STEPS", help="also train the digits preset this many steps")
    parser.add_argument("--table", action="store_true",
                        help="only the table of every model trained on the digits (see family_table)")
    parser.add_argument("--models", default=None, help="with --table: comma-separated registry names "
                        "(default: every model whose preset trains on the digits)")
    parser.add_argument("--max-epochs", type=int, default=None, help="with --table: cap each preset's epochs")
    parser.add_argument("--samples", type=int, default=1000, help="with --table: samples per model")
    parser.add_argument("--runs", default="runs/bench_gan_table", help="with --table: folder of the runs")
    args = parser.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')} torch threads={torch.get_num_threads()}")
    if args.table:
        names = args.models.split(",") if args.models else digits_families()
        family_table(names, args.max_epochs, args.samples, args.runs)
        return
    for setting in (("toy", "digits") if args.setting == "both" else (args.setting,)):
        bench(setting, args.steps, args.repeat)
    if args.quality:
        quality(args.quality)


if __name__ == "__main__":
    main()
