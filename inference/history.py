"""`History`: the metrics of a training run, per step and per epoch, and their plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["History"]


class History:
    """Metrics of a run as columns: ``steps[name]`` and ``epochs[name]`` are lists of equal length.

    Every step row has ``"step"`` (1-based, counted over the whole run) and ``"epoch"``; every
    epoch row has ``"epoch"``, ``"step"`` (the last step of the epoch) and the mean of each step
    metric over the epoch. A metric missing from a row is None.

    >>> h = History()
    >>> h.log_step(1, 0, {"loss": 2.0}); h.log_step(2, 0, {"loss": 1.0})
    >>> h.log_epoch(0, 2, h.epoch_means(0))
    >>> h["loss"], h.epochs["loss"]
    ([2.0, 1.0], [1.5])
    """

    def __init__(self, steps: dict[str, list] | None = None, epochs: dict[str, list] | None = None) -> None:
        self.steps: dict[str, list] = {"step": [], "epoch": []}
        self.epochs: dict[str, list] = {"epoch": [], "step": []}
        for table, given in ((self.steps, steps), (self.epochs, epochs)):
            for key, column in (given or {}).items():
                table[key] = list(column)
            if len({len(c) for c in table.values()}) > 1:
                raise ValueError(f"history: columns of unequal lengths {({k: len(c) for k, c in table.items()})}")

    # ------------------------------------------------------------------ recording
    def log_step(self, step: int, epoch: int, metrics: dict[str, Any]) -> None:
        """Append one step's metrics."""
        _append(self.steps, {"step": int(step), "epoch": int(epoch), **metrics})

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        """Append one epoch's metrics (e.g. `epoch_means(epoch)`)."""
        _append(self.epochs, {"epoch": int(epoch), "step": int(step), **metrics})

    def epoch_means(self, epoch: int) -> dict[str, float]:
        """The mean of each step metric over the steps of `epoch` (None values skipped)."""
        epochs = self.steps["epoch"]
        start = len(epochs)
        while start > 0 and epochs[start - 1] == epoch:
            start -= 1
        out = {}
        for key, column in self.steps.items():
            if key in ("step", "epoch"):
                continue
            values = [v for v in column[start:] if v is not None]
            if values:
                out[key] = math.fsum(values) / len(values)
        return out

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> list:
        """A step metric's column, e.g. ``history["loss"]``."""
        return self.steps[name]

    def __contains__(self, name: str) -> bool:
        return name in self.steps

    def __len__(self) -> int:
        """The number of steps recorded."""
        return len(self.steps["step"])

    @property
    def metrics(self) -> list[str]:
        """The names of the step metrics."""
        return [k for k in self.steps if k not in ("step", "epoch")]

    def last(self) -> dict[str, Any]:
        """The last step's row (empty when nothing was recorded)."""
        return {k: c[-1] for k, c in self.steps.items()} if len(self) else {}

    def __repr__(self) -> str:
        last = self.last()
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"History({len(self)} steps, {len(self.epochs['epoch'])} epochs{', ' + shown if shown else ''})"

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, dict[str, list]]:
        return {"steps": {k: list(c) for k, c in self.steps.items()}, "epochs": {k: list(c) for k, c in self.epochs.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, list]]) -> "History":
        return cls(d.get("steps"), d.get("epochs"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the history as JSON, atomically."""
        from inference.checkpoint import save_json

        return save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ------------------------------------------------------------------ plotting
    def plot(self, path: str | os.PathLike | None = None, metrics: Iterable[str] | None = None):
        """Plot each metric against the step (light: per step; dots: epoch means).

        Returns the matplotlib `Figure`; with `path`, also saves it there (format by suffix).
        """
        from matplotlib.figure import Figure

        names = list(metrics) if metrics is not None else self.metrics
        names = [n for n in names if any(_is_number(v) for v in self.steps.get(n, ()))]
        if not names:
            names = ["loss"]
        cols = min(len(names), 3)
        rows = -(-len(names) // cols)
        fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, name in zip(axes, names):
            xs, ys = _points(self.steps["step"], self.steps.get(name, []))
            ax.plot(xs, ys, lw=0.8, alpha=0.6, label="step")
            ex, ey = _points(self.epochs["step"], self.epochs.get(name, []))
            if ex:
                ax.plot(ex, ey, "o-", ms=3, label="epoch mean")
                ax.legend(fontsize="small")
            ax.set_xlabel("step")
            ax.set_title(name)
            ax.grid(alpha=0.3)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
        return fig


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _points(xs: list, ys: list) -> tuple[list, list]:
    pairs = [(x, y) for x, y in zip(xs, ys) if _is_number(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _append(table: dict[str, list], row: dict[str, Any]) -> None:
    n = len(table["step"])
    for key, value in row.items():
        if key not in table:
            table[key] = [None] * n
        table[key].append(_plain(value))
    for key, column in table.items():
        if len(column) == n:
            column.append(None)


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar: tensors and numpy numbers become Python floats or ints."""
    if hasattr(value, "item") and not isinstance(value, (int, float)):
        value = value.item()  # a one-element tensor or a numpy scalar
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    return float(value)
