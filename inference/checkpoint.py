"""Checkpoints written atomically and checked on load, and the RNG states an exact resume needs.

A checkpoint is a dict saved with `torch.save`: `inference.fit` puts the model's state_dict,
the engine's state (optimiser state inside), the step, epoch and batch counters, the metrics
history and the RNG states (`rng_state`) in it. On disk the payload follows a short header (a
magic line and the SHA-256 digest of the payload), so a truncated, empty, bit-flipped or foreign
file is recognised on load (`CheckpointError`, naming the file) instead of loading silently.

Files are written to a temporary file in the same folder, flushed to disk and renamed over the
target, so a crash mid-write leaves the previous checkpoint whole; the checkpoint before the
newest is kept beside it (``checkpoint.prev.pt``) and `load_latest` falls back to it, with a
warning, when the newest is unreadable.
"""

from __future__ import annotations

import hashlib
import io
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
    "PREVIOUS_NAME",
    "HISTORY_NAME",
    "CheckpointError",
    "load_latest",
    "remove_temporary_files",
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
#: The file name of the checkpoint before the latest, kept as a fallback.
PREVIOUS_NAME = "checkpoint.prev.pt"
#: The file name of the metrics history (JSON) beside it.
HISTORY_NAME = "history.json"
#: The first bytes of a checkpoint file; the SHA-256 digest of the payload follows.
MAGIC = b"PGM-CHECKPOINT 1\n"
_DIGEST = 32


class CheckpointError(OSError):
    """A checkpoint file is missing, unreadable, damaged or not a checkpoint, or cannot be written."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it and rename it to `path`.

    The temporary file is removed if `write` raises; `path` then keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # the permissions of any other file written here
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


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], *, keep_previous: bool = False) -> Path:
    """Save `state` to `path` with `torch.save` behind a checksummed header, atomically (see
    `atomic_write`). With `keep_previous`, an existing file at `path` is first renamed to
    `PREVIOUS_NAME` beside it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    digest = hashlib.sha256(payload).digest()

    def write(file):
        file.write(MAGIC)
        file.write(digest)
        file.write(payload)

    path = Path(path)
    if keep_previous and path.is_file():
        os.replace(path, path.with_name(PREVIOUS_NAME))
    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, checking its checksum.

    Raises `CheckpointError` naming the file when it is missing, empty, truncated, altered or not
    a checkpoint. `weights_only=True` (the default) unpickles tensors and plain containers only;
    pass False for a trusted file whose engine state holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint: no file at {path}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({error.strerror or error})") from error
    advice = "delete it, or resume from the previous checkpoint or train again with --overwrite"
    if not data:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted write?); {advice}")
    if data.startswith(MAGIC):
        body = memoryview(data)[len(MAGIC):]
        if len(body) < _DIGEST or hashlib.sha256(body[_DIGEST:]).digest() != bytes(body[:_DIGEST]):
            raise CheckpointError(f"checkpoint {path} is damaged (truncated or altered: its checksum does not match); "
                                  f"{advice}")
        payload = io.BytesIO(body[_DIGEST:])
    elif data[:2] == b"PK":  # a plain torch.save file of an older version: no checksum to check
        payload = io.BytesIO(data)
    else:
        raise CheckpointError(f"checkpoint {path} is not a checkpoint written by pgm (unknown header); {advice}")
    try:
        state = torch.load(payload, map_location=map_location, weights_only=weights_only)
    except Exception as error:  # noqa: BLE001 - pickle refusals and damaged archives alike
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {str(error).splitlines()[0]}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The latest checkpoint in `folder` (written by `inference.fit`): the newest, else the
    previous one, or None if there is none."""
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def load_latest(folder: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict[str, Any], Path] | None:
    """`(state, path)` of the newest readable checkpoint in `folder`, or None where there is none.

    When the newest is damaged and the previous one loads, warns and returns the previous one;
    when both are damaged, raises the newest's `CheckpointError`."""
    folder = Path(folder)
    newest, previous = folder / CHECKPOINT_NAME, folder / PREVIOUS_NAME
    if not newest.is_file():
        return (load_checkpoint(previous, map_location), previous) if previous.is_file() else None
    try:
        return load_checkpoint(newest, map_location), newest
    except CheckpointError as error:
        if not previous.is_file():
            raise
        try:
            state = load_checkpoint(previous, map_location)
        except CheckpointError:
            raise error from None
        warnings.warn(f"{error}. Falling back to the previous checkpoint {previous} (step {state.get('step')}).")
        return state, previous


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in `folder`."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            if path.name.startswith((".lock-", ".write-test-")):
                continue  # another process's lock or probe, not a save
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


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
