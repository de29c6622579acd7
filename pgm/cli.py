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


def resolve_model(spec: str, settings: dict[str, Any] | None = None, import_path: bool = True):
    """A model from a registered zoo name or `module:attribute` that the user named.

    The attribute may be a `pgm.Model` instance, a `pgm.Model` subclass (built with
    `settings`), or a Pyro program that takes no required arguments. With `import_path`, the
    current folder is searched for the module too (a user's own file).
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
        except ValueError as error:
            raise CommandError(f"--set: {error}") from error
    module_name, _, attr = spec.partition(":")
    if import_path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"MODEL: cannot import module {module_name!r}: {error}") from error
    finally:
        if import_path:
            sys.path.pop(0)
    if not hasattr(module, attr):
        raise CommandError(f"MODEL: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type) and issubclass(obj, pgm.Model):
        try:
            return obj(**settings)
        except (TypeError, ValueError) as error:
            raise CommandError(f"--set: {spec} does not accept these settings: {error}") from error
    if settings:
        raise CommandError(f"--set: settings apply to registered models and Model classes, not to {spec}")
    if isinstance(obj, pgm.Model) or callable(obj):
        return obj
    raise CommandError(f"MODEL: {spec} is a {type(obj).__name__}, not a pgm.Model or a Pyro program")


def cmd_list(args: argparse.Namespace) -> int:
    import models

    names = models.available()
    width = max(map(len, names), default=0)
    print(f"{'NAME':<{width}}  {'CLASS':<20} {'ENGINE':<10} {'DATA':<14} DESCRIPTION")
    for name in names:
        cls, defaults, doc = models.entry(name)
        preset = models.preset(name)
        engine = preset.engine or "(first)"
        data = "|".join([preset.data or "(its own)", *preset.variants])
        print(f"{name:<{width}}  {cls.__name__:<20} {engine:<10} {data:<14} {doc}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import pgm

    model = resolve_model(args.model, parse_settings(args.set))
    level = "unit" if args.units else "site"
    graph = pgm.graph_of(model, level=level, show_params=args.params, unit_limit=args.unit_limit)
    graph = _chain_view(graph, model, full=args.full_chain)
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


def _chain_view(graph, model, full: bool = False):
    """A model with a long Markov chain (`chain_sites()`, a diffusion model's x_T ... x_1, x) is
    drawn collapsed, x_T -> ... -> x_t -> ... -> x (`GraphicalModel.collapse_chain`), unless
    `full` (`pgm draw --full-chain`) or drawn at unit level."""
    sites = getattr(model, "chain_sites", None)
    if full or not callable(sites) or graph.level != "site":
        return graph
    return graph.collapse_chain(sites())


# ---------------------------------------------------------------------- training runs
RUN_CONFIG = "config.json"
#: Constructor arguments that take the data's dimension when not set explicitly.
DATA_DIM_ARGS = ("x_dim", "v_dim")


def _with_sampler(model, settings: dict[str, Any]) -> dict[str, Any]:
    """Replace `sampler=gibbs|ula|mala` (with `sampler_step_size=`, `sampler_steps=`) by the
    sampler object the engine takes."""
    settings = dict(settings)
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


#: `--engine-set sampler=NAME` for engines that take a Markov chain (contrastive divergence).
SAMPLERS = ("gibbs", "ula", "mala")


def _engine(name: str | None, model, settings: dict[str, Any]):
    from inference.choice import build_engine
    from inference.engine import EngineError

    try:
        return build_engine(name, model, _with_sampler(model, settings))
    except EngineError as error:
        raise CommandError(str(error) if str(error).startswith("--engine") else f"--engine: {error}") from error
    except TypeError as error:
        raise CommandError(f"--engine-set: {name or 'the engine'} does not accept these settings: {error}") from error
    except ValueError as error:
        text = str(error)
        raise CommandError(text if text.startswith("--") else f"--engine-set: {text}") from error


def _load_data(name: str, settings: dict[str, Any], seed: int, data_root: str | None, download: bool):
    import pgm.data

    options: dict[str, Any] = {"seed": seed}
    if data_root:
        options["root"] = data_root
    if download:
        options["download"] = True
    options.update(settings)
    try:
        return pgm.data.load(name, **options)
    except FileNotFoundError as error:
        raise CommandError(f"--data {name}: {error} (give --data-root, or --download)") from error
    except (ValueError, TypeError) as error:
        text = str(error)
        flag = "--data" if text.startswith("name:") else "--data-set"
        raise CommandError(f"{flag}: {text.split(': ', 1)[-1] if flag == '--data' else text}") from error


def _own_data(model, spec: str, seed: int):
    own = getattr(model, "own_data", None)
    data = own(seed=seed) if callable(own) else None
    if data is None:
        raise CommandError(f"--data: {spec} carries no data of its own; name a dataset "
                           f"(one of {', '.join(_datasets())})")
    return data


def _datasets() -> list[str]:
    import pgm.data

    return pgm.data.available()


def _needs_binary(model) -> bool:
    return "discrete" in model.capabilities() and "continuous" not in model.capabilities()


def _build_model(spec: str, settings: dict[str, Any], data_dim: int | None):
    import models

    if ":" not in spec and spec in models.available() and data_dim is not None:
        _, defaults, _ = models.entry(spec)
        for key in DATA_DIM_ARGS:
            if key in defaults and key not in settings:
                settings = {**settings, key: data_dim}
    return resolve_model(spec, settings), settings


def _train_settings(args: argparse.Namespace, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The run's settings: each flag given, else (on resume) the saved run's, else the
    registered model's training preset."""
    import models

    preset = models.preset(args.model) if ":" not in args.model and args.model in models.available() else \
        models.Preset(data=None, epochs=10, batch_size=128)
    saved = saved or {}

    def pick(flag, key, preset_value):
        if flag is not None:
            return flag
        return saved[key] if key in saved else preset_value

    def merged(items, key, preset_value):  # KEY=VALUE flags update the saved or preset settings
        base = saved[key] if key in saved else dict(preset_value)
        return {**base, **parse_settings(items)} if items else base

    data = pick(args.data, "data", preset.data)
    preset = preset.for_data(data)  # the model's settings for that data set, if it has some
    engine = pick(args.engine, "engine", preset.engine)
    # Another engine or data set than the preset's starts from no settings of the preset's.
    engine_base = preset.engine_settings if engine == preset.engine else {}
    data_base = preset.data_settings if data == preset.data else {}
    return {
        "model": args.model,
        "model_settings": merged(args.set, "model_settings", preset.settings),
        "engine": engine,
        "engine_settings": merged(args.engine_set, "engine_settings", engine_base),
        "data": data,
        "data_settings": merged(args.data_set, "data_settings", data_base),
        "data_root": pick(args.data_root, "data_root", None),
        "epochs": pick(args.epochs, "epochs", preset.epochs),
        "batch_size": pick(args.batch_size, "batch_size", preset.batch_size),
        "lr": pick(args.lr, "lr", preset.lr),
        "seed": pick(args.seed, "seed", 0),
    }


def cmd_train(args: argparse.Namespace) -> int:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import pyro

    from inference.fit import fit
    from inference.rundir import RunDirectory

    out = Path(args.out or f"runs/{args.model.replace(':', '_')}")
    run = RunDirectory(out, argument="--out")
    with run.lock():
        saved = run.config() if args.resume else None
        config = _train_settings(args, saved)
        metric_names = _train_metrics(args, config)
        # Refusals first, before anything is loaded or written: an existing run, changed settings.
        run.begin(config, resume=args.resume, overwrite=args.overwrite)
        pyro.set_rng_seed(config["seed"])  # the model's initialisation is part of the seeded run

        # The data (the model's own when none is named), then the model sized to it.
        if config["data"] is None:
            model, model_settings = _build_model(args.model, config["model_settings"], None)
            data = _own_data(model, args.model, config["seed"])
        else:
            data = _load_data(config["data"], config["data_settings"], config["seed"], config["data_root"],
                              args.download)
            model, model_settings = _build_model(args.model, config["model_settings"], math.prod(data.shape))
            if _needs_binary(model) and "binarize" not in config["data_settings"] \
                    and data.info.get("binarized") is False:
                try:  # binary units: binarized data
                    config["data_settings"] = {**config["data_settings"], "binarize": True}
                    data = _load_data(config["data"], config["data_settings"], config["seed"], config["data_root"],
                                      args.download)
                except CommandError:
                    pass  # the dataset cannot binarize: validation reports the problem
        config["model_settings"] = model_settings
        engine_settings = dict(config["engine_settings"])
        if config["lr"] is not None:
            engine_settings["lr"] = config["lr"]

        from inference.choice import trains_greedily

        engine = None  # a greedy layer-wise run has no one engine
        if trains_greedily(model, config["engine"]):
            engine_name = config["engine"] or "cd"
            config["engine"] = engine_name
            history = _pretrain(model, data, engine_name, engine_settings, config, args, run)
        else:
            engine_name, engine = _engine(config["engine"], model, engine_settings)
            config["engine"] = engine_name
            print(f"training {type(model).__name__} with {type(engine).__name__} ({engine_name}) on "
                  f"{config['data'] or 'its own data'} {_shapes(data.train)} -> {out}")
            train = data.train
            if getattr(model, "conditional", False) is True:  # p(x | y): the labels are the program's second argument
                if data.train_labels is None:
                    raise CommandError(f"--data: {type(model).__name__} is conditional and needs labels; "
                                       f"{config['data']} has none")
                train = (data.train, data.train_labels)
            history = fit(engine, train, epochs=config["epochs"], batch_size=config["batch_size"],
                          device=args.device, seed=config["seed"], checkpoint_dir=out, resume=args.resume,
                          overwrite=args.overwrite, run_config=config, progress=not args.quiet,
                          callbacks=_metric_callbacks(args, config, data, metric_names))
        _pictures(model, history, data, out, args.num_samples, engine=engine)
    print(f"done: {len(history)} steps; last metrics {_fmt(history.last())}; run directory {out}")
    return 0


def _train_metrics(args, config) -> list[str]:
    """The metrics of ``--metric-every`` (checked before the run directory is touched): the
    ``--metric`` flags, else FD and KID for images and MMD (+ mode coverage) for 2D toys."""
    if args.metric_every is None:
        return []
    if args.metric_every < 1:
        raise CommandError(f"--metric-every: expected a positive number of steps, got {args.metric_every}")
    if args.metric_samples < 2:
        raise CommandError(f"--metric-samples: expected at least 2 samples, got {args.metric_samples}")
    from pgm.data import TOYS
    from inference.metrics import RECIPES, TOY_MODES

    name = config["data"]
    if name not in RECIPES and name not in TOYS:
        raise CommandError(f"--metric-every: no sample-quality metrics for data {name!r} "
                           f"(the 2D toys and {', '.join(RECIPES)} have them)")
    names = args.train_metric or (["fd", "kid"] if name in RECIPES else ["mmd"] + (["modes"] if name in TOY_MODES else []))
    if name in TOYS and "is" in names:
        raise CommandError(f"--metric: 'is' needs a classifier; the 2D toy {name!r} has none")
    if "modes" in names and name not in TOY_MODES:
        raise CommandError(f"--metric: 'modes' needs known mixture centres; {name!r} has none")
    return names


def _metric_callbacks(args, config, data, names: list[str]) -> list:
    """With ``--metric-every N``: sample-quality metrics (`inference.metrics.metrics_callback`) of
    ``--metric-samples`` draws against the validation split every N steps, into the history
    (``metric/<name>`` columns) and so into loss.png."""
    if not names:
        return []
    from inference.metrics import metrics_callback

    reference = data.valid if data.valid is not None and len(data.valid) >= 2 else data.test
    return [metrics_callback(reference.reshape(len(reference), -1).cpu(), every=args.metric_every,
                             num_samples=args.metric_samples, metrics=names, dataset=config["data"],
                             seed=config["seed"])]


def _pictures(model, history, data, out: Path, num_samples: int, engine=None) -> None:
    """The run directory's pictures: the loss curve, the model's graph and a grid of samples."""
    import math

    import pgm

    if len(history):
        history.plot(out / "loss.png")
    train = data.train[0] if isinstance(data.train, tuple) and getattr(model, "conditional", False) is True else (
        data.train[-1] if isinstance(data.train, tuple) else data.train)
    _chain_view(pgm.graph_of(model, data_size=len(train)), model).draw(out / "graph.png", title=type(model).__name__)
    dim = math.prod(train.shape[1:])
    n = max(num_samples, 1000) if dim == 2 else min(num_samples, 256)
    _write_samples(model, n, out / "samples.png", data=train, engine=engine)


def _pretrain(model, data, engine_name: str, settings: dict[str, Any], config: dict, args, run):
    """Greedy layer-wise training (`model.pretrain`, a DBN): one CD run per layer; the last
    layer's history is the run's, each layer's is saved beside it; the model is checkpointed at
    the end (no mid-run resume)."""
    from inference.checkpoint import CHECKPOINT_NAME, save_checkpoint
    from inference.fit import resolve_device

    if args.resume:
        raise CommandError(f"--resume: greedy layer-wise training of {type(model).__name__} cannot resume; "
                           "start again with --overwrite")
    model.to(resolve_device(args.device))
    train = data.train
    run.commit(config, overwrite=args.overwrite)
    print(f"training {type(model).__name__} greedily, layer by layer, by contrastive divergence ({engine_name}) "
          f"on {config['data']} {_shapes(train)} -> {run.path}")
    histories = model.pretrain(train, epochs=config["epochs"], batch_size=config["batch_size"],
                               persistent=engine_name == "pcd", seed=config["seed"], progress=not args.quiet,
                               **settings)
    for i, layer_history in enumerate(histories):
        layer_history.save(run.path / f"history_layer{i}.json")
    histories[-1].save(run.path / "history.json")
    save_checkpoint(run.path / CHECKPOINT_NAME, {"model": model.state_dict(), "engine_name": engine_name,
                                                 "step": sum(len(h) for h in histories)})
    return histories[-1]


def _shapes(data) -> str:
    return ", ".join(str(tuple(t.shape)) for t in data) if isinstance(data, tuple) else str(tuple(data.shape))


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items() if v is not None)


def _write_samples(model, n: int, path: Path, data=None, engine=None, **options) -> Path:
    import torch

    from inference.sampling import draw
    from pgm import pictures

    x = draw(model, n, engine=engine, mean=True, start=data, **options).detach().cpu()
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 2:
        pictures.scatter_2d(flat, path, data=None if data is None else data[:2000].cpu())
        if "energy" in model.capabilities() and "continuous" in model.capabilities():
            pictures.energy_2d(model.energy, path.with_name(path.stem + "_density.png"), dtype=model.dtype,
                               device=model.device)
    elif pictures.image_shape(flat.shape[1]) is not None or x.dim() >= 3:
        pictures.image_grid(x[:64] if x.dim() >= 3 else flat[:64], path)
    else:
        path = path.with_suffix(".pt")
        torch.save(x, path)
    return path


def _load_run(run: str, model_spec: str | None = None, device: str = "cpu"):
    """`(config, model, engine, data)` of a run directory. The model is built from the registry,
    or from `model_spec` (a module the user names on the command line): never from a module a
    run's config names, and never with the current folder put on the import path for it."""
    import models
    from inference.checkpoint import load_latest
    from inference.rundir import RunDirectory

    folder = Path(run)
    directory = RunDirectory(folder, argument="RUN")
    config = directory.config()
    if config is None:
        raise CommandError(f"RUN: {folder} is not a run directory (no {RUN_CONFIG}); train one with `pgm train`")
    spec = config.get("model")
    if not isinstance(spec, str) or not isinstance(config.get("model_settings", {}), dict):
        raise CommandError(f"RUN: {folder / RUN_CONFIG} names no model")
    if ":" in spec or spec not in models.available():
        if model_spec is None:
            raise CommandError(
                f"RUN: {folder} holds a model from outside the registry ({spec!r}); pgm does not import code "
                f"that a run's config names: name it yourself with --model MODULE:ATTR"
            )
        if ":" not in model_spec:
            raise CommandError(f"--model: expected MODULE:ATTR, got {model_spec!r}")
        spec = model_spec
    elif model_spec is not None and model_spec != spec:
        raise CommandError(f"--model: {folder} holds a run of {spec!r}, not {model_spec!r}")
    model = resolve_model(spec, config.get("model_settings") or {}, import_path=False)
    loaded = load_latest(folder)
    if loaded is None:
        raise CommandError(f"RUN: {folder} has no checkpoint: the run did not finish a step")
    state, _ = loaded
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as error:
        raise CommandError(f"RUN: the checkpoint in {folder} does not fit {spec} with its saved settings: "
                           f"{str(error).splitlines()[0]}") from error
    engine = None
    if state.get("engine") is not None and config.get("engine"):
        try:
            _, engine = _engine(config["engine"], model, dict(config.get("engine_settings") or {}))
            engine.load_state_dict(state["engine"])
        except Exception:  # noqa: BLE001 - the engine only serves a posterior; sampling works without it
            engine = None
    return config, model, engine


def _data_of(config: dict, model, data_root: str | None = None):
    seed = config.get("seed") or 0
    if config.get("data") is None:
        return _own_data(model, config["model"], seed)
    return _load_data(config["data"], config.get("data_settings") or {}, seed,
                      data_root or config.get("data_root"), False)


def cmd_sample(args: argparse.Namespace) -> int:
    import matplotlib
    import torch

    from inference.sampling import draw

    matplotlib.use("Agg")
    config, model, engine = _load_run(args.run, args.model)
    if args.seed is not None:
        import pyro

        pyro.set_rng_seed(args.seed)
    if args.complete is not None:
        return _complete(args, config, model)
    start = None
    if "sample" not in model.capabilities():  # Markov chains start from distinct data points
        try:
            start = _data_of(config, model).train
        except CommandError:
            start = None
    out = Path(args.output)
    if out.suffix.lower() in (".pt", ".pth"):
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(draw(model, args.num, engine=engine, start=start, **_sample_options(args)).detach().cpu(), out)
    else:
        out = _write_samples(model, args.num, out, data=start, engine=engine, **_sample_options(args))
    print(f"{args.num} samples of {config['model']} -> {out}")
    return 0


def _sample_options(args) -> dict:
    """The sampler options given on the command line (a diffusion model's steps, eta, guidance, label)."""
    names = ("steps", "eta", "guidance", "label", "spacing")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _read_images(path: Path, shape) -> "torch.Tensor":
    """Images to complete: a .pt tensor (N, ...) or a picture file (one grey image, values in [0, 1])."""
    import math

    import torch

    if not path.is_file():
        raise CommandError(f"--complete: no file at {path}")
    if path.suffix.lower() in (".pt", ".pth"):
        x = torch.load(path, weights_only=True)
        if not torch.is_tensor(x):
            raise CommandError(f"--complete: {path} holds a {type(x).__name__}, not a tensor")
    else:
        import matplotlib.image

        try:
            array = matplotlib.image.imread(path)
        except (OSError, ValueError, SyntaxError) as error:
            raise CommandError(f"--complete: {path} cannot be read as a picture ({error})") from error
        x = torch.as_tensor(array, dtype=torch.float32)
        if x.dim() == 3:  # RGB(A) -> grey
            x = x[..., :3].mean(-1)
        x = (x / x.max().clamp(min=1e-8)).unsqueeze(0)
    size = math.prod(shape)
    if x.dim() >= 1 and x[0].numel() == size:
        return x.reshape(-1, *shape)
    if x.numel() == size:
        return x.reshape(1, *shape)
    raise CommandError(f"--complete: {path} has shape {tuple(x.shape)}; the model's data are {tuple(shape)} per image")


def _complete(args, config, model) -> int:
    """Fill the unobserved part (`--mask`) of the given images from the model's conditional."""
    import torch

    from pgm import pictures

    if not callable(getattr(model, "complete", None)):
        raise CommandError(f"--complete: {config['model']} cannot complete images (it has no exact conditional); "
                           "autoregressive models can")
    shape = tuple(getattr(model, "event_shape", ()))
    x = _read_images(Path(args.complete), shape).to(device=model.device, dtype=model.dtype)
    if "discrete" in model.capabilities():
        x = (x >= 0.5).to(x.dtype)
    rows = []
    with torch.no_grad():
        for _ in range(max(args.num // max(len(x), 1), 1)):
            try:
                rows.append(model.complete(x, args.mask))
            except ValueError as error:
                raise CommandError(f"--mask: {' '.join(str(error).split())}") from error
    filled = torch.cat([x, *rows]).detach().cpu()
    out = Path(args.output)
    if out.suffix.lower() in (".pt", ".pth"):
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(filled, out)
    else:
        pictures.image_grid(filled.reshape(len(filled), -1)[:64], out, nrow=len(x) if len(x) <= 16 else None)
    print(f"{len(filled) - len(x)} completions of {len(x)} image(s) with the {args.mask} observed -> {out} "
          "(first row: the given images)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import contextlib
    import math

    from inference import evaluate
    from inference.choice import default_eval_method

    if args.limit is not None and args.limit < 1:
        raise CommandError(f"--limit: expected a positive number of test points, got {args.limit}")
    if args.num_samples < 1:
        raise CommandError(f"--num-samples: expected a positive number, got {args.num_samples}")
    config, model, engine = _load_run(args.run, args.model)
    data = _data_of(config, model, args.data_root)
    if args.metric:
        return _eval_metrics(args, config, model, engine, data)
    test = data.test[: args.limit] if args.limit else data.test
    test = test.reshape(test.shape[0], -1) if test.dim() > 2 else test
    if args.method is None:
        try:
            method, why = default_eval_method(model)
        except ValueError as error:
            raise CommandError(f"--method: {error}") from error
        print(f"method: {method} ({why}); --method overrides")
    else:
        method = args.method
    extra = {}
    if method == "ais":  # the AIS base distribution is fitted to the training data
        train = data.train
        extra["base_data"] = train.reshape(train.shape[0], -1) if train.dim() > 2 else train
    averaged = getattr(engine, "averaged", None)  # a moving average of the weights (diffusion) is what is evaluated
    try:
        with averaged() if callable(averaged) else contextlib.nullcontext():
            ll = evaluate.log_likelihood(model, test, method=method, num_samples=args.num_samples, **extra)
    except (ValueError, TypeError, NotImplementedError) as error:
        raise CommandError(f"--method {method}: {str(error).splitlines()[0]}") from error
    nll = -float(ll.mean())
    dims = math.prod(test.shape[1:])
    result = {"method": method, "num_samples": None if method == "elbo" else args.num_samples, "test_size": test.shape[0],
              "nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2))}
    from inference.checkpoint import save_json

    save_json(Path(args.run) / "eval.json", result)
    print(f"{config['model']} on {config.get('data') or 'its own data'} test ({test.shape[0]}): NLL {nll:.3f} nats "
          f"({result['bits_per_dim']:.4f} bits/dim) by {method}")
    return 0


def _eval_metrics(args, config, model, engine, data) -> int:
    """Sample-quality metrics of the run's samples against the test split (`inference.metrics`)."""
    from inference.checkpoint import save_json
    from inference.metrics import evaluate_samples
    from inference.sampling import draw

    test = data.test[: args.limit] if args.limit else data.test
    n = args.num_draws
    samples = draw(model, n, engine=engine, start=data.train).detach().cpu()
    try:
        result = evaluate_samples(samples.reshape(n, -1), test.reshape(len(test), -1).cpu(), args.metric,
                                  dataset=config.get("data") or "digits")
    except ValueError as error:
        raise CommandError(f"--metric: {error}") from error
    result = {"samples": n, "test_size": len(test), **result}
    save_json(Path(args.run) / "eval_metrics.json", result)
    print(f"{config['model']} on {config.get('data')} test ({len(test)}), {n} samples: "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgm", description="Declarative deep generative models on Pyro: draw, train, sample, evaluate."
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
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
    p.add_argument("--full-chain", action="store_true",
                   help="draw a diffusion model's chain in full (default: collapsed, x_T -> ... -> x_t -> ... -> x)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor setting (repeatable)")
    p.set_defaults(func=cmd_draw)

    p = sub.add_parser(
        "train", help="train a model with an inference engine; writes a run directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train MODEL into a run directory (config.json, checkpoint.pt, history.json, loss.png, "
                    "graph.png, samples.png). Flags not given take the model's training preset (see `pgm list`), "
                    "or on --resume the saved run's settings.",
        epilog=_train_epilog())
    p.add_argument("model", metavar="MODEL", help="a registered name (see `pgm list`) or module:Class / module:function")
    p.add_argument("--engine", default=None, help="an engine name (below); default: the model's preset, else the first that applies")
    p.add_argument("--data", default=None, help="a dataset (below); default: the model's preset or its own data")
    p.add_argument("--epochs", type=int, default=None, help="epochs in all (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="rows per step (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's, else the engine's)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the model's initialisation, the data split and training (default 0; on --resume the saved one)")
    p.add_argument("--out", default=None, help="run directory (default: runs/MODEL)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    group.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor setting (repeatable)")
    p.add_argument("--engine-set", action="append", metavar="KEY=VALUE", help="engine setting (repeatable)")
    p.add_argument("--data-set", action="append", metavar="KEY=VALUE", help="pgm.data.load option (repeatable)")
    p.add_argument("--data-root", default=None, help="folder of dataset files (MNIST, binarized MNIST)")
    p.add_argument("--download", action="store_true", help="download missing dataset files")
    p.add_argument("--num-samples", type=int, default=64, help="samples drawn for the picture at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metric-every", type=int, default=None, metavar="N",
                   help="every N steps, sample-quality metrics against the validation split into the history and loss.png")
    p.add_argument("--metric", dest="train_metric", action="append", default=None,
                   choices=("fd", "kid", "is", "pr", "mmd", "parzen", "modes"),
                   help="with --metric-every: the metric(s) (default: fd, kid for images; mmd (+ modes) for 2D toys)")
    p.add_argument("--metric-samples", type=int, default=1000, help="with --metric-every: samples drawn each time")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run", metavar="RUN", help="a run directory written by `pgm train`")
    p.add_argument("--model", default=None, metavar="MODULE:ATTR",
                   help="the model of a run trained from your own module (never imported from the run's config)")
    p.add_argument("-n", "--num", type=int, default=64)
    p.add_argument("--complete", default=None, metavar="IMAGE_FILE",
                   help="complete these images (.pt tensor or picture) instead of sampling afresh (autoregressive models)")
    p.add_argument("--mask", default="top", help="with --complete: the observed part (top, bottom, left, right, first, last)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (a diffusion model: DDIM with this many steps)")
    p.add_argument("--eta", type=float, default=None, help="DDIM's eta (0: deterministic, 1: ancestral)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w (conditional models)")
    p.add_argument("--label", type=int, default=None, help="the class to sample (conditional models)")
    p.add_argument("--spacing", default=None, help="DDIM time-step spacing (trailing, leading, linspace)")
    p.add_argument("-o", "--output", required=True, help=".png/.svg/.pdf picture, or .pt tensor")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="evaluate a trained run's test log-likelihood")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--model", default=None, metavar="MODULE:ATTR",
                   help="the model of a run trained from your own module (never imported from the run's config)")
    p.add_argument("--method", default=None, help="iwae, exact, ais or elbo (default: one that applies, and it says which)")
    p.add_argument("--num-samples", type=int, default=100, help="importance samples (iwae) or chains (ais)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test points only")
    p.add_argument("--metric", action="append", default=None, choices=("fd", "kid", "is", "pr", "mmd", "parzen", "modes"),
                   help="sample-quality metric(s) of the run's samples instead of the log-likelihood (repeatable)")
    p.add_argument("--num-draws", type=int, default=1000, help="samples drawn for --metric")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=cmd_eval)
    return parser


def _train_epilog() -> str:
    import inference
    from inference.choice import ENGINE_PRESETS

    inference.load_engines()  # engines register their command-line names on import

    import pgm.data

    engines = ", ".join(ENGINE_PRESETS)
    return (f"engines: {engines}\n"
            f"datasets: {', '.join(pgm.data.available())}\n"
            "defaults per model (engine, data): `pgm list`\n"
            "a run directory holding a checkpoint is continued only with --resume and replaced only with --overwrite")


#: Exceptions that are the user's input (exit 2) rather than a failure of training (exit 1).
def _usage_errors() -> tuple[type, ...]:
    import json

    from inference.engine import EngineError
    from pgm.program import ProgramError

    return (CommandError, ValueError, TypeError, KeyError, FileNotFoundError, json.JSONDecodeError, EngineError,
            ProgramError)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"pgm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line per failure; --debug shows the traceback
        if debug:
            raise
        from inference.checkpoint import CheckpointError
        from inference.engine import NonFiniteLossError

        training = isinstance(error, (NonFiniteLossError, CheckpointError))
        status = 2 if isinstance(error, _usage_errors()) and not training else 1
        text = " ".join(str(error).split()) or type(error).__name__
        if status == 1 and not training:
            text = f"{type(error).__name__}: {text}"
        print(f"pgm {args.command}: error: {text} (--debug shows the traceback)", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
