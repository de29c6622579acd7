"""Sample-quality metrics: closed forms, reference computations and known behaviour on the digits."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import inference.metrics as M
import pgm.data


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Train the feature classifier into a private cache: the test covers training and caching."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGM_CACHE", str(tmp_path_factory.mktemp("cache")))
        M._LOADED.clear()
        yield
        M._LOADED.clear()


@pytest.fixture(scope="module")
def digits():
    return pgm.data.load("digits", dtype=torch.float64)


def g(seed):
    return torch.Generator().manual_seed(seed)


def blur(x, s):
    if s == 0:
        return x
    k = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-k**2 / (2 * s * s))
    k = k / k.sum()
    im = x.reshape(-1, 1, 8, 8)
    im = F.conv2d(F.pad(im, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    im = F.conv2d(F.pad(im, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1))
    return im.reshape(len(x), 64)


# ---------------------------------------------------------------------------- Fréchet distance
def test_frechet_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = torch.randn(5, 5, generator=g(0), dtype=torch.float64), torch.randn(5, 5, generator=g(1), dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(5), b @ b.T + 0.1 * torch.eye(5)
    mu1, mu2 = torch.randn(5, generator=g(2)), torch.randn(5, generator=g(3))
    cross = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float((mu1 - mu2).double().square().sum() + torch.trace(s1 + s2) - 2 * float(cross.trace()))
    assert M.frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # diagonal covariances: the closed form sum (sqrt(a) - sqrt(b))^2
    d1, d2 = torch.tensor([1.0, 4.0]), torch.tensor([9.0, 1.0])
    assert M.frechet_distance_from_stats(torch.zeros(2), torch.diag(d1), torch.ones(2), torch.diag(d2)) == pytest.approx(
        2 + (1 - 3) ** 2 + (2 - 1) ** 2)


def test_frechet_of_samples_estimates_the_gaussians_distance():
    x = torch.randn(20000, 2, generator=g(0), dtype=torch.float64)
    y = torch.randn(20000, 2, generator=g(1), dtype=torch.float64) * 2 + 1
    # |mu|^2 = 2; per dimension (1 - 2)^2 = 1
    assert M.frechet_distance(x, y) == pytest.approx(4.0, rel=0.05)
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------- KID and MMD
def _brute_mmd2(x, y, k):
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def test_kid_is_the_unbiased_polynomial_mmd():
    x = torch.randn(12, 3, generator=g(0), dtype=torch.float64)
    y = torch.randn(12, 3, generator=g(1), dtype=torch.float64) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.SampleSizeWarning)
        kid, std = M.kernel_inception_distance(x, y, subsets=3, subset_size=12)
    assert kid == pytest.approx(_brute_mmd2(x, y, lambda a, b: (a @ b / 3 + 1) ** 3), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-9)  # every subset is the whole set


def test_kid_is_centred_on_zero_for_one_distribution():
    values = []
    for seed in range(100):
        x = torch.randn(100, 4, generator=g(2 * seed), dtype=torch.float64)
        y = torch.randn(100, 4, generator=g(2 * seed + 1), dtype=torch.float64)
        values.append(M.kernel_inception_distance(x, y, subsets=1)[0])
    v = torch.tensor(values)
    assert abs(v.mean()) < 3 * v.std() / math.sqrt(len(v))
    assert (v < 0).any()  # unbiased: negative values occur


def test_mmd_matches_brute_force_and_median_heuristic():
    x = torch.randn(10, 2, generator=g(0), dtype=torch.float64)
    y = torch.randn(9, 2, generator=g(1), dtype=torch.float64) + 1
    z = torch.cat([x, y])
    dists = [float((z[i] - z[j]).norm()) for i in range(19) for j in range(i + 1, 19)]
    h = sorted(dists)[len(dists) // 2]  # odd count: the median
    assert M.median_bandwidth(x, y) == pytest.approx(h)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.SampleSizeWarning)
        value = M.mmd(x, y)
        statistic = M.mmd_test(x, y, permutations=5)[0]
    assert value == pytest.approx(_brute_mmd2(x, y, lambda a, b: torch.exp(-(a - b).square().sum() / (2 * h * h))), rel=1e-10)
    assert statistic == pytest.approx(value, rel=1e-10)


def test_mmd_permutation_test_holds_its_level_and_rejects_a_shift():
    rejections = 0
    for seed in range(60):
        x = torch.randn(40, 2, generator=g(2 * seed), dtype=torch.float64)
        y = torch.randn(40, 2, generator=g(2 * seed + 1), dtype=torch.float64)
        rejections += M.mmd_test(x, y, permutations=99, seed=seed)[1] <= 0.05
    assert rejections / 60 <= 0.12  # level 0.05; 0.12 is 2.4 sd of a binomial above it
    x = torch.randn(100, 2, generator=g(0), dtype=torch.float64)
    y = torch.randn(100, 2, generator=g(1), dtype=torch.float64) + torch.tensor([0.7, 0.0], dtype=torch.float64)
    value, p = M.mmd_test(x, y, permutations=199)
    assert value > 0 and p <= 0.01


# ---------------------------------------------------------------------------- IS, P/R, Parzen, modes
def test_inception_score_closed_forms():
    onehot = torch.eye(5).repeat(20, 1)
    assert M.inception_score(onehot)[0] == pytest.approx(5.0)
    same = torch.tensor([[0.7, 0.2, 0.1]]).repeat(100, 1)
    assert M.inception_score(same)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="probs"):
        M.inception_score(torch.ones(10, 3))


def test_inception_score_of_real_digits(digits):
    _, p = M.features(digits.test)
    assert 8.5 < M.inception_score(p)[0] <= 10.0
    _, p3 = M.features(torch.cat([digits.train, digits.test])[torch.cat([digits.train_labels, digits.test_labels]) == 3])
    assert M.inception_score(p3)[0] < 1.3


def test_precision_recall_by_hand_and_collapse():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0], [11.0], [12.0], [13.0]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.SampleSizeWarning)
        # k = 1: real radii are 1; fake points 0.5 and 20: precision 1/2. Fake radii: |0.5 - 20|
        # (each is the other's nearest): every real point within 19.5 of 0.5 or 20 is covered.
        p, r = M.precision_recall(real, torch.tensor([[0.5], [20.0]], dtype=torch.float64), k=1)
        assert (p, r) == (0.5, 1.0)
        # collapse on the 8 Gaussians: all samples at one mode
        data = pgm.data.load("8gaussians", n_samples=2000, dtype=torch.float64).train
        collapsed = torch.tensor([[2.0, 0.0]], dtype=torch.float64) + 0.1 * torch.randn(1000, 2, generator=g(0), dtype=torch.float64)
        p, r = M.precision_recall(data, collapsed)
        assert p > 0.9 and r < 0.2
        p, r = M.precision_recall(data[:800], data[800:1600])
        assert p > 0.9 and r > 0.9
    cov = M.mode_coverage(collapsed)
    assert cov["modes"] == 1 and cov["high_quality"] > 0.95
    assert M.mode_coverage(data)["modes"] == 8


def test_parzen_closed_form_and_warning():
    s = torch.zeros(1, 3, dtype=torch.float64)
    with pytest.warns(M.SampleSizeWarning, match="parzen"):
        value, sigma = M.parzen_log_likelihood(s, torch.zeros(2, 3), sigma=1.0)
    assert value == pytest.approx(-1.5 * math.log(2 * math.pi)) and sigma == 1.0
    with pytest.raises(ValueError, match="valid"):
        M.parzen_log_likelihood(s, s)


# ---------------------------------------------------------------------------- on the digits
#: The digits classifier's accuracy on the 180 test digits must exceed this (it reaches 0.978).
DIGITS_ACCURACY = 0.95


def test_extractor_accuracy_eval_mode_and_batch_independence(digits):
    net = M.extractor("digits")
    assert not net.training
    net.train()  # always in eval mode
    assert not net.training and not any(m.training for m in net.modules())
    assert not any(p.requires_grad for p in net.parameters())
    _, probs = M.features(digits.test)
    accuracy = float((probs.argmax(1) == digits.test_labels).double().mean())
    assert accuracy > DIGITS_ACCURACY and accuracy == pytest.approx(net.info["test_accuracy"])
    f1, p1 = M.features(digits.test, batch_size=1024)
    f2, p2 = M.features(digits.test.float(), batch_size=7)
    assert torch.allclose(f1, f2, atol=1e-5) and torch.allclose(p1, p2, atol=1e-6)


def test_extractor_training_is_deterministic():
    """Two trainings from scratch with the digits recipe give identical weights (and accuracy),
    whatever the global random state; another seed gives other weights."""
    one = M.extractor("digits")  # trained from scratch into this module's private cache
    torch.manual_seed(456)
    state = torch.random.get_rng_state()
    two, acc2 = M._train_classifier("digits", M.RECIPES["digits"])
    assert torch.equal(state, torch.random.get_rng_state())  # the global stream is left alone
    assert one.info["test_accuracy"] == acc2
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))
    other, _ = M._train_classifier("digits", M.Recipe(steps=5, seed=1))
    assert not torch.equal(other.head.weight, one.head.weight)
    assert M.RECIPES["digits"].key("digits") != M.Recipe(seed=1).key("digits")  # the recipe keys the cache


def test_extractor_cache_round_trip(monkeypatch, digits):
    net = M.extractor("digits")
    path = M.cache_dir() / f"digits-{net.info['key']}.pt"
    assert path.exists()
    f1, _ = M.features(digits.test)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache holds the classifier")

    M._LOADED.clear()
    with monkeypatch.context() as mp:
        mp.setattr(M, "_train_classifier", no_training)
        loaded = M.extractor("digits")  # from the file
    assert loaded is not net and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    assert loaded.info["test_accuracy"] == net.info["test_accuracy"]
    assert torch.equal(M.features(digits.test)[0], f1)
    # a corrupt cache file is retrained (with a warning) and rewritten, never trusted
    calls = []

    def retrain(dataset, recipe):  # stands for the (deterministic) training: a copy of the weights
        calls.append(dataset)
        copy = M.Classifier(64, recipe.hidden, 10).to(torch.float64)
        copy.load_state_dict(net.state_dict())
        return copy, net.info["test_accuracy"]

    path.write_bytes(b"not a checkpoint")
    M._LOADED.clear()
    with monkeypatch.context() as mp, pytest.warns(UserWarning, match="unreadable"):
        mp.setattr(M, "_train_classifier", retrain)
        M.extractor("digits")
    assert calls == ["digits"]
    rewritten = torch.load(path, weights_only=True)
    assert all(torch.equal(a, rewritten["state"][k]) for k, a in net.state_dict().items())
    M._LOADED.clear()


def test_no_test_needs_mnist_files():
    """MNIST has a recipe, but only the digits (shipped with scikit-learn) are used by the tests."""
    assert "mnist" in M.RECIPES and all(k[0] == "digits" for k in M._LOADED)


def test_fd_kid_near_zero_on_data_and_grow_with_corruption(digits):
    unseen = torch.cat([digits.valid, digits.test])
    fu, _ = M.features(unseen)
    kids, fds = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.SampleSizeWarning)
        for seed in range(20):
            perm = torch.randperm(len(unseen), generator=g(seed))
            a, b = fu[perm[:180]], fu[perm[180:]]
            kids.append(M.kernel_inception_distance(a, b, subsets=1)[0])
            fds.append(M.frechet_distance(a, b))
        kid = torch.tensor(kids)
        assert abs(kid.mean()) < 3 * kid.std() / math.sqrt(len(kid))  # centred on 0
        ref_fd = M.frechet_distance(M.features(digits.valid)[0], M.features(digits.test)[0])
        for corrupt, strengths in (("noise", (0.25, 0.4, 0.6)), ("blur", (0.6, 1.0, 1.5))):
            fd, kd = [sum(fds) / len(fds)], [0.0]
            for s in strengths:
                x = digits.valid + s * torch.randn(digits.valid.shape, generator=g(1), dtype=torch.float64) \
                    if corrupt == "noise" else blur(digits.valid, s)
                fx, _ = M.features(x)
                fd.append(M.frechet_distance(fx, M.features(digits.test)[0]))
                kd.append(M.kernel_inception_distance(fx, M.features(digits.test)[0], subsets=1)[0])
            assert fd == sorted(fd) and kd == sorted(kd), (corrupt, fd, kd)
            assert fd[-1] > 5 * fd[0] and kd[-1] > 10 * kid.std()
    assert ref_fd < 2 * max(fds)


def test_evaluate_samples_and_small_sample_warning(digits):
    with pytest.warns(M.SampleSizeWarning):
        r = M.evaluate_samples(digits.valid, digits, ("fd", "kid", "is", "pr", "mmd"), permutations=20)
    assert set(r) == {"fd", "kid", "kid_std", "is", "precision", "recall", "mmd", "mmd_p"}
    assert r["is"] > 8 and r["mmd_p"] > 0.01
    with pytest.raises(ValueError, match="metrics"):
        M.evaluate_samples(digits.valid, digits, ("fid",))
    with pytest.raises(ValueError, match="is"):
        M.evaluate_samples(torch.randn(50, 2), torch.randn(50, 2), ("is",), dataset="8gaussians")
    with pytest.raises(ValueError, match="samples"):
        M.evaluate_samples(torch.randn(50, 3), digits, ("fd",))
