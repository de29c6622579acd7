"""The `pgm` command line: list, draw, train, sample and evaluate models.

This is the one module that wires `pgm`, `models` and `inference` together; it imports them
lazily so that `pgm --help` stays fast.

    pgm list
    pgm draw rbm -o rbm.png --units --set v_dim=4 --set h_dim=3
    pgm draw mypackage.mymodule:my_program -o graph.svg
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "resolve_model"]


class CommandError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """`["v_dim=4", "hidden_dims=(64, 64)"]` -> `{"v_dim": 4, "hidden_dims": (64, 64)}`.

    >>> parse_settings(["v_dim=4", "likelihood=gaussian", "hidden_dims=(8, 8)"])
    {'v_dim': 4, 'likelihood': 'gaussian', 'hidden_dims': (8, 8)}
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise CommandError(f"--set: expected KEY=VALUE with KEY a Python name, got {item!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def resolve_model(spec: str, settings: dict[str, Any] | None = None):
    """A model from a registered zoo name or `module:attribute`.

    The attribute may be a `pgm.Model` instance, a `pgm.Model` subclass (built with
    `settings`), or a Pyro program that takes no required arguments.
    """
    import models
    import pgm

    settings = settings or {}
    if ":" not in spec:
        if spec not in models.available():
            raise CommandError(
                f"MODEL: unknown model {spec!r}; registered: {', '.join(models.available())} "
                "(or give module:function for your own program)"
            )
        try:
            return models.get(spec, **settings)
        except TypeError as error:
            raise CommandError(f"--set: {spec} does not accept these settings: {error}") from error
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"MODEL: cannot import module {module_name!r}: {error}") from error
    finally:
        sys.path.pop(0)
    if not hasattr(module, attr):
        raise CommandError(f"MODEL: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type) and issubclass(obj, pgm.Model):
        return obj(**settings)
    if settings:
        raise CommandError(f"--set: settings apply to registered models and Model classes, not to {spec}")
    if isinstance(obj, pgm.Model) or callable(obj):
        return obj
    raise CommandError(f"MODEL: {spec} is a {type(obj).__name__}, not a pgm.Model or a Pyro program")


def cmd_list(args: argparse.Namespace) -> int:
    import models

    names = models.available()
    width = max(map(len, names), default=0)
    for name in names:
        cls, defaults, doc = models.entry(name)
        print(f"{name:<{width}}  {cls.__name__:<20} {doc}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import pgm

    model = resolve_model(args.model, parse_settings(args.set))
    level = "unit" if args.units else "site"
    graph = pgm.graph_of(model, level=level, show_params=args.params, unit_limit=args.unit_limit)
    if args.factor_graph:
        graph = graph.factor_graph()
    out = Path(args.output)
    if out.suffix.lower() == ".dot":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(graph.to_dot())
    else:
        graph.draw(out, title=args.title)
    print(f"{graph!r} -> {out}")
    return 0


# ---------------------------------------------------------------------- training runs
#: Engine names on the command line: (registered engine, preset options).
ENGINE_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "svi": ("svi", {}),
    "iwae": ("svi", {"elbo": "iwae", "num_particles": 5}),
    "rws": ("rws", {}),
    "mcmc": ("mcmc", {"kernel": "nuts"}),
    "nuts": ("mcmc", {"kernel": "nuts"}),
    "hmc": ("mcmc", {"kernel": "hmc"}),
    "mle": ("mle", {}),
    "objective": ("objective", {}),
    "cd": ("cd", {"k": 1}),
    "pcd": ("cd", {"k": 1, "persistent": True}),
    "sm": ("sm", {"method": "exact"}),
    "sliced-sm": ("sm", {"method": "sliced"}),
    "dsm": ("sm", {"method": "denoising", "sigma": 0.1}),
    "nce": ("nce", {}),
    "fce": ("fce", {}),
}
#: The engine `pgm train` uses when none is named: the first that applies to the model (a model
#: that states its own training objective, like the VQ-VAE, is trained by it).
ENGINE_PREFERENCE = ("objective", "svi", "mle", "pcd", "sliced-sm", "mcmc")
#: Constructor arguments that take the data's dimension when not set explicitly.
DATA_DIM_ARGS = ("x_dim", "v_dim")
RUN_CONFIG = "config.json"


def _engine(name: str | None, model, settings: dict[str, Any]):
    import inference
    from inference.engine import EngineError

    ENGINES = inference.load_engines()
    if name is None:
        applicable = [n for n in ENGINE_PREFERENCE if ENGINES.get(ENGINE_PRESETS[n][0]) is not None
                      and ENGINES[ENGINE_PRESETS[n][0]].supports(model) is None]
        if not applicable:
            raise CommandError(f"--engine: none of {', '.join(ENGINE_PREFERENCE)} applies to {type(model).__name__}; "
                               f"see inference.engines_for: {inference.engines_for(model)}")
        name = applicable[0]
    if name not in ENGINE_PRESETS:
        raise CommandError(f"--engine: unknown engine {name!r}; expected one of {', '.join(ENGINE_PRESETS)}")
    registered, preset = ENGINE_PRESETS[name]
    if registered not in ENGINES:
        raise CommandError(f"--engine: {name!r} is not available in this installation")
    settings = _with_sampler(model, dict(settings))
    try:
        return name, ENGINES[registered](model, **{**preset, **settings})
    except EngineError as error:
        raise CommandError(f"--engine {name}: {error}") from error
    except TypeError as error:
        raise CommandError(f"--engine-set: {name} does not accept these settings: {error}") from error


#: `--engine-set sampler=NAME` for engines that take a Markov chain (contrastive divergence).
SAMPLERS = ("gibbs", "ula", "mala")


def _with_sampler(model, settings: dict[str, Any]) -> dict[str, Any]:
    """Replace `sampler=gibbs|ula|mala` (with `sampler_step_size=`, `sampler_steps=`) by the
    sampler object the engine takes."""
    name = settings.pop("sampler", None)
    step_size = settings.pop("sampler_step_size", None)
    steps = settings.pop("sampler_steps", None)
    if name is None:
        if step_size is not None or steps is not None:
            raise CommandError("--engine-set: sampler_step_size and sampler_steps need sampler=ula|mala")
        return settings
    if name not in SAMPLERS:
        raise CommandError(f"--engine-set: sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}")
    if name == "gibbs":
        from inference.gibbs import Gibbs

        settings["sampler"] = Gibbs(model)
        return settings
    from inference.langevin import Langevin

    options: dict[str, Any] = {"method": name}
    if step_size is not None:
        options["step_size"] = float(step_size)
    options["num_steps"] = int(steps) if steps is not None else int(settings.get("k", 1))
    settings["sampler"] = Langevin(model, **options)
    return settings


def _load_data(name: str, settings: dict[str, Any], args) -> Any:
    import pgm.data

    options: dict[str, Any] = {"seed": args.seed if args.seed is not None else 0}
    if args.data_root:
        options["root"] = args.data_root
    if args.download:
        options["download"] = True
    options.update(settings)
    return pgm.data.load(name, **options)


def _needs_binary(model) -> bool:
    return "discrete" in model.capabilities()


def _build_model(spec: str, settings: dict[str, Any], data_dim: int | None):
    import models

    if ":" not in spec and spec in models.available() and data_dim is not None:
        _, defaults, _ = models.entry(spec)
        for key in DATA_DIM_ARGS:
            if key in defaults and key not in settings:
                settings = {**settings, key: data_dim}
    return resolve_model(spec, settings), settings


def cmd_train(args: argparse.Namespace) -> int:
    import json
    import math

    import matplotlib

    matplotlib.use("Agg")
    import pgm
    from inference.fit import fit

    model_settings = parse_settings(args.set)
    data_settings = parse_settings(args.data_set)
    out = Path(args.out or f"runs/{args.model.replace(':', '_')}")
    config_path = out / RUN_CONFIG
    if args.resume and config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved["model"] != args.model or saved["data"] != args.data:
            raise CommandError(f"--resume: {out} holds a run of {saved['model']} on {saved['data']}, "
                               f"not {args.model} on {args.data}")
    # The model's data dimension comes from the data; binary data for binary models.
    probe = _load_data(args.data, data_settings, args)
    data_dim = math.prod(probe.shape)
    model, model_settings = _build_model(args.model, model_settings, data_dim)
    if _needs_binary(model) and "binarize" not in data_settings and probe.info.get("binarized") is False:
        try:
            data_settings = {**data_settings, "binarize": True}
            probe = _load_data(args.data, data_settings, args)
        except (ValueError, TypeError):
            pass  # the dataset cannot binarize: validation reports the problem
    data = probe
    train = data.train
    engine_settings = parse_settings(args.engine_set)
    if args.lr is not None:
        engine_settings["lr"] = args.lr
    greedy = callable(getattr(model, "pretrain", None)) and args.engine in (None, "cd", "pcd")
    if greedy:  # a deep belief net: its RBMs trained greedily, layer by layer, by CD
        engine_name, engine = args.engine or "cd", None
    else:
        engine_name, engine = _engine(args.engine, model, engine_settings)
    config = {
        "model": args.model, "model_settings": model_settings, "engine": engine_name,
        "engine_settings": engine_settings, "data": args.data, "data_settings": data_settings,
        "data_root": args.data_root, "epochs": args.epochs, "batch_size": args.batch_size,
        "seed": args.seed, "device": args.device,
    }
    out.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2, default=str))
    if greedy:
        history = _pretrain(model, train, engine_name, engine_settings, args, out)
    else:
        print(f"training {type(model).__name__} with {type(engine).__name__} ({engine_name}) on {args.data} "
              f"{tuple(train.shape)} -> {out}")
        history = fit(engine, train, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                      seed=args.seed, checkpoint_dir=out, resume=args.resume, progress=not args.quiet)
    if len(history):
        history.plot(out / "loss.png")
    pgm.graph_of(model).draw(out / "graph.png", title=type(model).__name__)
    # 2D data: enough points to show the shape of the density; images: one grid.
    n = max(args.num_samples, 1000) if data_dim == 2 else min(args.num_samples, 256)
    _write_samples(model, n, out / "samples.png", data=data.train)
    last = history.last()
    print(f"done: {len(history)} steps; last metrics {_fmt(last)}; run directory {out}")
    return 0


def _pretrain(model, train, engine_name: str, settings: dict[str, Any], args, out: Path):
    """Greedy layer-wise training (`model.pretrain`, a DBN): one CD run per layer; the last
    layer's history is the run's, each layer's is saved beside it; the model is checkpointed at
    the end (no mid-run resume)."""
    from inference.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from inference.fit import resolve_device

    if args.resume:
        raise CommandError(f"--resume: greedy layer-wise training of {type(model).__name__} cannot resume; start again")
    model.to(resolve_device(args.device))
    print(f"training {type(model).__name__} greedily, layer by layer, by contrastive divergence ({engine_name}) "
          f"on {args.data} {tuple(train.shape)} -> {out}")
    histories = model.pretrain(train, epochs=args.epochs, batch_size=args.batch_size, persistent=engine_name == "pcd",
                               seed=args.seed, progress=not args.quiet, **settings)
    for i, layer_history in enumerate(histories):
        layer_history.save(out / f"history_layer{i}.json")
    save_checkpoint(out / CHECKPOINT_NAME, {"model": model.state_dict(), "engine_name": engine_name,
                                            "step": sum(len(h) for h in histories)})
    return histories[-1]


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if v is not None)


def _draw(model, n: int, mean: bool = False):
    """`n` samples of the model's data: its own sampler, else a Markov chain from inference.
    With `mean`, models whose `sample` can give the mean of the likelihood (a VAE's decoder
    probabilities) give that, which is what sample pictures show."""
    import inspect

    import torch

    if "sample" in model.capabilities():
        wants_mean = mean and "mean" in inspect.signature(model.sample).parameters
        drawn = model.sample(n, mean=True) if wants_mean else model.sample(n)
        if isinstance(drawn, dict):
            drawn = next(iter(drawn.values()))
        return drawn
    if "discrete" in model.capabilities():
        from inference.gibbs import Gibbs as chain
    else:
        from inference.langevin import Langevin as chain
    sampler = chain(model)
    with torch.no_grad():
        chains = sampler.run(sampler.init_random(n), 1000)
    return sampler.visible(chains)


def _write_samples(model, n: int, path: Path, data=None) -> Path:
    import torch

    from pgm import pictures

    x = _draw(model, n, mean=True).detach().cpu()
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 2:
        pictures.scatter_2d(flat, path, data=None if data is None else data[:2000].cpu())
        if "energy" in model.capabilities():
            pictures.energy_2d(model.energy, path.with_name(path.stem + "_density.png"), dtype=model.dtype,
                               device=model.device)
    elif pictures.image_shape(flat.shape[1]) is not None or x.dim() >= 3:
        pictures.image_grid(x[:64] if x.dim() >= 3 else flat[:64], path)
    else:
        path = path.with_suffix(".pt")
        torch.save(x, path)
    return path


def _load_run(run: str):
    import json

    from inference.checkpoint import CHECKPOINT_NAME, load_checkpoint

    folder = Path(run)
    config_path = folder / RUN_CONFIG
    if not config_path.exists():
        raise CommandError(f"RUN: {folder} is not a run directory (no {RUN_CONFIG}); train one with `pgm train`")
    config = json.loads(config_path.read_text())
    model = resolve_model(config["model"], config["model_settings"])
    checkpoint = folder / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise CommandError(f"RUN: {folder} has no {CHECKPOINT_NAME}: the run did not finish a step")
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return config, model


def cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib
    import torch

    matplotlib.use("Agg")
    config, model = _load_run(args.run)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    out = Path(args.output)
    if out.suffix.lower() in (".pt", ".pth"):
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_draw(model, args.num).detach().cpu(), out)
    else:
        out = _write_samples(model, args.num, out)
    print(f"{args.num} samples of {config['model']} -> {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json
    import math

    from inference import evaluate

    config, model = _load_run(args.run)
    data = _load_data(config["data"], config["data_settings"],
                      argparse.Namespace(seed=config.get("seed"), data_root=args.data_root or config.get("data_root"),
                                         download=False))
    test = data.test[: args.limit] if args.limit else data.test
    test = test.reshape(test.shape[0], -1) if test.dim() > 2 else test
    extra = {}
    if args.method == "ais":  # the AIS base distribution is fitted to the training data
        train = data.train
        extra["base_data"] = train.reshape(train.shape[0], -1) if train.dim() > 2 else train
    ll = evaluate.log_likelihood(model, test, method=args.method, num_samples=args.num_samples, **extra)
    nll = -float(ll.mean())
    dims = math.prod(test.shape[1:])
    result = {"method": args.method, "num_samples": args.num_samples, "test_size": test.shape[0],
              "nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2))}
    (Path(args.run) / "eval.json").write_text(json.dumps(result, indent=2))
    print(f"{config['model']} on {config['data']} test ({test.shape[0]}): NLL {nll:.3f} nats "
          f"({result['bits_per_dim']:.4f} bits/dim) by {args.method}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgm", description="Declarative deep generative models on Pyro: draw, train, sample, evaluate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered zoo models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("draw", help="draw a model's graphical model to a file")
    p.add_argument("model", metavar="MODEL", help="a registered name (see `pgm list`) or module:function")
    p.add_argument("-o", "--output", required=True, help="output file: .png, .svg, .pdf, or .dot")
    p.add_argument("--units", action="store_true", help="one node per unit instead of per site")
    p.add_argument("--factor-graph", action="store_true", help="draw the factor-graph view")
    p.add_argument("--params", action="store_true", help="show parameters as nodes")
    p.add_argument("--unit-limit", type=int, default=1024, help="largest site expanded with --units")
    p.add_argument("--title", default=None, help="a title above the drawing")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor setting (repeatable)")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser("train", help="train a model with an inference engine; writes a run directory")
    p.add_argument("model", metavar="MODEL", help="a registered name (see `pgm list`) or module:Class")
    p.add_argument("--engine", default=None, help=f"one of {', '.join(ENGINE_PRESETS)} (default: the first that applies)")
    p.add_argument("--data", default="digits", help="a dataset of pgm.data (default: digits)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="learning rate (engine default otherwise)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default: runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor setting (repeatable)")
    p.add_argument("--engine-set", action="append", metavar="KEY=VALUE", help="engine setting (repeatable)")
    p.add_argument("--data-set", action="append", metavar="KEY=VALUE", help="pgm.data.load option (repeatable)")
    p.add_argument("--data-root", default=None, help="folder of dataset files (MNIST, binarized MNIST)")
    p.add_argument("--download", action="store_true", help="download missing dataset files")
    p.add_argument("--num-samples", type=int, default=64, help="samples drawn for the picture at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", metavar="RUN", help="a run directory written by `pgm train`")
    p.add_argument("-n", "--num", type=int, default=64)
    p.add_argument("-o", "--output", required=True, help=".png/.svg/.pdf picture, or .pt tensor")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="evaluate a trained run's test log-likelihood")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--method", default="iwae", help="iwae, exact or ais")
    p.add_argument("--num-samples", type=int, default=100, help="importance samples (iwae) or chains (ais)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test points only")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"pgm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"pgm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
