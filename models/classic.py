"""Classic Bayesian models with known answers: the engines' test bench.

- `NormalNormal`: a Normal mean with a Normal prior; the posterior is Normal in closed form.
- `BayesianLogisticRegression`: Normal priors on weights and bias, Bernoulli labels.
- `GaussianMixture`: a finite mixture of Gaussians whose discrete assignments are summed out
  by enumeration (`inference.SVI(..., elbo="enum")`).

Every model takes the data as its first argument, batch first, under a plate named "data".
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from models import checks
from models.registry import register
from pgm import Model

__all__ = ["NormalNormal", "BayesianLogisticRegression", "GaussianMixture"]


def _positive(name: str, value: float) -> float:
    return checks.finite_float(name, value, positive=True)


@register("normal_normal", train=dict(engine="svi", data=None, epochs=500, batch_size=None, lr=0.02))
class NormalNormal(Model):
    r"""A Normal mean with a conjugate Normal prior: the posterior is known exactly.

    .. math::

        \mu \sim \mathcal N(\mu_0, \sigma_0^2), \qquad
        x_i \mid \mu \sim \mathcal N(\mu, \sigma^2), \quad i = 1, \dots, N \ (\text{plate "data"})

    with :math:`\mu_0` = `prior_loc`, :math:`\sigma_0` = `prior_scale`, :math:`\sigma` =
    `noise_scale`. The posterior is :math:`\mathcal N(m, s^2)` with
    :math:`s^{-2} = \sigma_0^{-2} + N\sigma^{-2}` and
    :math:`m = s^2 (\mu_0\sigma_0^{-2} + \sum_i x_i\,\sigma^{-2})` (`posterior_params`), and the
    evidence :math:`\log p(x)` is Gaussian too (`log_evidence`).

    The model's own guide is :math:`q(\mu) = \mathcal N(\text{loc}, \exp(\text{log\_scale})^2)`
    with `guide_loc` and `guide_log_scale` as parameters (initialised at the prior), so the
    guide family contains the exact posterior.

    >>> m = NormalNormal()
    >>> loc, scale = m.posterior_params(torch.tensor([1.0, 2.0, 3.0]))
    >>> round(float(loc), 4), round(float(scale), 4)   # 6/4, 1/2
    (1.5, 0.5)
    """

    def __init__(self, prior_loc: float = 0.0, prior_scale: float = 1.0, noise_scale: float = 1.0) -> None:
        super().__init__()
        dtype = torch.get_default_dtype()
        prior_loc = checks.finite_float("prior_loc", prior_loc)
        self.register_buffer("prior_loc", torch.tensor(float(prior_loc), dtype=dtype))
        self.register_buffer("prior_scale", torch.tensor(_positive("prior_scale", prior_scale), dtype=dtype))
        self.register_buffer("noise_scale", torch.tensor(_positive("noise_scale", noise_scale), dtype=dtype))
        self.guide_loc = nn.Parameter(torch.tensor(float(prior_loc), dtype=dtype))
        self.guide_log_scale = nn.Parameter(torch.tensor(math.log(float(prior_scale)), dtype=dtype))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, dtype=self.dtype, device=self.device),)

    def own_data(self, seed: int = 0):
        """20 draws of the program (its mean drawn once from the prior) to train, 20 to test."""
        import pgm.data

        x = self.simulate(40, seed=seed)
        return pgm.data.own("normal_normal", x[:20], x[20:])

    def model(self, x=None):
        mu = pyro.sample("mu", dist.Normal(self.prior_loc, self.prior_scale))
        with pyro.plate("data", x.shape[0] if x is not None else 1):
            return pyro.sample("x", dist.Normal(mu, self.noise_scale), obs=x)

    def guide(self, x=None):
        return pyro.sample("mu", dist.Normal(self.guide_loc, self.guide_log_scale.exp()))

    def posterior_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact posterior of `mu` given data `x` (shape `(N,)`): `(loc, scale)`."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device).reshape(-1)
        precision = self.prior_scale**-2 + x.shape[0] * self.noise_scale**-2
        loc = (self.prior_loc * self.prior_scale**-2 + x.sum() * self.noise_scale**-2) / precision
        return loc, precision.rsqrt()

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log marginal likelihood `log p(x)` of the whole data set (a scalar): `x` is
        Gaussian with mean `prior_loc` and covariance `noise**2 I + prior_scale**2 11^T`."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device).reshape(-1)
        n = x.shape[0]
        cov = self.noise_scale**2 * torch.eye(n, dtype=x.dtype, device=x.device) + self.prior_scale**2
        return dist.MultivariateNormal(self.prior_loc.expand(n), covariance_matrix=cov).log_prob(x)


@register("logistic_regression", num_features=2,
          train=dict(engine="svi", data=None, epochs=500, batch_size=None, lr=0.02))
class BayesianLogisticRegression(Model):
    r"""Logistic regression with Normal priors on the weights and the bias.

    .. math::

        w \sim \mathcal N(0, \tau^2 I_D), \quad b \sim \mathcal N(0, \tau^2), \qquad
        y_i \mid X_i, w, b \sim \mathrm{Bernoulli}\big(\sigma(X_i^\top w + b)\big)
        \quad (\text{plate "data"})

    with :math:`\tau` = `prior_scale`. The program is `model(X, y=None)`: features `(N, D)`
    first, labels `(N,)` in {0, 1}. `simulate` draws a synthetic data set.
    """

    def __init__(self, num_features: int, prior_scale: float = 1.0) -> None:
        super().__init__()
        self.num_features = checks.positive_int("num_features", num_features)
        self.register_buffer("prior_scale", torch.tensor(_positive("prior_scale", prior_scale)))

    def example_inputs(self, batch_size: int = 2) -> tuple:
        X = torch.zeros(batch_size, self.num_features, dtype=self.dtype, device=self.device)
        return (X, torch.zeros(batch_size, dtype=self.dtype, device=self.device))

    def own_data(self, seed: int = 0):
        """`simulate(500)`: 400 labelled points to train, 100 to test."""
        import pgm.data

        X, y = self.simulate(500, seed=seed)
        return pgm.data.own("logistic_regression", (X[:400], y[:400]), (X[400:], y[400:]))

    def model(self, X, y=None):
        zeros = self.prior_scale.new_zeros(self.num_features)
        w = pyro.sample("w", dist.Normal(zeros, self.prior_scale).to_event(1))
        b = pyro.sample("b", dist.Normal(self.prior_scale.new_zeros(()), self.prior_scale))
        with pyro.plate("data", X.shape[0]):
            # (X * w).sum(-1) rather than X @ w: it broadcasts over particle dimensions of w.
            logits = (X * w).sum(-1) + b
            return pyro.sample("y", dist.Bernoulli(logits=logits), obs=y)

    def simulate(
        self, n: int, weights=None, bias: float = 0.0, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A synthetic data set `(X, y)`: `X ~ N(0, I)`, labels from the likelihood with the given
        `weights` (default: alternating +-1.5) and `bias`, drawn from a seeded generator."""
        g = torch.Generator().manual_seed(int(seed))
        D = self.num_features
        w = torch.as_tensor(
            weights if weights is not None else [1.5 * (-1) ** j for j in range(D)], dtype=torch.get_default_dtype()
        )
        if w.shape != (D,):
            raise ValueError(f"weights: expected {D} values, got shape {tuple(w.shape)}")
        X = torch.randn(n, D, generator=g)
        y = torch.bernoulli(torch.sigmoid(X @ w + float(bias)), generator=g)
        return X.to(self.device, self.dtype), y.to(self.device, self.dtype)


@register("gaussian_mixture", num_components=3, dim=2,
          train=dict(settings=dict(num_components=8, scale=0.1), engine="svi", engine_settings=dict(elbo="enum"),
                     data="8gaussians", epochs=20, batch_size=256, lr=0.05))
class GaussianMixture(Model):
    r"""A finite Gaussian mixture with discrete assignments (summed out by enumeration).

    .. math::

        \pi \sim \mathrm{Dirichlet}(\alpha \mathbf 1_K), \quad
        \mu_k \sim \mathcal N(0, s_0^2 I_d) \ (k = 1..K, \text{plate "components"}), \\
        z_i \sim \mathrm{Categorical}(\pi), \quad
        x_i \mid z_i \sim \mathcal N(\mu_{z_i}, \sigma^2 I_d) \quad (\text{plate "data"})

    with :math:`\alpha` = `concentration`, :math:`s_0` = `prior_scale`, and the component scale
    :math:`\sigma` = `scale`, known, or a learned point estimate when `learn_scale=True`. The
    assignment `z` is marked for parallel enumeration, so `inference.SVI(model, elbo="enum")`
    sums it out exactly.

    The model's guide is mean-field over the continuous globals: `weights ~ Dirichlet(a)`,
    `locs_k ~ N(m_k, diag(s_k^2))`. Its component locations start at `K` data points spread
    out by farthest-point traversal (from the point nearest the data mean), set the first time
    the guide sees data (or by `initialize(x)`), so that the components start apart.
    """

    def __init__(
        self,
        num_components: int,
        dim: int,
        scale: float = 1.0,
        learn_scale: bool = False,
        concentration: float = 1.0,
        prior_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.num_components, self.dim = checks.positive_int("num_components", num_components), checks.positive_int("dim", dim)
        learn_scale = checks.boolean("learn_scale", learn_scale)
        dtype = torch.get_default_dtype()
        self.register_buffer("concentration", torch.tensor(_positive("concentration", concentration), dtype=dtype))
        self.register_buffer("prior_scale", torch.tensor(_positive("prior_scale", prior_scale), dtype=dtype))
        log_scale = torch.tensor(math.log(_positive("scale", scale)), dtype=dtype)
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        K, d = self.num_components, self.dim
        # Guide parameters (unconstrained).
        self.guide_weights_raw = nn.Parameter(torch.zeros(K, dtype=dtype))
        self.guide_locs = nn.Parameter(torch.zeros(K, d, dtype=dtype))
        self.guide_locs_raw_scale = nn.Parameter(torch.full((K, d), -2.0, dtype=dtype))
        self.register_buffer("guide_initialized", torch.tensor(False))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.dim, dtype=self.dtype, device=self.device),)

    def model(self, x=None):
        K = self.num_components
        weights = pyro.sample("weights", dist.Dirichlet(self.concentration.expand(K)))
        with pyro.plate("components", K):
            locs = pyro.sample(
                "locs", dist.Normal(self.prior_scale.new_zeros(self.dim), self.prior_scale).to_event(1)
            )
        with pyro.plate("data", x.shape[0] if x is not None else 1):
            z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            # Index the component axis of `locs` (second to last) so that particle and
            # enumeration dimensions on the left broadcast.
            loc = _gather_component(locs, z)
            return pyro.sample("x", dist.Normal(loc, self.scale).to_event(1), obs=x)

    def guide(self, x=None):
        if x is not None and not bool(self.guide_initialized):
            self.initialize(x)
        pyro.sample("weights", dist.Dirichlet(F.softplus(self.guide_weights_raw) + 1e-3 + 1.0))
        with pyro.plate("components", self.num_components):
            pyro.sample(
                "locs", dist.Normal(self.guide_locs, F.softplus(self.guide_locs_raw_scale) + 1e-4).to_event(1)
            )

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Start the guide's component locations at `K` data points far apart from each other
        (farthest-point traversal from the point nearest the data mean; deterministic)."""
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device).reshape(-1, self.dim)
        first = int(((x - x.mean(0)) ** 2).sum(-1).argmin())
        chosen = [first]
        dist2 = ((x - x[first]) ** 2).sum(-1)
        for _ in range(1, self.num_components):
            nxt = int(dist2.argmax())
            chosen.append(nxt)
            dist2 = torch.minimum(dist2, ((x - x[nxt]) ** 2).sum(-1))
        self.guide_locs.copy_(x[chosen])
        self.guide_initialized.fill_(True)

    def posterior_locs(self) -> torch.Tensor:
        """The guide's mean of the component locations, `(K, dim)`."""
        return self.guide_locs.detach().clone()


def _gather_component(locs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """`locs[..., z, :]` with broadcasting: `locs` is `(*batch, K, d)`, `z` any integer tensor
    whose shape broadcasts against `batch + (N,)`; the result is `(*broadcast, N?, d)`."""
    if locs.dim() == 2:
        return locs[z]
    # Particle dims on the left of locs: move K last, gather along it via one-hot weights.
    onehot = F.one_hot(z.long(), locs.shape[-2]).to(locs.dtype)  # (*zshape, K)
    return (onehot.unsqueeze(-1) * locs.unsqueeze(-3)).sum(-2)
