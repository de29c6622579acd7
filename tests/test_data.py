"""Tests for `pgm.data`: the 2D toys against their definitions, digits, and MNIST / binarized MNIST
read from small files written here in the canonical formats (never from the network)."""

import gzip
import io
import math
import urllib.error

import numpy as np
import pytest
import torch

from pgm import data

TOYS = ["moons", "8gaussians", "checkerboard", "spirals", "pinwheel", "rings"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a URL fails the test, unless a test installs its own opener."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(data, "urlopen", refuse)


def min_distance(points, curve):
    """Distance from each of `points` (n, 2) to the nearest of the densely sampled `curve` (m, 2)."""
    return torch.cdist(points.double(), curve.double()).min(dim=1).values


def arc(centre, radius, start, stop, m=4000):
    t = torch.linspace(start, stop, m, dtype=torch.float64)
    return torch.tensor(centre, dtype=torch.float64) + radius * torch.stack([t.cos(), t.sin()], -1)


def all_points(ds):
    return torch.cat([ds.train, ds.valid, ds.test]), torch.cat([ds.train_labels, ds.valid_labels, ds.test_labels])


# ----------------------------------------------------------------------------------------------
# The registry and the container
# ----------------------------------------------------------------------------------------------


def test_available_lists_every_dataset():
    assert data.available() == TOYS + ["digits", "mnist", "binarized_mnist"]


def test_unknown_name_names_argument_value_and_choices():
    with pytest.raises(ValueError, match=r"name: unknown dataset 'cifar'.*moons.*binarized_mnist"):
        data.load("cifar")


def test_repr_is_short():
    text = repr(data.load("moons", n_samples=50))
    assert "moons" in text and "train=40" in text and len(text) < 200


# ----------------------------------------------------------------------------------------------
# 2D toys
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TOYS)
def test_toy_shapes_splits_and_labels(name):
    ds = data.load(name, n_samples=1000)
    assert ds.name == name and ds.shape == (2,)
    assert (ds.train.shape, ds.valid.shape, ds.test.shape) == ((800, 2), (100, 2), (100, 2))
    assert ds.train.dtype == torch.get_default_dtype()
    assert ds.train_labels.shape == (800,) and ds.train_labels.dtype == torch.long
    points, labels = all_points(ds)
    assert torch.isfinite(points).all()
    assert set(labels.tolist()) == set(range(ds.info["num_classes"]))
    assert ds.info["seed"] == 0 and ds.info["n_samples"] == 1000 and ds.info["binarized"] is False


@pytest.mark.parametrize("name", TOYS)
def test_toy_seeding_dtype_device(name):
    a = data.load(name, n_samples=300, seed=3)
    b = data.load(name, n_samples=300, seed=3)
    c = data.load(name, n_samples=300, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train, c.train)
    d64 = data.load(name, n_samples=300, seed=3, dtype=torch.float64, device="cpu")
    assert d64.train.dtype == torch.float64 and d64.train.device == torch.device("cpu")
    torch.testing.assert_close(d64.train.to(a.train.dtype), a.train)
    meta = data.load(name, n_samples=300, device="meta")
    assert meta.train.device.type == "meta" and meta.train_labels.device.type == "meta"


@pytest.mark.parametrize("name", TOYS)
def test_toy_is_centred_at_roughly_unit_scale(name):
    points, _ = all_points(data.load(name, n_samples=20000))
    assert points.mean(0).abs().max() < 0.1
    std = points.std(0)
    assert ((0.6 < std) & (std < 1.5)).all(), std


def test_toy_fractions_and_sizes():
    ds = data.load("rings", n_samples=200, valid_fraction=0.25, test_fraction=0.0)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (150, 50, 0)
    assert ds.test.shape == (0, 2)


def test_moons_lie_on_their_half_circles():
    ds = data.load("moons", n_samples=4000, dtype=torch.float64)
    points, labels = all_points(ds)
    upper = arc((-0.75, -0.375), 1.5, 0, math.pi)
    lower = arc((0.75, 0.375), 1.5, math.pi, 2 * math.pi)
    noise = ds.info["noise"]
    assert noise == 0.15
    assert (min_distance(points[labels == 0], upper) < 5 * noise).all()
    assert (min_distance(points[labels == 1], lower) < 5 * noise).all()
    exact, exact_labels = all_points(data.load("moons", n_samples=500, noise=0.0, dtype=torch.float64))
    assert min_distance(exact[exact_labels == 0], upper).max() < 1e-3


def test_eight_gaussians_cluster_at_their_centres():
    ds = data.load("8gaussians", n_samples=8000, dtype=torch.float64)
    points, labels = all_points(ds)
    angle = labels.double() * math.pi / 4
    centres = 2 * torch.stack([angle.cos(), angle.sin()], -1)
    deviation = points - centres
    assert (deviation.norm(dim=1) < 5 * 0.1).all()
    torch.testing.assert_close(deviation.std(0), torch.full((2,), 0.1, dtype=torch.float64), atol=0.005, rtol=0)
    counts = torch.bincount(labels, minlength=8).double()
    assert (counts / len(labels) - 1 / 8).abs().max() < 0.02


def test_checkerboard_fills_the_dark_squares_only():
    points, labels = all_points(data.load("checkerboard", n_samples=8000, dtype=torch.float64))
    assert (points.abs() <= 2).all()
    column, row = torch.floor(points[:, 0] + 2), torch.floor(points[:, 1] + 2)
    assert ((column + row) % 2 == 0).all()
    dark = [(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    square = torch.tensor(dark, dtype=torch.float64)[labels]
    assert torch.equal(square, torch.stack([column, row], -1))
    inside = points + 2 - square  # uniform on the unit square
    torch.testing.assert_close(inside.mean(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.02, rtol=0)


def test_spirals_follow_their_arms():
    ds = data.load("spirals", n_samples=4000, dtype=torch.float64)
    points, labels = all_points(ds)
    theta = torch.linspace(0, 3 * math.pi, 6000, dtype=torch.float64)
    radius = 2 * theta / (3 * math.pi)
    for k in (0, 1):
        curve = radius[:, None] * torch.stack([(theta + k * math.pi).cos(), (theta + k * math.pi).sin()], -1)
        assert (min_distance(points[labels == k], curve) < 5 * ds.info["noise"]).all()
    assert (points.norm(dim=1) < 2 + 5 * ds.info["noise"]).all()


def test_pinwheel_arms_twist_as_defined():
    points, labels = all_points(data.load("pinwheel", n_samples=8000, dtype=torch.float64))
    q = points / 1.5
    rho = q.norm(dim=1)  # ~ f_r, the radial feature N(1, 0.3^2)
    assert abs(rho.mean() - 1) < 0.03 and abs(rho.std() - 0.3) < 0.03
    keep = rho > 0.4
    predicted = 2 * math.pi * labels.double() / 5 + 0.25 * torch.exp(rho)
    residual = torch.remainder(torch.atan2(q[:, 1], q[:, 0]) - predicted + math.pi, 2 * math.pi) - math.pi
    assert residual[keep].abs().max() < 0.6
    assert residual[keep].std() < 0.1  # ~ atan(f_t / f_r), f_t ~ N(0, 0.05^2)


def test_rings_radii_cluster_at_the_stated_values():
    ds = data.load("rings", n_samples=8000, dtype=torch.float64)
    points, labels = all_points(ds)
    radii = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    r = points.norm(dim=1)
    assert ((r - radii[labels]).abs() < 5 * ds.info["noise"]).all()
    for k in range(4):
        assert abs(r[labels == k].mean() - radii[k]) < 0.01
    share = torch.bincount(labels, minlength=4).double() / len(labels)
    assert (share - radii / radii.sum()).abs().max() < 0.02


def test_toy_argument_errors():
    with pytest.raises(ValueError, match=r"n_samples: expected a positive integer, got 0"):
        data.load("moons", n_samples=0)
    with pytest.raises(ValueError, match=r"n_samples.*2\.5"):
        data.load("moons", n_samples=2.5)
    with pytest.raises(ValueError, match=r"valid_fraction: expected a number in \[0, 1\), got 1\.5"):
        data.load("moons", valid_fraction=1.5)
    with pytest.raises(ValueError, match=r"test_fraction.*-0\.1"):
        data.load("moons", test_fraction=-0.1)
    with pytest.raises(ValueError, match=r"valid_fraction, test_fraction: 0\.6 \+ 0\.4.*no training"):
        data.load("moons", n_samples=100, valid_fraction=0.6, test_fraction=0.4)
    with pytest.raises(ValueError, match=r"noise.*-1"):
        data.load("moons", noise=-1)
    with pytest.raises(TypeError, match=r"load\('checkerboard'\): unexpected keyword argument\(s\) \['noise'\]"):
        data.load("checkerboard", noise=0.1)
    with pytest.raises(ValueError, match=r"binarize: .*'moons'.*got binarize=True"):
        data.load("moons", binarize=True)
    with pytest.raises(ValueError, match=r"seed: expected a non-negative integer, got 'a'"):
        data.load("moons", seed="a")
    with pytest.raises(ValueError, match=r"dtype: expected a floating-point torch.dtype.*torch.int64"):
        data.load("moons", dtype=torch.int64)
    with pytest.raises(ValueError, match=r"device: .*'nonsense'"):
        data.load("moons", device="nonsense")


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.as_tensor(bunch.data / 16.0), torch.as_tensor(bunch.target)


def test_digits_shapes_range_and_contents(sklearn_digits):
    images, targets = sklearn_digits
    ds = data.load("digits", dtype=torch.float64)
    assert ds.shape == (64,) and ds.info["num_classes"] == 10
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 1797 and len(ds.test) == 180
    everything, labels = all_points(ds)
    assert everything.min() == 0 and everything.max() == 1
    # The splits are a permutation of scikit-learn's digits, labels kept with their images.
    order = torch.cdist(everything, images).argmin(dim=1)
    assert torch.equal(torch.sort(order).values, torch.arange(1797))
    assert torch.equal(everything, images[order]) and torch.equal(labels, targets[order])
    square = data.load("digits", flatten=False)
    assert square.shape == (1, 8, 8) and square.valid.shape == (180, 1, 8, 8)


def test_digits_split_is_shuffled_by_seed():
    a, b, c = data.load("digits", seed=1), data.load("digits", seed=1), data.load("digits", seed=2)
    assert torch.equal(a.train, b.train) and not torch.equal(a.train, c.train)
    assert set(a.train_labels.tolist()) == set(range(10))


def test_digits_binarization(sklearn_digits):
    images, _ = sklearn_digits
    grey = data.load("digits", dtype=torch.float64)
    binary = data.load("digits", binarize=True, dtype=torch.float64)
    assert torch.equal(binary.train, (grey.train >= 0.5).double())
    assert binary.info["binarized"] == "threshold"
    grey = data.load("digits", seed=5, dtype=torch.float64)  # same seed: same shuffle
    sampled = data.load("digits", binarize="stochastic", seed=5, dtype=torch.float64)
    again = data.load("digits", binarize="stochastic", seed=5, dtype=torch.float64)
    assert torch.equal(sampled.train, again.train) and sampled.info["binarized"] == "stochastic"
    assert set(sampled.train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(sampled.train[grey.train == 0], torch.zeros_like(sampled.train[grey.train == 0]))
    assert torch.equal(sampled.train[grey.train == 1], torch.ones_like(sampled.train[grey.train == 1]))
    assert abs(sampled.train.mean() - grey.train.mean()) < 0.01  # E[Bernoulli(p)] = p


def test_digits_argument_errors():
    with pytest.raises(ValueError, match=r"binarize: expected False, True, 'threshold' or 'stochastic', got 'yes'"):
        data.load("digits", binarize="yes")
    with pytest.raises(ValueError, match=r"n_samples: applies to the 2D toys only"):
        data.load("digits", n_samples=10)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['colour'\]; expected flatten"):
        data.load("digits", colour=True)


# ----------------------------------------------------------------------------------------------
# The IDX and .amat formats
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    path = tmp_path / f"array.idx{suffix}"
    data.write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = data.read_idx(path)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    assert not list(tmp_path.glob(".*part"))


def test_idx_header_is_big_endian(tmp_path):
    data.write_idx(tmp_path / "x", np.array([[1, 2, 3]], dtype=np.int32))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == b"\x00\x00\x0c\x02" and raw[4:12] == b"\x00\x00\x00\x01\x00\x00\x00\x03"
    assert raw[12:] == b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03"


def test_idx_errors(tmp_path):
    with pytest.raises(ValueError, match=r"array: dtype int64 has no IDX type code"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match=r"bad IDX magic number 0x12340801"):
        data.read_idx(tmp_path / "bad")
    data.write_idx(tmp_path / "ok", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"short: 13 bytes of data after the header, expected 16.*truncated"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(b"\x00" * 100)[:20])
    with pytest.raises(ValueError, match=r"broken.gz: not a valid gzip file"):
        data.read_idx(tmp_path / "broken.gz")


@pytest.mark.parametrize("suffix", [".amat", ".amat.gz"])
def test_amat_round_trip(tmp_path, suffix):
    array = (np.random.default_rng(0).random((7, 784)) < 0.3).astype(np.uint8)
    path = tmp_path / f"x{suffix}"
    data.write_amat(path, torch.as_tensor(array, dtype=torch.float32))
    back = data.read_amat(path)
    assert back.dtype == np.uint8 and np.array_equal(back, array)
    text = gzip.decompress(path.read_bytes()) if suffix.endswith(".gz") else path.read_bytes()
    assert text.split(b"\n")[0] == b" ".join(str(v).encode() for v in array[0])


def test_amat_accepts_loose_whitespace(tmp_path):
    path = tmp_path / "loose.amat"
    path.write_bytes(b"0  1\t1 \r\n1.0 0 0.\n\n")
    assert np.array_equal(data.read_amat(path, n_values=3), [[0, 1, 1], [1, 0, 0]])


def test_amat_errors_name_file_and_line(tmp_path):
    rows = np.zeros((3, 784), dtype=np.uint8)
    data.write_amat(tmp_path / "ok.amat", rows)
    lines = (tmp_path / "ok.amat").read_bytes().split(b"\n")
    short = tmp_path / "short.amat"
    short.write_bytes(b"\n".join(lines[:1] + [lines[1][:-2]] + lines[2:]))
    with pytest.raises(ValueError, match=r"short\.amat, line 2: 783 values, expected 784"):
        data.read_amat(short)
    two = tmp_path / "two.amat.gz"
    two.write_bytes(gzip.compress(b"\n".join(lines[:2] + [b"2" + lines[2][1:]] + lines[3:])))
    with pytest.raises(ValueError, match=r"two\.amat\.gz, line 3, value 1: '2', expected 0 or 1"):
        data.read_amat(two)
    word = tmp_path / "word.amat"
    word.write_bytes(lines[0][:-1] + b"x\n")
    with pytest.raises(ValueError, match=r"word\.amat, line 1, value 784: 'x', expected 0 or 1"):
        data.read_amat(word)
    (tmp_path / "empty.amat").write_bytes(b"\n")
    with pytest.raises(ValueError, match=r"empty\.amat: no lines"):
        data.read_amat(tmp_path / "empty.amat")
    with pytest.raises(ValueError, match=r"array: expected values 0 or 1 only"):
        data.write_amat(tmp_path / "x.amat", np.full((2, 3), 2))
    with pytest.raises(ValueError, match=r"array: expected a 2D array.*\(3,\)"):
        data.write_amat(tmp_path / "x.amat", np.zeros(3))


# ----------------------------------------------------------------------------------------------
# MNIST from IDX files
# ----------------------------------------------------------------------------------------------


def fake_mnist(n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(folder, arrays, compressed=True):
    folder.mkdir(parents=True, exist_ok=True)
    for key, filename in data.MNIST_FILES.items():
        data.write_idx(folder / (filename if compressed else filename[:-3]), arrays[key])


@pytest.mark.parametrize("compressed", [True, False])
def test_mnist_loads_back_exactly(tmp_path, compressed):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays, compressed)
    ds = data.load("mnist", root=tmp_path, valid_fraction=0.2, dtype=torch.float64)
    assert ds.shape == (784,) and (len(ds.train), len(ds.valid), len(ds.test)) == (24, 6, 10)
    train = torch.as_tensor(arrays["train_images"].reshape(30, 784) / 255.0)
    assert torch.equal(ds.train, train[:24]) and torch.equal(ds.valid, train[24:])  # valid: the last ones
    assert torch.equal(ds.test, torch.as_tensor(arrays["test_images"].reshape(10, 784) / 255.0))
    assert torch.equal(ds.valid_labels, torch.as_tensor(arrays["train_labels"][24:], dtype=torch.long))
    assert torch.equal(ds.test_labels, torch.as_tensor(arrays["test_labels"], dtype=torch.long))
    assert ds.info["files"]["train_images"].endswith(".gz") == compressed


def test_mnist_default_valid_split_and_layout(tmp_path):
    write_mnist(tmp_path / "mnist", fake_mnist(n_train=60, n_test=6))  # root/mnist/ is searched too
    ds = data.load("mnist", root=tmp_path, flatten=False)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50, 10, 6)  # 1/6: 10,000 of 60,000
    assert ds.shape == (1, 28, 28) and ds.train.shape == (50, 1, 28, 28)
    assert ds.train.dtype == torch.get_default_dtype()


def test_mnist_root_defaults_to_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path, fake_mnist())
    monkeypatch.setenv("PGM_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    assert len(data.load("mnist").test) == 10
    monkeypatch.delenv("PGM_DATA")
    assert str(data.default_root()).endswith(".cache/pgm/data")


def test_mnist_binarization(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    binary = data.load("mnist", root=tmp_path, binarize=True, valid_fraction=0)
    expected = torch.as_tensor(arrays["train_images"].reshape(30, 784) >= 128, dtype=binary.train.dtype)
    assert torch.equal(binary.train, expected) and binary.valid.shape == (0, 784)
    first = data.load("mnist", root=tmp_path, binarize="stochastic", seed=7)
    second = data.load("mnist", root=tmp_path, binarize="stochastic", seed=7)
    other = data.load("mnist", root=tmp_path, binarize="stochastic", seed=8)
    assert torch.equal(first.test, second.test) and not torch.equal(first.train, other.train)
    assert set(first.train.unique().tolist()) == {0.0, 1.0}
    grey = torch.as_tensor(arrays["train_images"].reshape(30, 784) / 255.0)
    assert abs(first.train.double().mean() - grey.mean()) < 0.01


def test_mnist_corrupt_files(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path, arrays)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    data.write_idx(images, arrays["train_labels"])  # a labels file where the images should be
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: bad magic number 0x00000801, expected 0x00000803"):
        data.load("mnist", root=tmp_path)
    data.write_idx(images, arrays["train_images"][:, :27, :])
    with pytest.raises(ValueError, match=r"MNIST images has shape \(27, 28\), expected \(28, 28\)"):
        data.load("mnist", root=tmp_path)
    data.write_idx(images, arrays["train_images"][:29])
    with pytest.raises(ValueError, match=r"29 images but .*train-labels-idx1-ubyte.gz has 30 labels"):
        data.load("mnist", root=tmp_path)
    data.write_idx(images, arrays["train_images"])
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-1]))
    with pytest.raises(ValueError, match=r"bytes of data after the header, expected 23520"):
        data.load("mnist", root=tmp_path)
    data.write_idx(images, arrays["train_images"])
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(10, 11, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"label 11 seen, expected digits 0..9"):
        data.load("mnist", root=tmp_path)


def test_mnist_argument_errors(tmp_path):
    write_mnist(tmp_path, fake_mnist())
    with pytest.raises(ValueError, match=r"test_fraction: 'mnist' has an official test split"):
        data.load("mnist", root=tmp_path, test_fraction=0.1)
    with pytest.raises(ValueError, match=r"valid_fraction: expected a number in \[0, 1\), got 1"):
        data.load("mnist", root=tmp_path, valid_fraction=1)


def test_missing_files_without_download(tmp_path):
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(FileNotFoundError) as caught:
        data.load("mnist", root=tmp_path)
    message = str(caught.value)
    for filename in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        assert filename in message
    assert "t10k-labels" not in message  # that one is there
    assert str(tmp_path) in message and "download=True" in message and "--download" in message
    with pytest.raises(FileNotFoundError, match=r"binarized_mnist_train\.amat, binarized_mnist_valid\.amat"):
        data.load("binarized_mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# binarized MNIST from .amat files
# ----------------------------------------------------------------------------------------------


def test_binarized_mnist_loads_back_exactly(tmp_path):
    rng = np.random.default_rng(1)
    splits = {split: (rng.random((n, 784)) < 0.2).astype(np.uint8) for split, n in [("train", 5), ("valid", 3), ("test", 4)]}
    data.write_amat(tmp_path / "binarized_mnist_train.amat.gz", splits["train"])
    data.write_amat(tmp_path / "binarized_mnist_valid.amat", splits["valid"])
    data.write_amat(tmp_path / "binarized_mnist_test.amat", splits["test"])
    ds = data.load("binarized_mnist", root=tmp_path, binarize=True)
    for split, array in splits.items():
        assert torch.equal(getattr(ds, split), torch.as_tensor(array, dtype=torch.get_default_dtype()))
        assert getattr(ds, f"{split}_labels") is None
    assert ds.shape == (784,) and ds.info["binarized"] == "fixed"
    square = data.load("binarized_mnist", root=tmp_path, flatten=False, dtype=torch.float64)
    assert square.test.shape == (4, 1, 28, 28) and square.test.dtype == torch.float64
    with pytest.raises(ValueError, match=r"valid_fraction: 'binarized_mnist' has an official validation split"):
        data.load("binarized_mnist", root=tmp_path, valid_fraction=0.1)


def test_binarized_mnist_reports_bad_line(tmp_path):
    for split in ("train", "valid", "test"):
        data.write_amat(tmp_path / f"binarized_mnist_{split}.amat", np.zeros((2, 784), dtype=np.uint8))
    (tmp_path / "binarized_mnist_valid.amat").write_bytes(b"0 1\n")
    with pytest.raises(ValueError, match=r"binarized_mnist_valid\.amat, line 1: 2 values, expected 784"):
        data.load("binarized_mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# Downloading, with the URL opener served from memory
# ----------------------------------------------------------------------------------------------


def serve(monkeypatch, files):
    """Make `data.urlopen` answer URLs in `files` with their bytes and fail on others; returns the log."""
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        if url not in files:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(files[url])

    monkeypatch.setattr(data, "urlopen", fake_urlopen)
    return requested


def test_download_mnist(tmp_path, monkeypatch):
    arrays = fake_mnist()
    source = tmp_path / "source"
    write_mnist(source, arrays)
    mirror = data.MNIST_MIRRORS[0]
    assert mirror == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    files = {mirror + name: (source / name).read_bytes() for name in data.MNIST_FILES.values()}
    requested = serve(monkeypatch, files)
    root = tmp_path / "root"
    ds = data.load("mnist", root=root, download=True, valid_fraction=0.2)
    assert sorted(requested) == sorted(files)
    for name in data.MNIST_FILES.values():
        assert (root / "mnist" / name).read_bytes() == (source / name).read_bytes()
    assert not list((root / "mnist").glob(".*"))  # no temporary files left behind
    assert torch.equal(ds.test_labels, torch.as_tensor(arrays["test_labels"], dtype=torch.long))
    requested.clear()
    data.load("mnist", root=root, download=True)  # now present: no requests
    assert requested == []


def test_download_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_mnist(source, fake_mnist())
    second = data.MNIST_MIRRORS[1]
    requested = serve(monkeypatch, {second + name: (source / name).read_bytes() for name in data.MNIST_FILES.values()})
    ds = data.load("mnist", root=tmp_path / "root", download=True)
    assert len(ds.test) == 10 and len(requested) == 8


def test_download_only_missing_files_and_fail_cleanly(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_mnist(source, fake_mnist())
    root = tmp_path / "root"
    write_mnist(root, fake_mnist())
    (root / "t10k-images-idx3-ubyte.gz").unlink()
    requested = serve(monkeypatch, {})
    with pytest.raises(OSError, match=r"could not download t10k-images-idx3-ubyte.gz into .*ossci-datasets.*cvdf"):
        data.load("mnist", root=root, download=True)
    assert all(url.endswith("t10k-images-idx3-ubyte.gz") for url in requested)
    assert list((root / "mnist").iterdir()) == []  # nothing half-written


def test_download_binarized_mnist(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    files = {}
    for split in ("train", "valid", "test"):
        data.write_amat(tmp_path / f"{split}.amat", (rng.random((3, 784)) < 0.5).astype(np.uint8))
        url = f"http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
        files[url] = (tmp_path / f"{split}.amat").read_bytes()
    serve(monkeypatch, files)
    ds = data.load("binarized_mnist", root=tmp_path / "root", download=True)
    for split in ("train", "valid", "test"):
        assert (tmp_path / "root" / "binarized_mnist" / f"binarized_mnist_{split}.amat").is_file()
        assert torch.equal(getattr(ds, split), torch.as_tensor(data.read_amat(tmp_path / f"{split}.amat"), dtype=ds.train.dtype))
