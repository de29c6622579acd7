"""Sample-quality metrics that need no download.

Image metrics are computed on the features of a small classifier trained on the data set itself
(`extractor`): its penultimate activations are the features (Fréchet distance, KID,
precision/recall) and its class probabilities the predictions (inception score). The classifier
is trained deterministically (fixed seed, fixed recipe, full precision) on first use and cached
under ``$XDG_CACHE_HOME/pgm/metrics`` (else ``~/.cache/pgm/metrics``; ``$PGM_CACHE`` overrides),
keyed by the data set and a hash of its training recipe; it is always used in eval mode and in
float64, so features do not depend on the batch size. On the 2D toys the features are the
points themselves, and `mode_coverage` counts the modes a sampler hits.

The functions on features:

- `frechet_distance` (Heusel et al. 2017): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``;
- `kernel_inception_distance` (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic
  polynomial kernel ``(x.y / d + 1)^3``, averaged over random subsets;
- `inception_score` (Salimans et al. 2016): ``exp E_x KL(p(y|x) || p(y))``;
- `precision_recall` (Kynkäänniemi et al. 2019): the share of generated points inside the
  union of k-nearest-neighbour balls of the real ones (precision), and the reverse (recall);
- `mmd`, `mmd_test`: the unbiased MMD^2 with a Gaussian kernel whose bandwidth is the median
  pairwise distance of the pooled sample, and its permutation test;
- `parzen_log_likelihood`: the mean log density of test points under a Gaussian kernel density
  estimate on the samples. Theis, van den Oord & Bethge (2016, "A note on the evaluation of
  generative models") show it is unreliable: in 64+ dimensions it is far from the true
  log-likelihood even with millions of samples, and can rank models in the wrong order. It is
  here for comparison with older papers and for the evaluation tutorial, never to rank models.
- `mode_coverage`: for mixtures with known centres (the 8 Gaussians).

`evaluate_samples` computes a chosen set in one call; `metrics_callback` does so every N steps
during `inference.fit`, into the run's `History`.

A `SampleSizeWarning` is raised when a sample is too small for a metric to be stable.

>>> x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
>>> round(frechet_distance(x, x), 6)
0.0
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "SampleSizeWarning",
    "Classifier",
    "Recipe",
    "RECIPES",
    "cache_dir",
    "extractor",
    "features",
    "frechet_distance",
    "kernel_inception_distance",
    "inception_score",
    "precision_recall",
    "mmd",
    "mmd_test",
    "median_bandwidth",
    "parzen_log_likelihood",
    "mode_coverage",
    "TOY_MODES",
    "evaluate_samples",
    "metrics_callback",
    "METRICS",
]


class SampleSizeWarning(UserWarning):
    """A sample is too small for a metric to be stable."""


def _warn_small(metric: str, n: int, minimum: int, why: str) -> None:
    if n < minimum:
        warnings.warn(f"{metric}: {n} samples is too few for a stable estimate ({why}; use at least {minimum})",
                      SampleSizeWarning, stacklevel=3)


def _matrix(name: str, x: Any, minimum: int = 2) -> torch.Tensor:
    """`x` as a float64 matrix (n, d): rows are samples, trailing dims flattened."""
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(x)
        except Exception:
            raise TypeError(f"{name}: expected a tensor of samples, got {type(x).__name__}") from None
    if x.dim() < 2 or x.shape[0] < minimum:
        raise ValueError(f"{name}: expected at least {minimum} samples, batch first (n, ...), got shape {tuple(x.shape)}")
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: holds non-finite values")
    return x


def _same_width(a: torch.Tensor, b: torch.Tensor, names=("real", "fake")) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[1]}: expected {a.shape[1]} features per sample like {names[0]}, got {b.shape[1]}")


# ----------------------------------------------------------------------------------------------
# Fréchet distance
# ----------------------------------------------------------------------------------------------
def _sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    The trace of ``(S1 S2)^1/2`` is computed as that of the symmetric ``(S1^1/2 S2 S1^1/2)^1/2``
    (same eigenvalues), by eigendecompositions in float64.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    r1 = _sqrtm_psd(s1)
    middle = r1 @ s2 @ r1
    tr_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_cross
    return float(value.clamp_min(0))


def frechet_distance(real, fake) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features (rows): FID's
    formula on whatever features are given (`features` for images, the points for 2D toys)."""
    a, b = _matrix("real", real), _matrix("fake", fake)
    _same_width(a, b)
    d = a.shape[1]
    for name, x in (("real", a), ("fake", b)):
        _warn_small(f"frechet_distance ({name})", len(x), 2 * d + 2, f"the {d}x{d} covariance needs many more rows than {d}")
    return frechet_distance_from_stats(a.mean(0), torch.cov(a.T).reshape(d, d), b.mean(0), torch.cov(b.T).reshape(d, d))


# ----------------------------------------------------------------------------------------------
# Kernel inception distance and MMD
# ----------------------------------------------------------------------------------------------
def _unbiased_mmd2(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> torch.Tensor:
    m, n = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kxy.mean()


def _polynomial(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_inception_distance(real, fake, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD^2 between feature sets with the kernel ``(x.y / d + 1)^3``, averaged
    over `subsets` random subsets of ``min(subset_size, n_real, n_fake)`` rows of each (drawn
    without replacement from a generator seeded by `seed`). Returns ``(mean, std)`` over subsets.
    Unbiased: its expectation is 0 when both sets come from one distribution (it can be negative).
    """
    a, b = _matrix("real", real), _matrix("fake", fake)
    _same_width(a, b)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"subsets, subset_size: expected >= 1 and >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, len(a), len(b))
    _warn_small("kernel_inception_distance", m, 100, "each subset's estimate has a large variance")
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        values.append(_unbiased_mmd2(_polynomial(x, x), _polynomial(y, y), _polynomial(x, y)))
    v = torch.stack(values)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


def median_bandwidth(x, y=None) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of the pooled
    sample (`x` and `y` together)."""
    z = _matrix("x", x) if y is None else torch.cat([_matrix("x", x), _matrix("y", y)])
    d = torch.cdist(z, z)
    i, j = torch.triu_indices(len(z), len(z), offset=1)
    med = float(d[i, j].median())
    return med if med > 0 else 1.0


def _gaussian_gram(z: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return torch.exp(-torch.cdist(z, z).square() / (2 * bandwidth**2))


def mmd(x, y, bandwidth: float | None = None) -> float:
    """The unbiased MMD^2 between samples `x` and `y` with the Gaussian kernel
    ``exp(-|a - b|^2 / (2 h^2))``, `h` = `bandwidth` or the median heuristic (`median_bandwidth`)."""
    a, b = _matrix("x", x), _matrix("y", y)
    _same_width(a, b, ("x", "y"))
    _warn_small("mmd", min(len(a), len(b)), 20, "the estimate's variance is large")
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    k = _gaussian_gram(torch.cat([a, b]), h)
    m = len(a)
    return float(_unbiased_mmd2(k[:m, :m], k[m:, m:], k[:m, m:]))


def mmd_test(x, y, *, permutations: int = 500, bandwidth: float | None = None, seed: int = 0) -> tuple[float, float]:
    """The permutation two-sample test on the unbiased MMD^2 (Gaussian kernel, median heuristic on
    the pooled sample, which permutations leave unchanged). Returns ``(mmd2, p_value)`` with
    ``p = (1 + #{permuted >= observed}) / (1 + permutations)``: a valid level-alpha test rejects
    when ``p <= alpha``."""
    a, b = _matrix("x", x), _matrix("y", y)
    _same_width(a, b, ("x", "y"))
    if permutations < 1:
        raise ValueError(f"permutations: expected >= 1, got {permutations}")
    _warn_small("mmd_test", min(len(a), len(b)), 20, "the test has little power")
    h = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    k = _gaussian_gram(torch.cat([a, b]), h)
    m, n = len(a), len(a) + len(b)
    total, rows, diag = k.sum(), k.sum(1), k.diagonal()

    def stats(members: torch.Tensor) -> torch.Tensor:
        """The unbiased MMD^2 for each column of `members` (n, P), 1 where a point is in x:
        block sums as quadratic forms, so P permutations cost one matrix product."""
        sxx = (members * (k @ members)).sum(0)
        sxy = rows @ members - sxx
        syy = total - sxx - 2 * sxy
        dx = diag @ members
        dy = diag.sum() - dx
        return (sxx - dx) / (m * (m - 1)) + (syy - dy) / ((n - m) * (n - m - 1)) - 2 * sxy / (m * (n - m))

    first = torch.zeros(n, 1, dtype=k.dtype)
    first[:m] = 1
    observed = stats(first)[0]
    g = torch.Generator().manual_seed(seed)
    exceed = 0
    for start in range(0, permutations, 64):
        chunk = min(64, permutations - start)
        members = torch.zeros(n, chunk, dtype=k.dtype)
        for j in range(chunk):
            members[torch.randperm(n, generator=g)[:m], j] = 1
        exceed += int((stats(members) >= observed).sum())
    return float(observed), (1 + exceed) / (1 + permutations)


# ----------------------------------------------------------------------------------------------
# Inception score, precision / recall, Parzen windows, mode coverage
# ----------------------------------------------------------------------------------------------
def inception_score(probs, splits: int = 1) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` from class probabilities `probs` (n, classes), with the
    marginal p(y) taken over each of `splits` equal parts. Returns ``(mean, std)`` over the parts.
    Between 1 (every prediction alike, or uncertain) and the number of classes (confident
    predictions, classes equally often). The usual 10 splits need thousands of samples each; the
    default is one part."""
    p = _matrix("probs", probs)
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-6):
        raise ValueError("probs: expected rows of class probabilities (non-negative, summing to 1)")
    if not 1 <= splits <= len(p):
        raise ValueError(f"splits: expected between 1 and the number of samples {len(p)}, got {splits}")
    _warn_small("inception_score", len(p) // splits, 10 * p.shape[1], "the marginal p(y) of each part is noisy")
    scores = []
    for part in p.tensor_split(splits):
        marginal = part.mean(0, keepdim=True)
        kl = torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal.expand_as(part))
        scores.append(kl.sum(1).mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std()) if splits > 1 else 0.0


def _kth_distance(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    out = []
    for rows in x.split(chunk):
        out.append(torch.cdist(rows, x).kthvalue(k + 1, dim=1).values)  # +1: the row itself at 0
    return torch.cat(out)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """For each point, whether it lies in some ball (centre, radius)."""
    out = []
    for rows in points.split(chunk):
        out.append((torch.cdist(rows, centres) <= radii).any(1))
    return torch.cat(out)


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each real feature vector gets
    a ball reaching its k-th nearest real neighbour; precision is the share of fake vectors in
    the union of those balls; recall is the share of real vectors in the union of the fake
    vectors' k-NN balls. High precision with low recall is mode collapse; the reverse, samples
    spread beyond the data."""
    a, b = _matrix("real", real), _matrix("fake", fake)
    _same_width(a, b)
    if not isinstance(k, int) or k < 1 or k >= min(len(a), len(b)):
        raise ValueError(f"k: expected an integer between 1 and {min(len(a), len(b)) - 1}, got {k!r}")
    _warn_small("precision_recall", min(len(a), len(b)), 1000 if a.shape[1] > 2 else 200,
                "k-NN balls of a small sample misjudge the manifold")
    precision = _inside(b, a, _kth_distance(a, k)).double().mean()
    recall = _inside(a, b, _kth_distance(b, k)).double().mean()
    return float(precision), float(recall)


def parzen_log_likelihood(samples, test, *, sigma: float | None = None, valid=None,
                          sigmas: Sequence[float] | None = None, chunk: int = 1024) -> tuple[float, float]:
    """The mean log density of `test` points under a Gaussian Parzen window (kernel density
    estimate) centred on the model's `samples`, with bandwidth `sigma`, or the one among `sigmas`
    (default: 20 values log-spaced over [0.01, 1] times the samples' mean per-dimension std) that
    maximises the mean log density of `valid`. Returns ``(mean log density, sigma)``.

    UNRELIABLE (Theis et al. 2016): in more than a few dimensions it is far from the model's
    log-likelihood, rewards memorising the training set and can order models wrongly. Report it
    only beside other metrics, never to rank models.
    """
    s, t = _matrix("samples", samples, 1), _matrix("test", test, 1)
    _same_width(s, t, ("samples", "test"))
    _warn_small("parzen_log_likelihood", len(s), 10_000, "a kernel density estimate needs very many samples")

    def score(points: torch.Tensor, h: float) -> float:
        d = s.shape[1]
        total = 0.0
        for rows in points.split(chunk):
            sq = torch.cdist(rows, s).square()
            lp = torch.logsumexp(-sq / (2 * h * h), dim=1) - math.log(len(s)) - d * math.log(h * math.sqrt(2 * math.pi))
            total += float(lp.sum())
        return total / len(points)

    if sigma is None:
        if valid is None:
            raise ValueError("sigma: give a bandwidth, or valid= data to choose it on (never the test data)")
        v = _matrix("valid", valid)
        _same_width(s, v, ("samples", "valid"))
        scale = float(s.std(0).mean())
        grid = sigmas if sigmas is not None else [scale * 10 ** e for e in torch.linspace(-2, 0, 20).tolist()]
        sigma = max(grid, key=lambda h: score(v, float(h)))
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive bandwidth, got {sigma!r}")
    return score(t, float(sigma)), float(sigma)


#: Known mixtures of the 2D toys: (centres, component std).
TOY_MODES: dict[str, tuple[torch.Tensor, float]] = {
    "8gaussians": (
        torch.tensor([[2 * math.cos(k * math.pi / 4), 2 * math.sin(k * math.pi / 4)] for k in range(8)], dtype=torch.float64),
        0.1,
    ),
}


def mode_coverage(samples, centres="8gaussians", std: float | None = None, *, radius: float = 3.0,
                  min_share: float = 0.2) -> dict[str, float]:
    """Mode coverage of samples from a mixture with known `centres` (k, d) and component `std`
    (or the name of a toy in `TOY_MODES`). A sample is *high quality* when it lies within
    ``radius * std`` of its nearest centre (VEEGAN's 3 standard deviations); a mode is *hit* when
    it holds at least `min_share` of its fair share (n / k) of the high-quality samples.

    Returns ``{"modes": modes hit, "num_modes": k, "high_quality": share of high-quality samples}``.
    """
    if isinstance(centres, str):
        if centres not in TOY_MODES:
            raise ValueError(f"centres: no known modes for {centres!r}; expected a tensor or one of {list(TOY_MODES)}")
        centres, default_std = TOY_MODES[centres]
        std = default_std if std is None else std
    c = _matrix("centres", centres)
    x = _matrix("samples", samples)
    _same_width(c, x, ("centres", "samples"))
    if std is None or not std > 0:
        raise ValueError(f"std: expected the components' positive standard deviation, got {std!r}")
    _warn_small("mode_coverage", len(x), 50 * len(c), "modes may be missed by chance")
    dist, nearest = torch.cdist(x, c).min(1)
    good = dist <= radius * std
    counts = torch.bincount(nearest[good], minlength=len(c))
    hit = int((counts >= min_share * len(x) / len(c)).sum())
    return {"modes": float(hit), "num_modes": float(len(c)), "high_quality": float(good.double().mean())}


# ----------------------------------------------------------------------------------------------
# The feature extractor: a small classifier trained on the data set
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How a data set's feature classifier is trained (its hash keys the cache)."""

    hidden: tuple[int, ...] = (128, 64)
    steps: int = 400
    batch_size: int | None = 128  # None: the whole training split each step
    lr: float = 5e-3
    weight_decay: float = 1e-4
    seed: int = 0
    data_seed: int = 0
    noise: float = 0.05  # Gaussian input noise during training, so features degrade smoothly

    def key(self, dataset: str) -> str:
        text = json.dumps({"dataset": dataset, **asdict(self), "version": 1}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Recipes of the feature classifiers, by data set.
RECIPES: dict[str, Recipe] = {
    "digits": Recipe(),
    "mnist": Recipe(hidden=(256, 64), steps=2000, batch_size=256, lr=1e-3),
}


class Classifier(nn.Module):
    """An MLP classifier ``in_dim -> hidden... -> classes``; `features` gives the last hidden
    layer's activations (after the ReLU), `forward` the logits. Inputs are flattened."""

    def __init__(self, in_dim: int, hidden: Sequence[int], classes: int) -> None:
        super().__init__()
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dims[-1], classes)

    def train(self, mode: bool = True) -> "Classifier":
        """A feature extractor is always in eval mode: ``train()`` leaves it there (its training
        in `_train_classifier` needs no train mode: the network has no dropout or batch norm)."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir() -> Path:
    """Where feature classifiers are cached: ``$PGM_CACHE/metrics``, else
    ``$XDG_CACHE_HOME/pgm/metrics``, else ``~/.cache/pgm/metrics``."""
    if os.environ.get("PGM_CACHE"):
        return Path(os.environ["PGM_CACHE"]).expanduser() / "metrics"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pgm" / "metrics"


_LOADED: dict[tuple[str, str], Classifier] = {}


def _train_classifier(dataset: str, recipe: Recipe) -> tuple[Classifier, float]:
    import pgm.data

    data = pgm.data.load(dataset, seed=recipe.data_seed, dtype=torch.float64, device="cpu")
    if data.train_labels is None:
        raise ValueError(f"dataset: {dataset!r} has no labels to train a feature classifier on")
    x, y = data.train.reshape(len(data.train), -1), data.train_labels
    classes = int(data.info.get("num_classes", int(y.max()) + 1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = Classifier(x.shape[1], recipe.hidden, classes).to(torch.float64)
        g = torch.Generator().manual_seed(recipe.seed)
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        for _ in range(recipe.steps):
            if recipe.batch_size is None:
                xb, yb = x, y
            else:
                index = torch.randint(len(x), (recipe.batch_size,), generator=g)
                xb, yb = x[index], y[index]
            xb = xb + recipe.noise * torch.randn(xb.shape, generator=g, dtype=xb.dtype)
            loss = nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(data.test).argmax(1) == data.test_labels).double().mean())
    return net, accuracy


def extractor(dataset: str = "digits", *, cache: bool = True) -> Classifier:
    """The feature classifier of `dataset` (a key of `RECIPES`), in eval mode and float64: loaded
    from the cache, or trained deterministically (seconds on the digits) and cached.
    Its ``info`` attribute holds the recipe, its hash and its test accuracy."""
    if dataset not in RECIPES:
        raise ValueError(f"dataset: no feature classifier for {dataset!r}; expected one of {list(RECIPES)} "
                         "(2D toys use the points themselves)")
    recipe = RECIPES[dataset]
    key = recipe.key(dataset)
    if (dataset, key) in _LOADED:
        return _LOADED[(dataset, key)]
    path = cache_dir() / f"{dataset}-{key}.pt"
    net = None
    if cache and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            net = Classifier(saved["in_dim"], recipe.hidden, saved["classes"]).to(torch.float64)
            net.load_state_dict(saved["state"])
            accuracy = float(saved["accuracy"])
        except Exception as e:  # a corrupt cache is retrained, not trusted
            warnings.warn(f"feature classifier cache {path} unreadable ({e}); retraining")
            net = None
    if net is None:
        net, accuracy = _train_classifier(dataset, recipe)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"in_dim": net.body[0].in_features, "classes": net.head.out_features,
                        "state": net.state_dict(), "accuracy": accuracy}, tmp)
            os.replace(tmp, path)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.info = {"dataset": dataset, "recipe": asdict(recipe), "key": key, "test_accuracy": accuracy}
    _LOADED[(dataset, key)] = net
    return net


def features(samples, dataset: str = "digits", *, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, probabilities)`` of image `samples` (n, ...) under `dataset`'s classifier
    (`extractor`), in float64 on the CPU; the same for any `batch_size`."""
    net = extractor(dataset)
    x = _matrix("samples", samples)
    if x.shape[1] != net.body[0].in_features:
        raise ValueError(f"samples: expected {net.body[0].in_features} values per sample for {dataset!r}, "
                         f"got {x.shape[1]}")
    feats, probs = [], []
    with torch.no_grad():
        for rows in x.cpu().split(batch_size):
            f = net.features(rows)
            feats.append(f)
            probs.append(torch.softmax(net.head(f), dim=1))
    return torch.cat(feats), torch.cat(probs)


# ----------------------------------------------------------------------------------------------
# All at once, and during training
# ----------------------------------------------------------------------------------------------
#: Metric names `evaluate_samples` accepts, and the keys each adds to its result.
METRICS: dict[str, tuple[str, ...]] = {
    "fd": ("fd",),
    "kid": ("kid", "kid_std"),
    "is": ("is",),
    "pr": ("precision", "recall"),
    "mmd": ("mmd", "mmd_p"),
    "parzen": ("parzen", "parzen_sigma"),
    "modes": ("modes", "high_quality"),
}

_TOYS = ("moons", "8gaussians", "checkerboard", "spirals", "pinwheel", "rings")


def evaluate_samples(samples, data, metrics: Iterable[str] = ("fd", "kid", "is", "pr", "mmd"), *,
                     dataset: str = "digits", seed: int = 0, permutations: int = 200) -> dict[str, float]:
    """Sample-quality metrics of model `samples` against reference `data` (a tensor of real
    samples, or a `pgm.data.Dataset`, whose test split is used), as a dict of floats.

    `metrics`: names from `METRICS` (``fd``, ``kid``, ``is``, ``pr``, ``mmd``, ``parzen``,
    ``modes``). `dataset` names the data: for images, features come from its classifier
    (`features`); for a 2D toy (e.g. ``"8gaussians"``) the points are the features, ``is`` does
    not apply, and ``modes`` uses `TOY_MODES`. ``mmd`` is on the raw samples (flattened);
    ``parzen`` chooses its bandwidth on the first half of the reference data and scores the
    second half.

    >>> x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    >>> r = evaluate_samples(x[:150], x[150:], ("fd", "mmd"), dataset="8gaussians")
    >>> sorted(r)
    ['fd', 'mmd', 'mmd_p']
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected some of {list(METRICS)}")
    if hasattr(data, "test"):
        dataset = getattr(data, "name", dataset)
        data = data.test
    real, fake = _matrix("data", data), _matrix("samples", samples)
    _same_width(real, fake, ("data", "samples"))
    toy = dataset in _TOYS
    if not toy and dataset not in RECIPES:
        raise ValueError(f"dataset: expected a 2D toy {_TOYS} or one of {list(RECIPES)}, got {dataset!r}")
    if toy and "is" in names:
        raise ValueError(f"metrics: 'is' needs a classifier; the 2D toy {dataset!r} has none")
    if "modes" in names and dataset not in TOY_MODES:
        raise ValueError(f"metrics: 'modes' needs known mixture centres; {dataset!r} has none (known: {list(TOY_MODES)})")
    needs_features = any(m in names for m in ("fd", "kid", "is", "pr"))
    if needs_features and not toy:
        real_f, _ = features(real, dataset)
        fake_f, fake_p = features(fake, dataset)
    else:
        real_f, fake_f, fake_p = real, fake, None
    out: dict[str, float] = {}
    for name in names:
        if name == "fd":
            out["fd"] = frechet_distance(real_f, fake_f)
        elif name == "kid":
            out["kid"], out["kid_std"] = kernel_inception_distance(real_f, fake_f, seed=seed)
        elif name == "is":
            out["is"] = inception_score(fake_p)[0]
        elif name == "pr":
            out["precision"], out["recall"] = precision_recall(real_f, fake_f)
        elif name == "mmd":
            out["mmd"], out["mmd_p"] = mmd_test(real, fake, permutations=permutations, seed=seed)
        elif name == "parzen":
            half = len(real) // 2
            out["parzen"], out["parzen_sigma"] = parzen_log_likelihood(fake, real[half:], valid=real[:half])
        elif name == "modes":
            cov = mode_coverage(fake, dataset)
            out["modes"], out["high_quality"] = cov["modes"], cov["high_quality"]
    return out


def _sampler_of(engine) -> Callable[[int], torch.Tensor]:
    """Draws as `inference.sampling.draw` makes them (with the engine's moving average, a Markov
    chain for undirected models, ...)."""
    from inference.sampling import draw

    return lambda n: draw(engine.model, n, engine=engine)


def metrics_callback(data, *, every: int = 500, num_samples: int = 1000,
                     metrics: Iterable[str] = ("fd", "kid"), dataset: str = "digits",
                     sample: Callable[[int], torch.Tensor] | None = None, seed: int = 0) -> Callable:
    """A callback for `inference.fit` that, every `every` steps, draws `num_samples` samples
    (with `sample`, else `inference.sampling.draw` of the engine's model, which uses the engine's
    moving average of the weights where it keeps one) and writes `evaluate_samples`
    of them against `data` into that step's row of the history (as ``metric/<name>``).

    Sampling runs under `torch.random.fork_rng` and `torch.no_grad`, so the callback leaves the
    training's random stream, and so an exact resume, untouched.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every: expected a positive integer, got {every!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples: expected an integer >= 2, got {num_samples!r}")
    names = tuple([metrics] if isinstance(metrics, str) else metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"metrics: unknown {unknown or 'none given'}; expected some of {list(METRICS)}")

    def callback(info) -> None:
        if info.step % every != 0:
            return
        draw = sample if sample is not None else _sampler_of(info.engine)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed + info.step)
            x = draw(num_samples).detach().cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SampleSizeWarning)
            values = evaluate_samples(x, data, names, dataset=dataset, seed=seed)
        _record(info.history, {f"metric/{k}": v for k, v in values.items()})

    return callback


def _record(history, values: dict[str, float]) -> None:
    """Write `values` into the last step row of `history`."""
    n = len(history.steps["step"])
    for key, value in values.items():
        column = history.steps.setdefault(key, [None] * n)
        column[-1] = float(value)
