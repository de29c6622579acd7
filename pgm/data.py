"""`pgm.data`: named datasets behind one loader, `load(name, ...) -> Dataset`.

===================  ========  ===================================================================
name                 shape     what
===================  ========  ===================================================================
``moons``            (2,)      two interleaved half circles (labels: which moon)
``8gaussians``       (2,)      8 Gaussians on a circle of radius 2 (labels: which Gaussian)
``checkerboard``     (2,)      uniform on the 8 dark squares of a 4x4 board (labels: which square)
``spirals``          (2,)      two interleaved spirals (labels: which arm)
``pinwheel``         (2,)      5 curved arms (labels: which arm)
``rings``            (2,)      4 concentric circles (labels: which ring)
``digits``           (64,)     scikit-learn's 8x8 digits in [0, 1] (labels: the digit)
``mnist``            (784,)    MNIST from the IDX files, in [0, 1] (labels: the digit)
``binarized_mnist``  (784,)    Larochelle & Murray's fixed binarization, ``.amat`` files (no labels)
===================  ========  ===================================================================

The 2D toys are generated from a seed, on the CPU with a `torch.Generator` (so the same seed gives
the same points on every machine), then moved to `device`; each is placed around the origin at
roughly unit scale (per-axis standard deviation between about 0.7 and 1.4); see `load` for the
definition of each. MNIST and binarized MNIST are read from files in `root` (default: the
environment variable ``PGM_DATA``, else ``~/.cache/pgm/data``), looked for in ``root/<name>/``
and then in ``root`` itself; ``download=True`` fetches missing files into ``root/<name>/``.

The file formats are readable and writable on their own: `read_idx` / `write_idx` (the IDX format
of the MNIST files) and `read_amat` / `write_amat` (one binary vector a line).
"""

from __future__ import annotations

import gzip
import logging
import math
import numbers
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.request import urlopen

import numpy as np
import torch

__all__ = [
    "Dataset",
    "load",
    "available",
    "default_root",
    "read_idx",
    "write_idx",
    "read_amat",
    "write_amat",
]

log = logging.getLogger(__name__)

TOYS = ("moons", "8gaussians", "checkerboard", "spirals", "pinwheel", "rings")
IMAGES = ("digits", "mnist", "binarized_mnist")

DEFAULT_N_SAMPLES = 10_000
DEFAULT_FRACTION = 0.1  # valid and test fractions of the toys and digits
MNIST_VALID_FRACTION = 1 / 6  # the last 10,000 of MNIST's 60,000 training images

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
BINARIZED_MNIST_FILES = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}


# ----------------------------------------------------------------------------------------------
# The dataset container
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A dataset split three ways.

    `train`, `valid`, `test`: float tensors of shape ``(n_split, *shape)``, batch first.
    `train_labels`, `valid_labels`, `test_labels`: int64 tensors of shape ``(n_split,)``, or None
    for an unlabelled dataset. `shape`: the shape of one example. `info`: where the data came from
    (``source``), how it was binarized (``binarized``: False, "threshold", "stochastic" or
    "fixed"), the seed, the files read, the number of classes.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(getattr(self, s))}" for s in ("train", "valid", "test"))
        labelled = self.train_labels is not None
        return (
            f"Dataset({self.name!r}, shape={self.shape}, {sizes}, dtype={self.train.dtype}, "
            f"device={self.train.device}, labels={labelled})"
        )


def own(name: str, train, test=None, **info: Any) -> Dataset:
    """A `Dataset` for data a model carries: `train` (a tensor, or a tuple of tensors for a
    program with several data arguments) and `test` (default: `train` itself, for data too small
    to split, such as eight schools' effects).

    >>> own("schools", torch.zeros(8)).test.shape
    torch.Size([8])
    """
    test = train if test is None else test
    first = train[0] if isinstance(train, tuple) else train
    return Dataset(name=name, train=train, valid=test, test=test, shape=tuple(first.shape[1:]),
                   info={"source": "the model's own data", **info})


def available() -> list[str]:
    """The dataset names `load` accepts: the 2D toys, then the image datasets."""
    return list(TOYS + IMAGES)


def default_root() -> Path:
    """Where file-backed datasets live: ``$PGM_DATA`` if set, else ``~/.cache/pgm/data``."""
    return Path(os.environ.get("PGM_DATA") or "~/.cache/pgm/data").expanduser()


# ----------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------


def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    binarize: bool | str = False,
    n_samples: int | None = None,
    seed: int = 0,
    valid_fraction: float | None = None,
    test_fraction: float | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Dataset:
    """Load the dataset `name` (one of `available()`) as a `Dataset` of train/valid/test tensors.

    Tensors have dtype `dtype` (default: `torch.get_default_dtype()`) and live on `device`
    (default: torch's default device); labels are int64.

    2D toys, shape (2,): `n_samples` points in all (default 10,000), drawn i.i.d. from `seed` and
    split in order into train / valid / test by `valid_fraction` and `test_fraction` (default 0.1
    each). `noise` (keyword) sets the Gaussian noise std where a toy has one.

    - ``moons``: half circles of radius 1.5, the upper one centred at (-0.75, -0.375) (angles in
      [0, pi]), the lower one at (0.75, 0.375) (angles in [pi, 2 pi]), angle uniform, plus
      noise (default std 0.15): scikit-learn's ``make_moons(noise=0.1)`` centred and scaled by 1.5.
    - ``8gaussians``: centres 2 (cos(k pi/4), sin(k pi/4)), k = 0..7 equally likely, noise std 0.1.
    - ``checkerboard``: a 4x4 board of unit squares on [-2, 2]^2; uniform on the 8 squares
      (i, j) (column i, row j, counted from (-2, -2)) with i + j even.
    - ``spirals``: arm k in {0, 1}; theta = 3 pi sqrt(u), u ~ U(0, 1) (one and a half turns);
      radius r = 2 theta / (3 pi) in [0, 2]; point r (cos(theta + k pi), sin(theta + k pi)) plus
      noise (default std 0.1).
    - ``pinwheel`` (Johnson et al., 2016): arm k in 0..4; f = (f_r, f_t) with f_r ~ N(1, 0.3^2),
      f_t ~ N(0, 0.05^2), rotated by 2 pi k / 5 + 0.25 exp(f_r), then scaled by 1.5.
    - ``rings``: circles of radius 0.5, 1, 1.5, 2, a ring chosen with probability proportional
      to its radius (so points are evenly spread along the rings), angle uniform, plus noise
      (default std 0.05).

    Images:

    - ``digits``: scikit-learn's 1,797 8x8 digits, divided by 16 into [0, 1], shape (64,)
      (``flatten=False``: (1, 8, 8)); shuffled by `seed` and split by the fractions (default 0.1).
    - ``mnist``: the four IDX files (``train-images-idx3-ubyte.gz`` ... , or uncompressed) in
      `root`; divided by 255, shape (784,) (``flatten=False``: (1, 28, 28)). The official 10,000
      test images are the test split; valid is the last ``round(valid_fraction * 60000)`` training
      images, by default 1/6: the last 10,000, leaving 50,000 for train.
    - ``binarized_mnist``: ``binarized_mnist_{train,valid,test}.amat`` (or ``.amat.gz``) in
      `root`, the fixed 50,000 / 10,000 / 10,000 split of Larochelle & Murray (2011), no labels;
      shape (784,) (``flatten=False``: (1, 28, 28)).

    `binarize` (digits and mnist): True or "threshold" maps pixels >= 0.5 to 1 and the rest to 0;
    "stochastic" draws each pixel once from a Bernoulli with its intensity as probability, seeded
    by `seed`. binarized_mnist is binary already and ignores it.

    Files are looked for in ``root/<name>/``, then in `root` (default: `default_root()`). Missing
    ones are fetched from the public locations (`MNIST_MIRRORS`, `BINARIZED_MNIST_URL`) into
    ``root/<name>/`` when `download` is True; otherwise a `FileNotFoundError` lists them.

    >>> from pgm.data import load
    >>> moons = load("moons", n_samples=100)
    >>> moons.train.shape[1] == 2, len(moons.train), len(moons.valid), len(moons.test)
    (True, 80, 10, 10)
    """
    if not isinstance(name, str) or name.lower() not in available():
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {available()}")
    name = name.lower()
    dtype = _check_dtype(dtype)
    device = _check_device(device)
    seed = _check_seed(seed)
    mode = _check_binarize(binarize)

    if name in TOYS:
        if mode is not None:
            raise ValueError(
                f"binarize: the 2D toy {name!r} is continuous; got binarize={binarize!r}, expected False"
            )
        return _load_toy(name, n_samples, seed, valid_fraction, test_fraction, dtype, device, kwargs)

    if n_samples is not None:
        raise ValueError(f"n_samples: applies to the 2D toys only, got n_samples={n_samples!r} for {name!r}")
    if name == "digits":
        return _load_digits(mode, seed, valid_fraction, test_fraction, dtype, device, kwargs)
    if test_fraction is not None:
        raise ValueError(
            f"test_fraction: {name!r} has an official test split, got test_fraction={test_fraction!r}, "
            "expected None"
        )
    root = default_root() if root is None else Path(root).expanduser()
    if name == "mnist":
        return _load_mnist(root, download, mode, seed, valid_fraction, dtype, device, kwargs)
    if valid_fraction is not None:
        raise ValueError(
            "valid_fraction: 'binarized_mnist' has an official validation split, "
            f"got valid_fraction={valid_fraction!r}, expected None"
        )
    return _load_binarized_mnist(root, download, dtype, device, kwargs)


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _check_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.get_default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating-point torch.dtype (e.g. torch.float64), got {dtype!r}")
    return dtype


def _check_device(device: Any) -> torch.device:
    if device is None:
        get_default = getattr(torch, "get_default_device", None)
        return get_default() if get_default is not None else torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        message = f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}"
        raise ValueError(message) from error


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def _check_binarize(binarize: Any) -> str | None:
    if binarize is False or binarize is None:
        return None
    if binarize is True or binarize == "threshold":
        return "threshold"
    if binarize == "stochastic":
        return "stochastic"
    raise ValueError(f"binarize: expected False, True, 'threshold' or 'stochastic', got {binarize!r}")


def _check_fraction(argname: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{argname}: expected a number in [0, 1), got {value!r}")
    return float(value)


def _split_sizes(n: int, valid_fraction: float, test_fraction: float, what: str) -> tuple[int, int, int]:
    """(n_train, n_valid, n_test) for `n` examples; raises unless train keeps at least one."""
    n_valid, n_test = round(n * valid_fraction), round(n * test_fraction)
    if n - n_valid - n_test < 1:
        raise ValueError(
            f"valid_fraction, test_fraction: {valid_fraction} + {test_fraction} of {n} {what} leaves "
            "no training examples; expected fractions that sum to less than 1"
        )
    return n - n_valid - n_test, n_valid, n_test


def _check_kwargs(name: str, kwargs: dict[str, Any], accepted: tuple[str, ...]) -> None:
    unexpected = sorted(set(kwargs) - set(accepted))
    if unexpected:
        expected = ", ".join(accepted) if accepted else "no extra keyword arguments"
        raise TypeError(f"load({name!r}): unexpected keyword argument(s) {unexpected}; expected {expected}")


def _check_noise(kwargs: dict[str, Any], default: float) -> float:
    noise = kwargs.get("noise", default)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not (0 <= noise < math.inf):
        raise ValueError(f"noise: expected a finite standard deviation >= 0, got {noise!r}")
    return float(noise)


def _check_flatten(kwargs: dict[str, Any]) -> bool:
    flatten = kwargs.get("flatten", True)
    if not isinstance(flatten, bool):
        raise ValueError(f"flatten: expected True or False, got {flatten!r}")
    return flatten


def _finish(
    name: str,
    splits: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    info: dict[str, Any],
) -> Dataset:
    """Reshape each split to (n, *shape), cast to `dtype`, move to `device`, and wrap."""
    data = [s.reshape(len(s), *shape).to(dtype=dtype).to(device) for s in splits]
    tags = [None, None, None] if labels is None else [y.to(torch.long).to(device) for y in labels]
    return Dataset(
        name, *data, shape=tuple(shape), info=info, train_labels=tags[0], valid_labels=tags[1], test_labels=tags[2]
    )


# ----------------------------------------------------------------------------------------------
# 2D toys: each returns (points (n, 2) float64, labels (n,) int64) drawn from a CPU generator
# ----------------------------------------------------------------------------------------------

TOY_NOISE = {"moons": 0.15, "8gaussians": 0.1, "spirals": 0.1, "rings": 0.05}
RING_RADII = (0.5, 1.0, 1.5, 2.0)
PINWHEEL_ARMS, PINWHEEL_RATE, PINWHEEL_SCALE = 5, 0.25, 1.5
PINWHEEL_RADIAL_STD, PINWHEEL_TANGENTIAL_STD = 0.3, 0.05


def _uniform(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64, device="cpu")


def _normal(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64, device="cpu")


def _choice(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=g, device="cpu")


def _on_circle(radius: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)


def _moons(n, g, noise):
    label = _choice(n, 2, g)
    angle = math.pi * _uniform(n, g) + math.pi * label
    centre = torch.tensor([[-0.75, -0.375], [0.75, 0.375]], dtype=torch.float64)[label]
    points = centre + _on_circle(torch.full((n,), 1.5, dtype=torch.float64), angle)
    return points + noise * _normal((n, 2), g), label


def _eight_gaussians(n, g, noise):
    label = _choice(n, 8, g)
    centre = _on_circle(torch.full((n,), 2.0, dtype=torch.float64), label * (math.pi / 4))
    return centre + noise * _normal((n, 2), g), label


def _checkerboard(n, g, noise):
    dark = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    squares = torch.tensor(dark, dtype=torch.float64)
    label = _choice(n, len(squares), g)
    corner = squares[label] - 2.0
    return corner + torch.stack([_uniform(n, g), _uniform(n, g)], dim=-1), label


def _spirals(n, g, noise):
    label = _choice(n, 2, g)
    theta = 3 * math.pi * torch.sqrt(_uniform(n, g))
    points = _on_circle(2 * theta / (3 * math.pi), theta + math.pi * label)
    return points + noise * _normal((n, 2), g), label


def _pinwheel(n, g, noise):
    label = _choice(n, PINWHEEL_ARMS, g)
    radial = 1 + PINWHEEL_RADIAL_STD * _normal((n,), g)
    tangential = PINWHEEL_TANGENTIAL_STD * _normal((n,), g)
    angle = 2 * math.pi * label / PINWHEEL_ARMS + PINWHEEL_RATE * torch.exp(radial)
    cos, sin = torch.cos(angle), torch.sin(angle)
    points = torch.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], dim=-1)
    return PINWHEEL_SCALE * points, label


def _rings(n, g, noise):
    radii = torch.tensor(RING_RADII, dtype=torch.float64)
    label = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=g)
    points = _on_circle(radii[label], 2 * math.pi * _uniform(n, g))
    return points + noise * _normal((n, 2), g), label


TOY_CLASSES = {
    "moons": 2, "8gaussians": 8, "checkerboard": 8, "spirals": 2, "pinwheel": PINWHEEL_ARMS, "rings": len(RING_RADII)
}

TOY_GENERATORS: dict[str, Callable[[int, torch.Generator, float], tuple[torch.Tensor, torch.Tensor]]] = {
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "spirals": _spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
}


def _load_toy(name, n_samples, seed, valid_fraction, test_fraction, dtype, device, kwargs) -> Dataset:
    _check_kwargs(name, kwargs, ("noise",) if name in TOY_NOISE else ())
    noise = _check_noise(kwargs, TOY_NOISE[name]) if name in TOY_NOISE else 0.0
    if n_samples is None:
        n_samples = DEFAULT_N_SAMPLES
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    n_samples = int(n_samples)
    valid_fraction = _check_fraction("valid_fraction", valid_fraction, DEFAULT_FRACTION)
    test_fraction = _check_fraction("test_fraction", test_fraction, DEFAULT_FRACTION)
    sizes = _split_sizes(n_samples, valid_fraction, test_fraction, "points (n_samples)")

    generator = torch.Generator(device="cpu").manual_seed(seed)
    points, labels = TOY_GENERATORS[name](n_samples, generator, noise)
    info = {
        "source": f"generated 2D toy '{name}'",
        "binarized": False,
        "seed": seed,
        "n_samples": n_samples,
        "noise": noise if name in TOY_NOISE else None,
        "num_classes": TOY_CLASSES[name],
    }
    return _finish(name, points.split(sizes), labels.split(sizes), (2,), dtype, device, info)


# ----------------------------------------------------------------------------------------------
# Images: binarization, digits, MNIST, binarized MNIST
# ----------------------------------------------------------------------------------------------


def _scale_and_binarize(
    raw: np.ndarray, max_value: int, mode: str | None, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """Integer intensities in [0, max_value] -> `dtype` values in [0, 1], binarized by `mode`.

    Both binarizations work on the integers, so they do not depend on `dtype`: "threshold" keeps
    x / max_value >= 0.5; "stochastic" keeps u < x with u uniform on {0, ..., max_value - 1}, which
    is 1 with probability x / max_value.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.int16))
    if mode is None:
        return pixels.to(dtype) / max_value
    if mode == "threshold":
        return (2 * pixels >= max_value).to(dtype)
    u = torch.randint(0, max_value, pixels.shape, generator=generator, dtype=torch.int16, device="cpu")
    return (u < pixels).to(dtype)


def _load_digits(mode, seed, valid_fraction, test_fraction, dtype, device, kwargs) -> Dataset:
    from sklearn.datasets import load_digits

    _check_kwargs("digits", kwargs, ("flatten",))
    shape = (64,) if _check_flatten(kwargs) else (1, 8, 8)
    valid_fraction = _check_fraction("valid_fraction", valid_fraction, DEFAULT_FRACTION)
    test_fraction = _check_fraction("test_fraction", test_fraction, DEFAULT_FRACTION)
    bunch = load_digits()
    raw, targets = bunch.data.astype(np.int16), torch.as_tensor(bunch.target, dtype=torch.long)
    sizes = _split_sizes(len(raw), valid_fraction, test_fraction, "digits")

    generator = torch.Generator(device="cpu").manual_seed(seed)
    order = torch.randperm(len(raw), generator=generator, device="cpu")
    images = _scale_and_binarize(raw, 16, mode, generator, dtype)[order]
    info = {"source": "sklearn.datasets.load_digits", "binarized": mode or False, "seed": seed, "num_classes": 10}
    return _finish("digits", images.split(sizes), targets[order].split(sizes), shape, dtype, device, info)


def _load_mnist(root, download, mode, seed, valid_fraction, dtype, device, kwargs) -> Dataset:
    _check_kwargs("mnist", kwargs, ("flatten",))
    shape = (784,) if _check_flatten(kwargs) else (1, 28, 28)
    valid_fraction = _check_fraction("valid_fraction", valid_fraction, MNIST_VALID_FRACTION)
    urls = {key: [mirror + filename for mirror in MNIST_MIRRORS] for key, filename in MNIST_FILES.items()}
    paths = _locate("mnist", root, MNIST_FILES, urls, download)

    arrays = {}
    for split in ("train", "test"):
        images = _read_mnist_part(paths[f"{split}_images"], 0x803, "images", (28, 28))
        labels = _read_mnist_part(paths[f"{split}_labels"], 0x801, "labels", ())
        if len(images) != len(labels):
            raise ValueError(
                f"{paths[f'{split}_images']} has {len(images)} images but {paths[f'{split}_labels']} has "
                f"{len(labels)} labels; expected the same number"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{paths[f'{split}_labels']}: label {labels.max()} seen, expected digits 0..9")
        arrays[split] = (images, labels)

    n_train_images = len(arrays["train"][0])
    n_train, n_valid, _ = _split_sizes(n_train_images, valid_fraction, 0.0, "MNIST training images")
    generator = torch.Generator(device="cpu").manual_seed(seed)  # for "stochastic": train, then test
    train_images = _scale_and_binarize(arrays["train"][0], 255, mode, generator, dtype)
    test_images = _scale_and_binarize(arrays["test"][0], 255, mode, generator, dtype)
    train_labels = torch.from_numpy(arrays["train"][1].astype(np.int64))
    test_labels = torch.from_numpy(arrays["test"][1].astype(np.int64))
    splits = (train_images[:n_train], train_images[n_train:], test_images)
    labels = (train_labels[:n_train], train_labels[n_train:], test_labels)
    info = {
        "source": "MNIST (LeCun, Cortes & Burges), IDX files",
        "files": {key: str(path) for key, path in paths.items()},
        "binarized": mode or False,
        "seed": seed,
        "num_classes": 10,
        "split": f"valid = the last {n_valid} of the {n_train_images} training images; test = the t10k files",
    }
    return _finish("mnist", splits, labels, shape, dtype, device, info)


def _read_mnist_part(path: Path, magic: int, what: str, item_shape: tuple[int, ...]) -> np.ndarray:
    data = _read_bytes(path)
    seen = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if seen != magic:
        seen_text = "a file shorter than 4 bytes" if seen is None else f"0x{seen:08x}"
        raise ValueError(
            f"{path}: bad magic number {seen_text}, expected 0x{magic:08x} (IDX unsigned bytes, "
            f"{1 + len(item_shape)} dimension(s)) for MNIST {what}; is this the right file?"
        )
    array = _parse_idx(data, path)
    if array.shape[1:] != item_shape:
        raise ValueError(f"{path}: each of the MNIST {what} has shape {array.shape[1:]}, expected {item_shape}")
    return array


def _load_binarized_mnist(root, download, dtype, device, kwargs) -> Dataset:
    _check_kwargs("binarized_mnist", kwargs, ("flatten",))
    shape = (784,) if _check_flatten(kwargs) else (1, 28, 28)
    urls = {split: [BINARIZED_MNIST_URL + filename] for split, filename in BINARIZED_MNIST_FILES.items()}
    paths = _locate("binarized_mnist", root, BINARIZED_MNIST_FILES, urls, download)
    splits = tuple(torch.from_numpy(read_amat(paths[split], n_values=784)) for split in BINARIZED_MNIST_FILES)
    info = {
        "source": "binarized MNIST of Larochelle & Murray (2011), .amat files",
        "files": {split: str(path) for split, path in paths.items()},
        "binarized": "fixed",
        "num_classes": None,
    }
    return _finish("binarized_mnist", splits, None, shape, dtype, device, info)


# ----------------------------------------------------------------------------------------------
# Finding and downloading files
# ----------------------------------------------------------------------------------------------


def _variants(filename: str) -> tuple[str, str]:
    """A file's accepted names: as given, and with or without the .gz suffix."""
    return (filename, filename[:-3]) if filename.endswith(".gz") else (filename, filename + ".gz")


def _locate(
    name: str, root: Path, files: dict[str, str], urls: dict[str, list[str]], download: bool
) -> dict[str, Path]:
    """Path of each needed file, looked for in root/<name>/ then root; downloads the missing ones."""
    folders = (root / name, root)
    found: dict[str, Path] = {}
    for key, filename in files.items():
        for folder in folders:
            candidates = [folder / variant for variant in _variants(filename) if (folder / variant).is_file()]
            if candidates:
                found[key] = candidates[0]
                break
    missing = [key for key in files if key not in found]
    if not missing:
        return found
    if not download:
        listing = ", ".join(files[key] for key in missing)
        raise FileNotFoundError(
            f"{name}: missing file(s) {listing} (also accepted "
            f"{'uncompressed' if files[missing[0]].endswith('.gz') else 'with a .gz suffix'}); looked in "
            f"{folders[0]} and {folders[1]} (root={str(root)!r}). Pass download=True (or --download on the "
            f"command line) to fetch them, or put the files there yourself."
        )
    folders[0].mkdir(parents=True, exist_ok=True)
    for key in missing:
        found[key] = _download(urls[key], folders[0] / files[key])
    return found


def _download(urls: list[str], destination: Path) -> Path:
    """Fetch the first of `urls` that answers into `destination`, atomically (temp file + rename)."""
    errors = []
    for url in urls:
        log.info("downloading %s to %s", url, destination)
        handle, temporary = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
        )
        try:
            with os.fdopen(handle, "wb") as out, urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, destination)
            return destination
        except OSError as error:  # urllib's URLError and HTTPError are OSErrors
            errors.append(f"{url}: {error}")
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
    raise OSError(
        f"could not download {destination.name} into {destination.parent}: " + "; ".join(errors)
        + ". Download it by hand and put it there."
    )


def _atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` (gzip-compressed when the name ends in .gz) via a temp file + rename."""
    path = Path(path)
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes, gunzipped when they start with the gzip magic number (whatever the name)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: not a valid gzip file ({error}); delete it and fetch it again") from error
    return data


# ----------------------------------------------------------------------------------------------
# The IDX format: magic (0, 0, type code, number of dims), dims as big-endian uint32, then data
# ----------------------------------------------------------------------------------------------

IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a numpy array of its dims and (native-order) type."""
    return _parse_idx(_read_bytes(path), path)


def _parse_idx(data: bytes, path: str | os.PathLike) -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] == 0:
        magic = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else f"only {len(data)} bytes"
        raise ValueError(
            f"{path}: bad IDX magic number {magic}; expected two zero bytes, a type code in "
            f"{[hex(t) for t in IDX_TYPES]} and a number of dimensions >= 1"
        )
    dtype, ndim = IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: {len(data) - header} bytes of data after the header, expected {expected} for "
            f"dims {dims} of {dtype.name}; the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: Any) -> None:
    """Write `array` (numpy or torch; uint8, int8, int16, int32, float32 or float64, >= 1 dim) to
    `path` in the IDX format, gzip-compressed when `path` ends in .gz, atomically."""
    array = _as_numpy(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    if array.dtype not in codes:
        raise ValueError(
            f"array: dtype {array.dtype} has no IDX type code; expected one of "
            f"{[str(d) for d in codes]} (cast it first)"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array: IDX needs 1 to 255 dimensions, got shape {array.shape}")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    _atomic_write(path, header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes())


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


# ----------------------------------------------------------------------------------------------
# The .amat format of binarized MNIST: one example a line, values 0 or 1 separated by spaces
# ----------------------------------------------------------------------------------------------


def read_amat(path: str | os.PathLike, n_values: int = 784) -> np.ndarray:
    """Read an .amat file (plain or gzipped) of 0/1 vectors into a uint8 array (n_lines, n_values).

    Raises a `ValueError` naming the file and line of the first line that does not hold exactly
    `n_values` values that are each 0 or 1.
    """
    lines = [line.strip() for line in _read_bytes(path).split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ValueError(f"{path}: no lines; expected one example of {n_values} values 0/1 a line")
    rows = np.empty((len(lines), n_values), dtype=np.uint8)

    # Fast path for the canonical layout: single characters '0'/'1' separated by single spaces.
    width = 2 * n_values - 1
    canonical = np.flatnonzero([len(line) == width for line in lines])
    text = np.frombuffer(b"".join(lines[i] for i in canonical), dtype=np.uint8).reshape(-1, width)
    values, separators = text[:, 0::2], text[:, 1::2]
    binary = (values == ord("0")) | (values == ord("1"))
    good = (separators == ord(" ")).all(axis=1) & binary.all(axis=1)
    rows[canonical[good]] = values[good] - ord("0")
    done = np.zeros(len(lines), dtype=bool)
    done[canonical[good]] = True
    # Anything else (other spacing, "1.0", or a bad line) goes through the careful parser.
    for i in np.flatnonzero(~done):
        rows[i] = _parse_amat_line(lines[i], n_values, path, i + 1)
    return rows


def _parse_amat_line(line: bytes, n_values: int, path: str | os.PathLike, number: int) -> np.ndarray:
    tokens = line.split()
    if len(tokens) != n_values:
        raise ValueError(f"{path}, line {number}: {len(tokens)} values, expected {n_values}")
    row = np.empty(n_values, dtype=np.uint8)
    for j, token in enumerate(tokens):
        try:
            value = float(token)
        except ValueError:
            value = None
        if value not in (0.0, 1.0):
            raise ValueError(
                f"{path}, line {number}, value {j + 1}: {token.decode(errors='replace')!r}, expected 0 or 1"
            )
        row[j] = int(value)
    return row


def write_amat(path: str | os.PathLike, array: Any) -> None:
    """Write a 2D array of 0/1 values (numpy or torch, any dtype) to `path` in the .amat format:
    one row a line, values separated by single spaces; gzip-compressed when `path` ends in .gz."""
    array = _as_numpy(array)
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(
            f"array: expected a 2D array (examples, values) with at least one value, got shape {array.shape}"
        )
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"array: expected values 0 or 1 only, got {np.unique(array)[:10].tolist()}")
    text = np.full((array.shape[0], 2 * array.shape[1]), ord(" "), dtype=np.uint8)
    text[:, 0::2] = array.astype(np.uint8) + ord("0")
    text[:, -1] = ord("\n")
    _atomic_write(path, text.tobytes())
