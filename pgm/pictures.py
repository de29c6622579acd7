"""Pictures of data and samples: image grids, 2D scatter plots and 2D energy landscapes.

Every function draws with matplotlib, saves by suffix (.png, .svg, .pdf) when given a path,
and returns the Axes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["image_shape", "image_grid", "scatter_2d", "energy_2d", "save"]

_SUFFIXES = (".png", ".svg", ".pdf")


def image_shape(num_values: int) -> tuple[int, int] | None:
    """The (height, width) of a flattened square greyscale image, or None.

    >>> image_shape(784), image_shape(64), image_shape(2)
    ((28, 28), (8, 8), None)
    """
    side = math.isqrt(num_values)
    return (side, side) if side * side == num_values and side >= 4 else None


def _new_axes(ax, figsize):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax, False
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax, True


def save(fig, path, created: bool, dpi: int = 150) -> None:
    """Save `fig` to `path` (format by suffix) and close it if this module created it."""
    import matplotlib.pyplot as plt

    if path is not None:
        path = Path(path)
        if path.suffix.lower() not in _SUFFIXES:
            raise ValueError(f"path: expected a file ending in {', '.join(_SUFFIXES)}, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    if created and path is not None:
        plt.close(fig)


def image_grid(x: torch.Tensor, path=None, *, shape: Sequence[int] | None = None, nrow: int | None = None, ax=None, title=None):
    """A grid of greyscale images from `x` of shape `(n, H*W)` or `(n, [1,] H, W)`."""
    x = torch.as_tensor(x).detach().float().cpu()
    n = x.shape[0]
    if shape is None:
        shape = tuple(x.shape[-2:]) if x.dim() >= 3 else image_shape(x[0].numel())
    if shape is None:
        raise ValueError(f"x: cannot lay out rows of {x[0].numel()} values as square images; pass shape=(H, W)")
    images = x.reshape(n, *shape).numpy()
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    h, w = shape
    canvas = np.full((ncol * (h + 1) + 1, nrow * (w + 1) + 1), 0.5)  # grey separators
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = img
    fig, ax, created = _new_axes(ax, (max(3, nrow * 0.6), max(3, ncol * 0.6)))
    ax.imshow(canvas, cmap="gray_r" if images.max() <= 1 and images.min() >= 0 else "gray", interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    save(fig, path, created)
    return ax


def scatter_2d(samples: torch.Tensor, path=None, *, data: torch.Tensor | None = None, ax=None, title=None, lim=None):
    """A scatter plot of 2D samples (and the data beside them, in grey)."""
    fig, ax, created = _new_axes(ax, (4, 4))
    if data is not None:
        d = torch.as_tensor(data).detach().cpu().numpy()
        ax.scatter(d[:, 0], d[:, 1], s=2, c="0.7", label="data")
    s = torch.as_tensor(samples).detach().cpu().numpy()
    ax.scatter(s[:, 0], s[:, 1], s=2, c="tab:blue", label="samples")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title)
    save(fig, path, created)
    return ax


def energy_2d(energy: Callable[[torch.Tensor], torch.Tensor], path=None, *, lim: float = 4.0, resolution: int = 200,
              dtype=None, device=None, ax=None, title=None):
    """The unnormalised density exp(-energy) of a 2D model on a grid over [-lim, lim]^2."""
    axis = torch.linspace(-lim, lim, resolution, dtype=dtype, device=device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    with torch.no_grad():
        e = energy(grid).reshape(resolution, resolution)
    density = torch.exp(-(e - e.min())).cpu().numpy()
    fig, ax, created = _new_axes(ax, (4, 4))
    ax.imshow(density, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    save(fig, path, created)
    return ax
