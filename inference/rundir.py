"""The rules of a run directory, shared by `inference.fit(checkpoint_dir=...)` and `pgm train`.

A run directory holds ``config.json`` (the run's settings), the checkpoint (``checkpoint.pt``,
checksummed, with the previous one kept as ``checkpoint.prev.pt``), ``history.json`` and
pictures. Its promises:

- **One writer at a time.** `RunDirectory.lock` takes an exclusive lock file (``.lock``, holding
  the writer's pid and host); a second writer is refused with a message naming the holder, and a
  lock left by a process that no longer runs is recognised as stale and taken over.
- **Nothing is replaced by accident.** A directory that holds a checkpoint is continued only with
  ``resume`` and replaced only with ``overwrite`` (`RunDirectory.begin`).
- **Resume checks.** Settings that can change safely (`SAFE`: learning rate, epochs, batch size,
  checkpoint frequency, ...) take effect and are recorded; any other difference (model sizes,
  engine kind, data) is refused with each difference listed.
- **The config is written last**, atomically, after every check has passed (`commit`), so a
  refused run leaves the directory as it was.
- The directory must be writable: checked before the first step (`check_writable`).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     run = RunDirectory(folder)
...     with run.lock():
...         config = run.begin({"model": "rbm", "epochs": 5})
...         path = run.commit(config)
...     sorted(RunDirectory(folder).config())
['epochs', 'model']
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

from inference.checkpoint import (
    CHECKPOINT_NAME,
    HISTORY_NAME,
    PREVIOUS_NAME,
    latest_checkpoint,
    remove_temporary_files,
    save_json,
)

__all__ = ["RunDirectory", "RunDirectoryError", "RunLockedError", "RunExistsError", "ResumeMismatchError",
           "CONFIG_NAME", "LOCK_NAME", "SAFE", "differences", "as_json"]

CONFIG_NAME = "config.json"
LOCK_NAME = ".lock"
#: Settings that may change when a run is resumed (recorded in the config under "resumed").
SAFE = frozenset({"lr", "epochs", "batch_size", "checkpoint_every", "max_steps", "device", "num_samples",
                  "quiet", "progress", "resumed"})


class RunDirectoryError(ValueError):
    """A run directory cannot be used as asked (exit status 2 on the command line)."""


class RunLockedError(RunDirectoryError):
    """Another process is writing to the run directory."""


class RunExistsError(RunDirectoryError):
    """The run directory holds a checkpoint and neither resume nor overwrite was asked for."""


class ResumeMismatchError(RunDirectoryError):
    """A resumed run's settings differ from the saved ones in ways that cannot change."""


# In-process lock counts, so that `pgm train` can hold the lock around `fit`, which takes it too.
_HELD: dict[Path, int] = {}


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two (nested) settings dicts: ``{"a.b": (old, new)}``.
    Keys that `new` does not state are taken as unchanged.

    >>> differences({"a": 1, "s": {"h": 4}, "c": 3}, {"a": 1, "s": {"h": 8}, "b": 2})
    {'s.h': (4, 8), 'b': (None, 2)}
    """
    out: dict[str, tuple[Any, Any]] = {}
    for key in new:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(differences(a, b, f"{prefix}{key}."))
        elif as_json(a) != as_json(b):
            out[f"{prefix}{key}"] = (a, b)
    return out


def as_json(value: Any) -> Any:
    """JSON's view of a value: tuples and lists alike."""
    return json.loads(json.dumps(value, default=str))


class RunDirectory:
    """A run directory (see the module docstring). `argument` names the folder in messages
    (``checkpoint_dir`` for the API, ``--out`` on the command line)."""

    def __init__(self, path: str | os.PathLike, argument: str = "checkpoint_dir") -> None:
        self.path = Path(path)
        self.argument = argument

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # ------------------------------------------------------------------ what it holds
    @property
    def checkpoint(self) -> Path | None:
        """The newest checkpoint file in the directory (or the previous one), or None."""
        return latest_checkpoint(self.path) if self.path.is_dir() else None

    def config(self) -> dict[str, Any] | None:
        """The saved ``config.json``, or None where there is none."""
        path = self.path / CONFIG_NAME
        if not path.is_file():
            return None
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise RunDirectoryError(f"{self.argument}: {path} cannot be read as JSON ({error})") from error
        if not isinstance(config, dict):
            raise RunDirectoryError(f"{self.argument}: {path} holds no settings object")
        return config

    # ------------------------------------------------------------------ writability
    def check_writable(self) -> None:
        """Create the folder if needed and check that files can be written in it; raises
        `RunDirectoryError` naming the argument otherwise."""
        for parent in [self.path, *self.path.parents]:
            if parent.exists() and not parent.is_dir():
                raise RunDirectoryError(f"{self.argument}: {parent} is a file, not a folder; choose another run directory")
            if parent.exists():
                break
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise RunDirectoryError(
                f"{self.argument}: cannot write in {self.path} ({error.strerror or error}); choose a writable folder"
            ) from error

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def lock(self) -> Iterator["RunDirectory"]:
        """Hold the directory's exclusive lock (re-entrant within one process)."""
        key = self.path.resolve()
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        self.check_writable()
        self._acquire()
        _HELD[key] = 1
        try:
            remove_temporary_files(self.path)  # left by an interrupted save of an earlier writer
            yield self
        finally:
            _HELD.pop(key, None)
            try:
                (self.path / LOCK_NAME).unlink()
            except OSError:
                pass

    def _acquire(self) -> None:
        path = self.path / LOCK_NAME
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        # The lock appears whole: written to a private file first, then hard-linked into place
        # (a link fails when the name exists, so exactly one writer wins).
        mine = self.path / f".lock-{me['pid']}.tmp"
        mine.write_text(json.dumps(me))
        try:
            for _ in range(3):
                try:
                    os.link(mine, path)
                    return
                except FileExistsError:
                    pass
                holder = _read_lock(path)
                if holder is not None and not _stale(holder):
                    raise RunLockedError(
                        f"{self.argument}: {self.path} is in use by process {holder.get('pid')} on "
                        f"{holder.get('host')} (lock {path}); wait for it to finish or choose another folder"
                    )
                try:  # stale (its process is gone) or unreadable: take it over
                    path.unlink()
                except FileNotFoundError:
                    pass
        finally:
            mine.unlink(missing_ok=True)
        raise RunLockedError(f"{self.argument}: could not take the lock {path}; another process keeps taking it")

    # ------------------------------------------------------------------ starting a run
    def begin(self, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Check that a run with `config` may start here; return the config to `commit`.

        - a checkpoint without `resume` or `overwrite`: `RunExistsError`;
        - `resume`: differences to the saved config outside `SAFE` raise `ResumeMismatchError`
          listing each; safe ones are recorded under ``"resumed"`` in the returned config.
        Nothing is written."""
        if resume and overwrite:
            raise RunDirectoryError("resume and overwrite: choose one (continue the run, or replace it)")
        found = self.checkpoint
        if found is not None and not resume and not overwrite:
            raise RunExistsError(
                f"{self.argument}: {self.path} already holds a trained run ({found.name}); continue it with "
                "--resume (resume=True) or replace it with --overwrite (overwrite=True)"
            )
        saved = self.config() if resume else None
        if saved is None:
            return dict(config)
        changed = differences({k: v for k, v in saved.items() if k != "resumed"}, config)
        unsafe = {k: v for k, v in changed.items() if k.split(".")[-1] not in SAFE}
        if unsafe:
            listed = "; ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in unsafe.items())
            raise ResumeMismatchError(
                f"resume: {self.path} holds a run with other settings that cannot change on resume ({listed}); "
                "resume with the saved settings, or start a new run (another folder, or --overwrite)"
            )
        out = {**saved, **config}
        if changed:
            out["resumed"] = list(saved.get("resumed", [])) + [
                {k: [a, b] for k, (a, b) in changed.items()}
            ]
        return out

    def commit(self, config: dict[str, Any], *, overwrite: bool = False) -> Path:
        """Write `config` atomically (after every check passed); with `overwrite`, first remove
        the previous run's checkpoints and history."""
        if overwrite:
            for name in (CHECKPOINT_NAME, PREVIOUS_NAME, HISTORY_NAME):
                try:
                    (self.path / name).unlink()
                except FileNotFoundError:
                    pass
        return save_json(self.path / CONFIG_NAME, config)


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, default=str)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(holder: dict[str, Any]) -> bool:
    """Whether a lock's holder is gone: a process on this host that no longer runs."""
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: it cannot be checked from here
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
