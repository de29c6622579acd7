"""Checkpoints written atomically, and the RNG states an exact resume needs.

A checkpoint is a dict saved with `torch.save`: `inference.fit` puts the model's state_dict,
the engine's state (optimiser state inside), the step, epoch and batch counters, the metrics
history and the RNG states (`rng_state`) in it. Files are written to a temporary file in the
same folder, flushed to disk and renamed over the target, so a crash mid-write leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, IO

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "HISTORY_NAME",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "atomic_write",
    "save_json",
    "get_rng_state",
    "set_rng_state",
]

#: The file name of the latest checkpoint in a checkpoint folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: The file name of the metrics history (JSON) beside it.
HISTORY_NAME = "history.json"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it and rename it to `path`.

    The temporary file is removed if `write` raises; `path` then keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Save `state` to `path` with `torch.save`, atomically (see `atomic_write`)."""
    return atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`.

    `weights_only=True` (the default) unpickles tensors and plain containers only; pass False
    for a trusted file whose engine state holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {path}")
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The latest checkpoint in `folder` (written by `inference.fit`), or None if there is none."""
    path = Path(folder) / CHECKPOINT_NAME
    return path if path.is_file() else None


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=1).encode()
    return atomic_write(path, lambda file: file.write(text))


# ----------------------------------------------------------------------------------------------
# RNG states: torch (CPU and initialised CUDA devices), numpy and Python. Pyro draws from these
# three (`pyro.set_rng_seed` seeds them all), so they are Pyro's RNG state too.
# ----------------------------------------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Every RNG state, in a form `load_checkpoint(weights_only=True)` can read back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "random": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states saved by `get_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) != torch.cuda.device_count():
            warnings.warn(
                f"checkpoint: RNG states for {len(cuda)} CUDA devices, but {torch.cuda.device_count()} are "
                "visible; restoring the first ones only, so the resumed run may differ from an uninterrupted one"
            )
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), device=i)
