"""Pictures of data and samples: grids of images, 2D scatter plots and energy landscapes."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pgm import pictures


def test_image_grid_lays_out_square_images(tmp_path):
    x = torch.zeros(5, 64)
    x[2, :8] = 1.0  # the top row of the third image
    ax = pictures.image_grid(x, tmp_path / "grid.png", nrow=3)
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    canvas = ax.images[0].get_array()
    assert canvas.shape == (2 * 9 + 1, 3 * 9 + 1)  # 2 rows x 3 columns of 8x8 with 1-pixel gaps
    assert np.all(canvas[1, 19:27] == 1) and np.all(canvas[2, 19:27] == 0)


def test_image_grid_refuses_non_square_rows():
    with pytest.raises(ValueError, match="shape"):
        pictures.image_grid(torch.zeros(3, 10))


def test_energy_2d_shows_exp_minus_energy():
    ax = pictures.energy_2d(lambda x: 0.5 * (x**2).sum(-1), ax=Figure().add_subplot(), lim=3.0, resolution=61)
    density = ax.images[0].get_array()
    assert density.shape == (61, 61)
    assert density[30, 30] == pytest.approx(1.0) and density[30, 60] == pytest.approx(np.exp(-4.5), rel=1e-5)


def test_scatter_and_bad_suffix(tmp_path):
    ax = pictures.scatter_2d(torch.randn(50, 2), tmp_path / "s.svg", data=torch.randn(20, 2))
    assert (tmp_path / "s.svg").exists() and len(ax.collections) == 2
    with pytest.raises(ValueError, match="path"):
        pictures.scatter_2d(torch.randn(5, 2), tmp_path / "s.jpg")
