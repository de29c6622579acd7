"""Continuous energy-based models, declared as undirected programs (`pyro.factor` potentials).

p(x) = exp(-E(x)) / Z over real-valued x. Each program declares the data under a base measure
and the energy as a potential, as DESIGN.md shows for undirected programs::

    with pyro.plate("data", n):
        x = pyro.sample("x", base_measure, obs=x)
        pyro.factor("energy", -E(x))

so the energy `pgm.Model.energy` derives from the program is E(x) minus the base measure's log
density. Each model overrides `energy` with its network directly (faster: no trace); the
override equals the derived energy exactly, or up to the constant its docstring states, and
`tests/test_ebm.py` checks it.

- `EBM`: the energy is any network (an MLP with a smooth activation by default).
- `GaussianEBM`: a quadratic energy with learnable mean and precision, the known-answer model
  (its normaliser is known, so it has a closed-form `log_prob` and exact `sample`).
- `ClassifierEBM`: a classifier's logits define the energy E(x) = -logsumexp_y f(x)[y]
  (Grathwohl et al. 2019, "Your classifier is secretly an energy-based model").
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from models import checks
from models.nets import MLP
from models.registry import register
from pgm import Model

__all__ = ["EBM", "GaussianEBM", "ClassifierEBM", "energy_mlp"]


def _event_shape(arg: str, value) -> tuple[int, ...]:
    return checks.shape(arg, value)


def energy_mlp(x_shape, hidden_dims: Sequence[int] = (64, 64), out_dim: int = 1, activation: type[nn.Module] = nn.SiLU) -> nn.Module:
    """An MLP from flattened `x_shape` inputs to `out_dim` outputs with a smooth activation.

    SiLU (not ReLU) because score matching and Langevin dynamics differentiate the energy with
    respect to x: a ReLU network is piecewise linear in x, so its Hessian is zero almost
    everywhere (the trace term of exact and sliced score matching vanishes and the objective
    only shrinks the score) and its gradient is piecewise constant.

    >>> energy_mlp(2, (8,))(torch.zeros(5, 2)).shape
    torch.Size([5, 1])
    """
    shape = _event_shape("x_shape", x_shape)
    mlp = MLP(math.prod(shape), checks.dims("hidden_dims", hidden_dims), checks.positive_int("out_dim", out_dim), activation)
    if len(shape) == 1:
        return mlp
    return nn.Sequential(nn.Flatten(start_dim=-len(shape)), mlp)


def _flat_measure(shape: tuple[int, ...], like: torch.Tensor) -> dist.Distribution:
    # ImproperUniform has log density 0 everywhere; its tensors follow `like`'s device/dtype
    # through the value it scores, so nothing needs moving.
    return dist.ImproperUniform(constraints.real, (), shape)


def _to_energy(out: torch.Tensor, batch_dims: int, what: str) -> torch.Tensor:
    """A network's output as one energy per datum: (*batch, 1) or (*batch,) -> (*batch,)."""
    if out.dim() == batch_dims + 1 and out.shape[-1] == 1:
        out = out.squeeze(-1)
    if out.dim() != batch_dims:
        raise ValueError(f"{what}: expected one energy per datum (shape (batch,) or (batch, 1)), got {tuple(out.shape)}")
    return out


# ---------------------------------------------------------------------------------------------
# EBM: any energy network
# ---------------------------------------------------------------------------------------------
@register("ebm", x_dim=2, train=dict(settings=dict(base_scale=3.0), engine="nce", data="moons", epochs=30, batch_size=128,
                                    lr=1e-3))
class EBM(Model):
    """A continuous energy-based model p(x) ∝ exp(-E(x)) whose energy E is any network.

    `x_dim`: the data's event shape (an int for vectors, a tuple such as (1, 28, 28) for
    images); `x_shape=` says the same and takes precedence. `energy_net`: a module mapping a batch (N, *x_shape) to energies (N,) or (N, 1);
    the default is `energy_mlp(x_dim, hidden_dims)` (SiLU activations: score matching needs
    non-zero second derivatives of E in x, which a ReLU network does not have).

    `base_scale`: the base measure the program declares x under. None (default): the flat
    (improper, Lebesgue) measure `ImproperUniform`, so the energy is exactly the network's,
    ``energy(x) = energy_net(x)``. A float s: a Normal(0, s^2 I) base measure, which keeps
    ``exp(-E)`` normalisable however the network behaves far from the data and gives AIS a
    proper starting distribution (`base_distribution()`); then
    ``energy(x) = energy_net(x) + |x|^2 / (2 s^2) + (D/2) log(2 pi s^2)``, again exactly the
    energy derived from the program (the constant included).

    >>> import torch, pgm
    >>> ebm = EBM(x_dim=2, hidden_dims=(8,))
    >>> x = torch.randn(4, 2)
    >>> bool(torch.allclose(ebm.energy(x), pgm.Model.energy(ebm, x), atol=1e-5))
    True
    >>> sorted(ebm.capabilities())
    ['continuous', 'energy', 'program']
    """

    def __init__(self, x_dim=2, energy_net: nn.Module | None = None, hidden_dims: Sequence[int] = (64, 64), base_scale: float | None = None, *, x_shape=None) -> None:
        super().__init__()
        self.x_shape = _event_shape("x_dim", x_dim) if x_shape is None else _event_shape("x_shape", x_shape)
        if base_scale is not None:
            base_scale = checks.finite_float("base_scale", base_scale, positive=True)
        checks.callable_or_none("energy_net", energy_net, "an nn.Module (or callable) x -> energy")
        if energy_net is None:
            hidden_dims = checks.dims("hidden_dims", hidden_dims)
        self.base_scale = base_scale
        self.energy_net = energy_net if energy_net is not None else energy_mlp(self.x_shape, hidden_dims)

    @property
    def x_dim(self) -> int:
        """The number of elements of one datum."""
        return math.prod(self.x_shape)

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.x_shape, dtype=self.dtype, device=self.device),)

    def base_distribution(self) -> dist.Distribution | None:
        """The base measure as a proper distribution (Normal(0, s^2 I) with `base_scale`), or
        None for the flat measure."""
        if self.base_scale is None:
            return None
        zero = torch.zeros(self.x_shape, dtype=self.dtype, device=self.device)
        return dist.Normal(zero, self.base_scale).to_event(len(self.x_shape))

    def _base(self, x: torch.Tensor) -> dist.Distribution:
        base = self.base_distribution()
        return _flat_measure(self.x_shape, x) if base is None else base

    def network_energy(self, x: torch.Tensor) -> torch.Tensor:
        """The network's energy of each datum, shape (batch,) (without the base measure)."""
        return _to_energy(self.energy_net(x), x.dim() - len(self.x_shape), "energy_net")

    def model(self, x: torch.Tensor):
        with pyro.plate("data", x.shape[0]):
            x = pyro.sample("x", self._base(x), obs=x)
            pyro.factor("energy", -self.network_energy(x))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) per datum, shape (batch,): the network's energy plus the Gaussian base measure's
        negative log density when `base_scale` is set (see the class docstring)."""
        if not torch.is_tensor(x):
            raise TypeError(f"x: expected a tensor of data, got {type(x).__name__}")
        if tuple(x.shape[x.dim() - len(self.x_shape):]) != self.x_shape:
            raise ValueError(f"x: expected shape (batch, *{self.x_shape}), got {tuple(x.shape)}")
        e = self.network_energy(x)
        if self.base_scale is not None:
            dims = tuple(range(x.dim() - len(self.x_shape), x.dim()))
            s2 = self.base_scale**2
            e = e + x.pow(2).sum(dims) / (2 * s2) + 0.5 * self.x_dim * math.log(2 * math.pi * s2)
        return e


# ---------------------------------------------------------------------------------------------
# GaussianEBM: the known-answer model
# ---------------------------------------------------------------------------------------------
@register("gaussian_ebm", x_dim=2, train=dict(engine="sm", data="moons", epochs=20, batch_size=128, lr=0.01))
class GaussianEBM(Model):
    """A Gaussian written as an energy: E(x) = 1/2 (x - mu)^T P (x - mu), P = L L^T.

    The mean `mu` and the precision's Cholesky factor L (lower triangular; its diagonal
    `exp(log_diag)`, so P is positive definite for every parameter value) are learnable. The
    program declares x under the flat measure with the energy as a potential, so the derived
    energy is exactly `energy`. The normaliser is known, log Z = D/2 log(2 pi) - sum(log diag L),
    so `log_prob` and `sample` are closed forms (the known answer of issue 4's engine tests).

    >>> import torch
    >>> g = GaussianEBM(2, mean=torch.tensor([1.0, -2.0]), covariance=torch.tensor([[2.0, 0.6], [0.6, 0.5]]))
    >>> g.covariance.round(decimals=4).tolist()
    [[2.0, 0.6000000238418579], [0.6000000238418579, 0.5]]
    >>> sorted(g.capabilities())
    ['continuous', 'energy', 'log_prob', 'program', 'sample']
    """

    def __init__(self, x_dim: int = 2, mean: torch.Tensor | None = None, covariance: torch.Tensor | None = None) -> None:
        super().__init__()
        self.x_dim = x_dim = checks.positive_int("x_dim", x_dim)
        self.mu = nn.Parameter(torch.zeros(x_dim))
        self.log_diag = nn.Parameter(torch.zeros(x_dim))
        self.lower = nn.Parameter(torch.zeros(x_dim, x_dim))  # only the strict lower triangle is used
        if mean is not None or covariance is not None:
            self.set(mean, covariance)

    @torch.no_grad()
    def set(self, mean: torch.Tensor | None = None, covariance: torch.Tensor | None = None) -> "GaussianEBM":
        """Set the mean and/or the covariance (a symmetric positive-definite matrix)."""
        if mean is not None:
            mean = torch.as_tensor(mean, dtype=self.dtype, device=self.device)
            if mean.shape != (self.x_dim,):
                raise ValueError(f"mean: expected shape ({self.x_dim},), got {tuple(mean.shape)}")
            self.mu.copy_(mean)
        if covariance is not None:
            cov = torch.as_tensor(covariance, dtype=self.dtype, device=self.device)
            if cov.shape != (self.x_dim, self.x_dim):
                raise ValueError(f"covariance: expected shape ({self.x_dim}, {self.x_dim}), got {tuple(cov.shape)}")
            L, info = torch.linalg.cholesky_ex(torch.linalg.inv(cov))
            if int(info) != 0 or not torch.allclose(cov, cov.T, atol=1e-6):
                raise ValueError("covariance: expected a symmetric positive-definite matrix")
            self.log_diag.copy_(L.diagonal().log())
            self.lower.copy_(L.tril(-1))
        return self

    @property
    def precision_tril(self) -> torch.Tensor:
        """L, the lower-triangular Cholesky factor of the precision P = L L^T."""
        return self.lower.tril(-1) + torch.diag_embed(self.log_diag.exp())

    @property
    def precision(self) -> torch.Tensor:
        L = self.precision_tril
        return L @ L.T

    @property
    def mean(self) -> torch.Tensor:
        return self.mu

    @property
    def covariance(self) -> torch.Tensor:
        return torch.cholesky_inverse(self.precision_tril)

    def log_partition(self) -> torch.Tensor:
        """log Z = D/2 log(2 pi) - log det L."""
        return 0.5 * self.x_dim * math.log(2 * math.pi) - self.log_diag.sum()

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, self.x_dim, dtype=self.dtype, device=self.device),)

    def model(self, x: torch.Tensor):
        with pyro.plate("data", x.shape[0]):
            x = pyro.sample("x", _flat_measure((self.x_dim,), x), obs=x)
            pyro.factor("energy", -self.energy(x))

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """1/2 (x - mu)^T P (x - mu) per datum, shape (batch,)."""
        if not torch.is_tensor(x) or x.shape[-1:] != (self.x_dim,):
            raise ValueError(f"x: expected a tensor of shape (batch, {self.x_dim}), got {getattr(x, 'shape', type(x).__name__)}")
        z = (x - self.mu) @ self.precision_tril  # rows: L^T (x - mu)
        return 0.5 * z.pow(2).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log density -E(x) - log Z, shape (batch,)."""
        return -self.energy(x) - self.log_partition()

    def distribution(self) -> dist.MultivariateNormal:
        """The model as a `MultivariateNormal`."""
        return dist.MultivariateNormal(self.mu, precision_matrix=self.precision)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """`n` exact draws, shape (n, x_dim)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected a non-negative int, got {n!r}")
        eps = torch.randn(n, self.x_dim, dtype=self.dtype, device=self.device)
        # x = mu + L^{-T} eps has covariance L^{-T} L^{-1} = P^{-1}.
        return self.mu + torch.linalg.solve_triangular(self.precision_tril.T, eps.T, upper=True).T


# ---------------------------------------------------------------------------------------------
# ClassifierEBM: a classifier's logits as an energy (JEM)
# ---------------------------------------------------------------------------------------------
@register("classifier_ebm", x_dim=2, num_classes=2,
          train=dict(engine="nce", data="moons", epochs=30, batch_size=128, lr=1e-3))
class ClassifierEBM(Model):
    """A classifier read as an energy-based model of the joint (Grathwohl et al. 2019).

    With logits f(x), p(x, y) ∝ exp(f(x)[y]), so p(y | x) = softmax(f(x)) and
    E(x) = -logsumexp_y f(x)[y], E(x, y) = -f(x)[y]. `classifier` maps (N, *x_shape) to
    logits (N, num_classes); the default is an MLP with SiLU activations (`hidden_dims`).

    The program declares x under the flat measure, the label y under a uniform
    Categorical(num_classes) base measure (observed when labels are given, else latent and
    summed out) and the chosen logit as a potential. The uniform base measure contributes
    log(1/K) to every y, so the energy derived from the program is
    ``energy(x) + log(num_classes)`` (same for ``energy(x, y)``): a constant that cancels in
    every gradient, in p(y | x) and in log Z differences.

    >>> import torch
    >>> jem = ClassifierEBM(x_dim=2, num_classes=3, hidden_dims=(8,))
    >>> x = torch.randn(5, 2)
    >>> bool(torch.allclose(jem.energy(x), -jem.logits(x).logsumexp(-1)))
    True
    >>> jem.predict(x).shape
    torch.Size([5])
    """

    def __init__(self, classifier: nn.Module | None = None, num_classes: int = 2, x_dim=None, hidden_dims: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        num_classes = checks.int_at_least("num_classes", num_classes, 2)
        if x_dim is None:
            raise ValueError("x_dim: the data's shape is needed (an int, or a tuple such as (1, 28, 28))")
        self.x_shape = _event_shape("x_dim", x_dim)
        self.num_classes = num_classes
        checks.callable_or_none("classifier", classifier, "an nn.Module x -> logits")
        if classifier is None:
            hidden_dims = checks.dims("hidden_dims", hidden_dims)
        self.classifier = classifier if classifier is not None else energy_mlp(self.x_shape, hidden_dims, out_dim=num_classes)

    def example_inputs(self, batch_size: int = 2) -> tuple:
        return (torch.zeros(batch_size, *self.x_shape, dtype=self.dtype, device=self.device),)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """f(x), shape (batch, num_classes)."""
        out = self.classifier(x)
        if out.shape[-1] != self.num_classes:
            raise ValueError(f"classifier: expected logits of shape (batch, {self.num_classes}), got {tuple(out.shape)}")
        return out

    def class_probs(self, x: torch.Tensor) -> torch.Tensor:
        """p(y | x) = softmax(f(x)), shape (batch, num_classes)."""
        return self.logits(x).softmax(-1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class of each datum, shape (batch,)."""
        return self.logits(x).argmax(-1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None):
        # The generative story in order: x under the flat measure, y under the uniform one,
        # then the potential f(x)[y], computed from the site's value.
        uniform = torch.zeros(self.num_classes, dtype=x.dtype if x.is_floating_point() else torch.get_default_dtype(), device=x.device)
        with pyro.plate("data", x.shape[0]):
            x = pyro.sample("x", _flat_measure(self.x_shape, x), obs=x)
            y = pyro.sample("y", dist.Categorical(logits=uniform), obs=y)
            logits = self.logits(x)
            chosen = nn.functional.one_hot(y.long(), self.num_classes).to(logits.dtype)
            pyro.factor("logit", (logits * chosen).sum(-1))

    def energy(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E(x) = -logsumexp_y f(x)[y], or E(x, y) = -f(x)[y] given labels; shape (batch,)."""
        logits = self.logits(x)
        if y is None:
            return -logits.logsumexp(-1)
        return -logits.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)
