"""`fit`: the one training loop, for every engine.

>>> import torch, pyro, pyro.distributions as dist, pgm
>>> from inference.maximum_likelihood import MaximumLikelihood
>>> class Coin(pgm.Model):
...     def __init__(self):
...         super().__init__()
...         self.logit = torch.nn.Parameter(torch.zeros(()))
...     def model(self, x):
...         with pyro.plate("data", x.shape[0]):
...             pyro.sample("x", dist.Bernoulli(logits=self.logit), obs=x)
...     def example_inputs(self, batch_size=2):
...         return (torch.zeros(batch_size),)
>>> coin = Coin()
>>> history = fit(MaximumLikelihood(coin, lr=0.1), torch.tensor([1.0, 1.0, 1.0, 0.0]),
...               epochs=200, seed=0, progress=False)
>>> round(torch.sigmoid(coin.logit).item(), 2)
0.75
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable

import pyro
import torch
from tqdm.auto import tqdm

from inference import distributed
from inference.checkpoint import (
    CHECKPOINT_NAME,
    HISTORY_NAME,
    CheckpointError,
    get_rng_state,
    load_latest,
    save_checkpoint,
    set_rng_state,
)
from inference.engine import Engine, NonFiniteLossError
from inference.history import History
from inference.rundir import RunDirectory, as_json

__all__ = ["fit", "resolve_device"]

#: Bumped when the checkpoint layout changes.
CHECKPOINT_FORMAT = 1


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when available, else the CPU; otherwise `device` itself,
    checked to exist."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r}: CUDA is not available here (torch.cuda.is_available() is False); "
                "use device='auto' or 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def fit(
    engine: Engine,
    data: Any,
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    device: str | torch.device | None = "auto",
    seed: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    run_config: dict[str, Any] | None = None,
    progress: bool = True,
    callbacks: Callable | Iterable[Callable] = (),
    validate: bool = True,
    max_steps: int | None = None,
) -> History:
    """Train `engine` on `data` and return the metrics `History`.

    - `data`: a tensor ``(N, ...)``, a tuple of tensors with the same first dimension (the
      program's positional arguments), or a dataset with ``.train`` (`pgm.data.Dataset`).
      Floating tensors are cast to the model's dtype and moved, with the model and the engine's
      state, to `device` (``"auto"``: CUDA when available, else the CPU).
    - Each epoch visits the data in a fresh order drawn from ``(seed, epoch)``, `batch_size`
      rows a step (per process when distributed); ``batch_size=None`` feeds all the data (in
      its own order) every step. `max_steps` stops after that many steps in all.
    - `validate`: reject bad data (`engine.validate`: NaN, shapes, support) before any step.
    - `seed` (an integer in [0, 2**32)) seeds torch, numpy, Python and so Pyro
      (`pyro.set_rng_seed`) at the start, which fixes the data order and every random draw of
      training. It does not cover the model's initialisation, which happened when the model
      was built: seed before building it (`pyro.set_rng_seed(seed)`, as `pgm train --seed`
      does) for a run that is reproducible bit for bit.
    - `checkpoint_dir`: a run directory (`inference.rundir`): fit holds its lock while it
      trains, writes ``config.json`` (`run_config` plus fit's own settings) once every check
      has passed, and a checksummed checkpoint (model, engine and optimiser state, counters,
      history, RNG states) atomically every `checkpoint_every` steps (default: at the end of
      each epoch) and when training ends, keeping the previous one, with the history as JSON
      beside it. A folder that holds a checkpoint is continued only with ``resume=True`` and
      replaced only with ``overwrite=True``. ``resume=True`` continues exactly (same parameters
      as an uninterrupted run; the data order follows the checkpoint's seed); a changed
      learning rate, epochs, batch size or checkpoint frequency takes effect and is recorded,
      while another model, engine kind or data set is refused with the differences listed.
    - A non-finite loss raises `NonFiniteLossError` naming the step and the last good
      checkpoint; nothing is written after it, and the model and engine are restored to their
      last good state (that of the last checkpoint, or of the start of the epoch without one).
    - `callbacks`: each is called after every step with a namespace (``step``, ``epoch``,
      ``batch``, ``metrics``, ``engine``, ``history``); returning ``"stop"`` ends training
      (with a checkpoint).
    - Engines with ``iterative = False`` (MCMC) `run` once on the whole data instead.
    - Under ``torchrun`` training is data parallel (see `inference.distributed`): parameters
      are broadcast from rank 0, each rank takes its shard of every epoch, gradients are
      averaged, and only rank 0 writes checkpoints and shows progress. Every rank must build
      the same engine.
    """
    _check_arguments(engine, epochs, batch_size, checkpoint_every, max_steps, resume, overwrite, checkpoint_dir, seed,
                     run_config)
    callbacks = _check_callbacks(callbacks)
    args, single = _as_data(data)
    device = resolve_device(device)
    device = distributed.setup(device)
    is_main = distributed.rank() == 0
    run = RunDirectory(checkpoint_dir) if checkpoint_dir is not None else None
    holding = run.lock() if run is not None and is_main else contextlib.nullcontext()
    with holding:
        return _fit(engine, args, single, device, is_main, run, epochs=epochs, batch_size=batch_size, seed=seed,
                    checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite, run_config=run_config,
                    progress=progress, callbacks=callbacks, validate=validate, max_steps=max_steps)


def _fit(engine, args, single, device, is_main, run, *, epochs, batch_size, seed, checkpoint_every, resume, overwrite,
         run_config, progress, callbacks, validate, max_steps) -> History:
    config = None
    if run is not None:  # every check first; nothing is written before they pass
        fingerprint = _fingerprint(engine, args)
        config = run.begin({**(run_config or {}), "fit": {
            **fingerprint, "lr": _configured_lr(engine), "epochs": epochs, "batch_size": batch_size,
            "checkpoint_every": checkpoint_every, "max_steps": max_steps}}, resume=resume, overwrite=overwrite)

    engine.to(device)
    dtype = getattr(engine.model, "dtype", torch.get_default_dtype())
    args = tuple(a.to(device=device, dtype=dtype if a.is_floating_point() else None) for a in args)
    whole = args[0] if single else args

    if validate:
        state = get_rng_state()  # validation traces the program: keep the training RNG untouched
        try:
            engine.validate(whole)
        finally:
            set_rng_state(state)

    checkpoint, found = None, None
    if run is not None and resume:
        loaded = load_latest(run.path)
        if loaded is None:
            warnings.warn(f"resume=True but {run.path} holds no checkpoint ({CHECKPOINT_NAME}): starting afresh")
        else:
            checkpoint, found = loaded
            if checkpoint.get("engine_name", engine.name) != engine.name:
                raise ValueError(
                    f"resume: {found} was written by engine {checkpoint['engine_name']!r}, not {engine.name!r}"
                )
            _rescale_learning_rates(checkpoint, config)
    if seed is not None:
        pyro.set_rng_seed(seed)
    if run is not None and is_main:
        run.commit(config, overwrite=overwrite and not resume)

    if not engine.iterative:
        return _run_once(engine, whole, epochs, batch_size, max_steps, progress and is_main, run, checkpoint)

    loop = _Loop(engine, args, single, device, batch_size, epochs, max_steps, run.path if run else None,
                 checkpoint_every, callbacks, progress and is_main, seed)
    loop.start(checkpoint, found)
    return loop.run()


def _fingerprint(engine: Engine, args: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    """What a resumed run must share with the saved one: the model (class and parameter
    shapes), the engine (kind and the layout of its state: persistent chains or not) and the
    data (shapes, dtypes and a SHA-256 digest of the values)."""
    digest = hashlib.sha256()
    for a in args:
        digest.update(a.detach().cpu().contiguous().numpy().tobytes() if a.dtype != torch.bfloat16
                      else a.detach().float().cpu().numpy().tobytes())
    model = engine.model
    return {
        "model": type(model).__name__,
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
        "engine": engine.name,
        "engine_class": type(engine).__name__,
        "engine_state": sorted(engine.state_dict()),
        "engine_kind": as_json(engine.signature()),
        "data": {"shapes": [list(a.shape) for a in args], "dtypes": [str(a.dtype) for a in args],
                 "sha256": digest.hexdigest()},
    }


def _optimizers(engine: Engine) -> list[torch.optim.Optimizer]:
    return [v for v in vars(engine).values() if isinstance(v, torch.optim.Optimizer)]


def _configured_lr(engine: Engine) -> float | None:
    """The learning rate the engine was built with (`engine.lr`, else its first optimiser's)."""
    lr = getattr(engine, "lr", None)
    if isinstance(lr, (int, float)) and not isinstance(lr, bool):
        return float(lr)
    for optimizer in _optimizers(engine):
        return float(optimizer.param_groups[0]["lr"])
    return None


def _rescale_learning_rates(checkpoint: dict, config: dict | None) -> None:
    """A resumed run with another learning rate: scale every learning rate in the saved
    optimiser and scheduler states by new / old, so the new rate takes effect (loading an
    optimiser's state would otherwise bring the old rate back)."""
    if config is None:
        return
    changes = (config.get("resumed") or [{}])[-1].get("fit.lr")
    if not changes or None in changes or not changes[0]:
        return
    ratio = changes[1] / changes[0]

    def visit(obj):
        if isinstance(obj, dict):
            if "param_groups" in obj and isinstance(obj["param_groups"], list):
                for group in obj["param_groups"]:
                    for key in ("lr", "initial_lr"):
                        if isinstance(group.get(key), (int, float)):
                            group[key] = group[key] * ratio
            if "base_lrs" in obj and isinstance(obj["base_lrs"], list):
                obj["base_lrs"] = [lr * ratio for lr in obj["base_lrs"]]
            if "_last_lr" in obj and isinstance(obj["_last_lr"], list):
                obj["_last_lr"] = [lr * ratio for lr in obj["_last_lr"]]
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    visit(checkpoint.get("engine"))


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


class _Loop:
    def __init__(self, engine, args, single, device, batch_size, epochs, max_steps, checkpoint_dir,
                 checkpoint_every, callbacks, progress, seed):
        self.engine, self.args, self.single, self.device = engine, args, single, device
        self.batch_size, self.epochs, self.max_steps = batch_size, epochs, max_steps
        self.dir, self.every, self.callbacks, self.progress = checkpoint_dir, checkpoint_every, callbacks, progress
        self.seed = seed
        self.n = args[0].shape[0]
        self.world = distributed.world_size()
        self.is_main = distributed.rank() == 0
        self.whole_data = batch_size is None and self.world == 1  # every step sees all the data, as given
        per_rank = self.n if self.world == 1 else -(-self.n // self.world)
        self.step_size = per_rank if batch_size is None else min(batch_size, per_rank)
        self.n_batches = -(-per_rank // self.step_size)
        self.history = History()
        self.step = self.epoch = self.batch = 0
        self.saved_step: int | None = None  # the step of the checkpoint on disk written by this run
        self.rng_state = None
        self.good: dict | None = None  # the last good state in memory (that of the last checkpoint)

    # ------------------------------------------------------------------ start or resume
    def start(self, checkpoint: dict | None, path: Path | None) -> None:
        engine = self.engine
        if self.world > 1:
            # The same data order on every rank, and the same starting parameters (as DDP).
            seed = self.seed if self.seed is not None else _draw_seed()
            self.data_seed = distributed.broadcast_object(seed)
            distributed.broadcast_parameters(engine.model)
            own = {id(p) for p in engine.model.parameters()}
            distributed.broadcast_parameters([p for p in engine.parameters() if id(p) not in own])
        else:
            self.data_seed = self.seed if self.seed is not None else _draw_seed()
        if checkpoint is None:
            self._remember()
            return
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {path} has checkpoint format {checkpoint.get('format')}, expected {CHECKPOINT_FORMAT}")
        if checkpoint["batch"] != 0:  # mid-epoch: the batches must be cut the same way
            then = {k: checkpoint[k] for k in ("n", "batch_size", "world_size")}
            now = {"n": self.n, "batch_size": self.batch_size, "world_size": self.world}
            if then != now:
                changed = ", ".join(f"{k} {then[k]} -> {now[k]}" for k in then if then[k] != now[k])
                raise ValueError(
                    f"resume: {path} stopped in the middle of epoch {checkpoint['epoch']} with other data "
                    f"settings ({changed}); resume with the same data, batch_size and number of processes"
                )
        self._load(checkpoint)
        self.history = History.from_dict(checkpoint["history"])
        self.step, self.epoch, self.batch = checkpoint["step"], checkpoint["epoch"], checkpoint["batch"]
        self.data_seed = checkpoint["data_seed"]
        self.saved_step = self.step
        self.rng_state = checkpoint["rng_state"]  # restored right before the first step
        self._remember()

    def _load(self, checkpoint: dict) -> None:
        self.engine.model.load_state_dict(checkpoint["model"])
        self.engine.load_state_dict(checkpoint["engine"])
        self.engine.to(self.device)

    # ------------------------------------------------------------------ the steps
    def run(self) -> History:
        engine = self.engine
        total = self.epochs * self.n_batches
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        bar = tqdm(total=total, initial=min(self.step, total), disable=not self.progress, desc=f"fit {engine.name}",
                   dynamic_ncols=True, leave=True)
        running, count = 0.0, 0
        stop = False
        if self.rng_state is not None:
            set_rng_state(self.rng_state)
        try:
            while self.epoch < self.epochs and not stop:
                order = None if self.whole_data else self._order(self.epoch)
                while True:
                    if self.max_steps is not None and self.step >= self.max_steps:
                        stop = True
                        break
                    metrics = self._step(self._batch(order, self.batch))
                    self.step += 1
                    self.history.log_step(self.step, self.epoch, metrics)
                    running, count = running + float(metrics["loss"]), count + 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{running / count:.4g}", refresh=False)
                    stop = self._callbacks(metrics)
                    self.batch += 1
                    end = self.batch == self.n_batches
                    if end:
                        self._end_epoch()
                        running, count = 0.0, 0
                    if (self.step % self.every == 0) if self.every is not None else end:
                        self._save()
                    if end or stop:
                        break
            self._save()
        finally:
            bar.close()
        distributed.barrier()
        return self.history

    def _order(self, epoch: int) -> torch.Tensor:
        return distributed.shard(self.n, self.data_seed, epoch).to(self.device)

    def _batch(self, order: torch.Tensor | None, b: int):
        if order is None:
            rows = self.args
        else:
            index = order[b * self.step_size : (b + 1) * self.step_size]
            rows = tuple(a.index_select(0, index) for a in self.args)
        return rows[0] if self.single else rows

    def _step(self, batch) -> dict[str, float]:
        try:
            metrics = self.engine.step(batch)
        except NonFiniteLossError as error:
            self._fail(error)
        except Exception as error:  # noqa: BLE001 - e.g. a distribution refusing an infinite scale
            # The data passed validation on this program, so a distribution refusing its
            # parameters now ("found invalid values": inf, NaN) means training has diverged.
            if _finite(self.engine) and "found invalid values" not in str(error):
                raise
            self._fail(NonFiniteLossError(
                f"the parameters diverged: {' '.join(str(error).split('Trace Shapes')[0].split())[:240]}"))
        if not isinstance(metrics, dict) or "loss" not in metrics:
            raise TypeError(f"{type(self.engine).__name__}.step must return a dict of metrics with 'loss', got {metrics!r}")
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            self._fail(NonFiniteLossError(f"{type(self.engine).__name__}.step returned loss {loss}"))
        return metrics

    def _callbacks(self, metrics: dict) -> bool:
        if not self.callbacks:
            return False
        info = SimpleNamespace(step=self.step, epoch=self.epoch, batch=self.batch, metrics=metrics,
                               engine=self.engine, history=self.history)
        stop = False
        for callback in self.callbacks:
            stop = (callback(info) == "stop") or stop
        if self.world > 1:  # one rank stopping stops them all
            stop = distributed.all_reduce_mean({"stop": float(stop)}, self.device)["stop"] > 0
        return stop

    def _end_epoch(self) -> None:
        means = distributed.all_reduce_mean(self.history.epoch_means(self.epoch), self.device)
        self.history.log_epoch(self.epoch, self.step, means)
        self.epoch += 1
        self.batch = 0

    # ------------------------------------------------------------------ checkpoints
    @property
    def path(self) -> Path | None:
        return self.dir / CHECKPOINT_NAME if self.dir is not None else None

    def _remember(self) -> None:
        """Keep the current model and engine state in memory: the state a non-finite loss
        restores (the same as the checkpoint on disk, or the last epoch's without one)."""
        self.good = _clone_state({"model": self.engine.model.state_dict(), "engine": self.engine.state_dict(),
                                  "step": self.step})

    def _save(self) -> None:
        if self.saved_step == self.step:
            return
        self._remember()
        if self.dir is None or not self.is_main:
            self.saved_step = self.step
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "engine_name": self.engine.name,
            "model": self.engine.model.state_dict(),
            "engine": self.engine.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "n": self.n,
            "batch_size": self.batch_size,
            "world_size": self.world,
            "data_seed": self.data_seed,
            "history": self.history.to_dict(),
            "rng_state": get_rng_state(),
        }
        _write(self.dir, state, self.history, self.step, self.saved_step)
        self.saved_step = self.step

    def _fail(self, error: NonFiniteLossError):
        where = f"step {self.step + 1} (epoch {self.epoch}, batch {self.batch})"
        good_step = self.good["step"] if self.good is not None else None
        if self.good is not None:
            self.engine.model.load_state_dict(self.good["model"])
            self.engine.load_state_dict(copy.deepcopy(self.good["engine"]))
            self.engine.to(self.device)
        restored = f" The model and engine were restored to their last good state (step {good_step})."
        found = self.dir / CHECKPOINT_NAME if self.dir is not None and self.saved_step is not None else None
        if found is not None and found.is_file():
            kept = f"The last good checkpoint is {found} (step {self.saved_step}); nothing was written after it."
        else:
            kept = f"No checkpoint was written (checkpoint_dir={str(self.dir) if self.dir else None})."
        raise NonFiniteLossError(
            f"training stopped: non-finite loss at {where}: {error}. {kept}{restored} Lower the learning rate "
            "or check the data and the model, then continue with resume=True (--resume --lr ...)."
        ) from error


def _clone_state(obj):
    """A deep copy of a state dict: tensors cloned, containers rebuilt (a module state dict keeps
    its `_metadata`), anything else through `copy.deepcopy`. Several times faster than
    `copy.deepcopy` on tensors, which `_remember` runs every epoch."""
    if torch.is_tensor(obj):
        return obj.detach().clone()
    if isinstance(obj, dict):
        out = type(obj)((k, _clone_state(v)) for k, v in obj.items()) if type(obj) in (dict, OrderedDict) else copy.deepcopy(obj)
        if hasattr(obj, "_metadata"):
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_clone_state(v) for v in obj)
    return copy.deepcopy(obj)


def _write(folder: Path, state: dict, history: History, step: int, saved_step: int | None) -> None:
    """Save a checkpoint (keeping the previous one) and the history; a failing write (a full
    disk) keeps the last good checkpoint and says so."""
    try:
        save_checkpoint(folder / CHECKPOINT_NAME, state, keep_previous=True)
        history.save(folder / HISTORY_NAME)
    except OSError as error:
        kept = (f"the last good checkpoint (step {saved_step}) is kept in {folder}" if saved_step is not None
                else "no checkpoint was written")
        raise CheckpointError(
            f"could not write the checkpoint of step {step} in {folder} ({error.strerror or error}); {kept}"
        ) from error


def _finite(engine: Engine) -> bool:
    tensors = list(engine.model.parameters()) + list(engine.parameters())
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _draw_seed() -> int:
    """A seed for the data order from torch's RNG (so that `torch.manual_seed` fixes it)."""
    return int(torch.randint(0, 2**62, (), generator=None).item())


# ----------------------------------------------------------------------------------------------
# Engines that run once (MCMC)
# ----------------------------------------------------------------------------------------------


def _run_once(engine, whole, epochs, batch_size, max_steps, progress, run, checkpoint) -> History:
    ignored = [f"{k}={v}" for k, v, default in (("epochs", epochs, 1), ("batch_size", batch_size, None),
                                                 ("max_steps", max_steps, None)) if v != default]
    if ignored:
        warnings.warn(f"{type(engine).__name__} runs once on the whole data (iterative=False): ignoring {', '.join(ignored)}")
    if checkpoint is not None and checkpoint["step"] >= 1:  # already ran: load its result
        engine.model.load_state_dict(checkpoint["model"])
        engine.load_state_dict(checkpoint["engine"])
        return History.from_dict(checkpoint["history"])
    metrics = engine.run(whole, progress=progress) or {}
    history = History()
    history.log_step(1, 0, metrics)
    history.log_epoch(0, 1, metrics)
    if run is not None and distributed.rank() == 0:
        _write(run.path, {
            "format": CHECKPOINT_FORMAT, "engine_name": engine.name, "model": engine.model.state_dict(),
            "engine": engine.state_dict(), "step": 1, "epoch": 1, "batch": 0, "history": history.to_dict(),
            "rng_state": get_rng_state(),
        }, history, 1, None)
    return history


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def _as_data(data: Any) -> tuple[tuple[torch.Tensor, ...], bool]:
    """The data as a tuple of tensors with equal first dimension, and whether it was one tensor."""
    if hasattr(data, "train") and not torch.is_tensor(data):
        data = data.train
    single = not isinstance(data, (tuple, list))
    items = (data,) if single else tuple(data)
    if not items:
        raise ValueError("data: expected a tensor or a tuple of tensors, got an empty tuple")
    tensors = []
    for i, item in enumerate(items):
        if not torch.is_tensor(item):
            if type(item).__module__ == "numpy":
                item = torch.as_tensor(item)
            else:
                what = "data" if single else f"data[{i}]"
                raise TypeError(f"{what}: expected a tensor (rows first), got {type(item).__name__}")
        if item.dim() == 0:
            raise ValueError(f"data: expected tensors with a first (batch) dimension, got a scalar at position {i}")
        tensors.append(item)
    sizes = [t.shape[0] for t in tensors]
    if len(set(sizes)) > 1:
        raise ValueError(f"data: the tensors' first dimensions differ ({sizes}); expected one row count for all")
    if sizes[0] == 0:
        raise ValueError("data: no rows (first dimension is 0)")
    return tuple(tensors), single


def _check_arguments(engine, epochs, batch_size, checkpoint_every, max_steps, resume, overwrite, checkpoint_dir, seed,
                     run_config) -> None:
    if not isinstance(engine, Engine):
        hint = ""
        if isinstance(engine, torch.nn.Module) or callable(engine):
            hint = f" (wrap the model in one, e.g. inference.SVI({type(engine).__name__}(...)) or inference.MaximumLikelihood(...))"
        raise TypeError(f"engine: expected an inference engine{hint}, got {type(engine).__name__}")

    def positive(name, value, allow_none, minimum=1):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}: expected an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")

    positive("epochs", epochs, False, 0)
    positive("batch_size", batch_size, True)
    positive("checkpoint_every", checkpoint_every, True)
    positive("max_steps", max_steps, True, 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise ValueError(f"seed: expected None or an integer in [0, 2**32), got {seed!r}")
    for name, flag in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir: the folder of the checkpoint to continue from")
    if overwrite and checkpoint_dir is None:
        raise ValueError("overwrite=True needs checkpoint_dir: the run directory to replace")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir: expected a folder path, got {type(checkpoint_dir).__name__}")
    if run_config is not None and not isinstance(run_config, dict):
        raise TypeError(f"run_config: expected a dict of settings, got {type(run_config).__name__}")


def _check_callbacks(callbacks) -> tuple[Callable, ...]:
    if callable(callbacks):
        return (callbacks,)
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks: expected a callable or an iterable of callables, got {callbacks!r}")
    callbacks = tuple(callbacks)
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"callbacks[{i}]: expected a callable (info -> None or 'stop'), got {callback!r}")
    return callbacks
