"""Score matching: the three objectives against closed forms, the multi-level objective and a bare
score network against known optima, and refusals naming the engines that would work."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pgm
from inference.engine import EngineError
from inference.fit import fit
from inference.score_matching import ScoreMatching, geometric
from models.ebm import EBM, GaussianEBM
from models.rbm import RBM

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]])
PREC = torch.linalg.inv(COV)


def gaussian_data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return MEAN + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV).T


def test_exact_objective_on_a_gaussian_is_the_closed_form():
    """s(x) = -P (x - mu), grad s = -P: J = mean 1/2 |P (x - mu)|^2 - tr P."""
    model = GaussianEBM(2, mean=MEAN, covariance=COV)
    x = torch.randn(16, 2)
    expected = 0.5 * ((x - MEAN) @ PREC).pow(2).sum(-1).mean() - PREC.trace()
    assert torch.allclose(ScoreMatching(model, method="exact").loss(x), expected, atol=1e-4)


def test_exact_objective_of_a_network_energy_uses_the_hessian_trace():
    ebm = EBM(x_dim=3, hidden_dims=(8,))
    x = torch.randn(4, 3)
    expected = []
    for row in x:
        grad = torch.autograd.functional.jacobian(lambda v: ebm.energy(v[None])[0], row)
        hess = torch.autograd.functional.hessian(lambda v: ebm.energy(v[None])[0], row)
        expected.append(0.5 * grad.pow(2).sum() - hess.trace())  # s = -grad E, tr grad s = -tr H
    got = ScoreMatching(ebm, method="exact").objective(x)
    assert torch.allclose(got, torch.stack(expected), atol=1e-5)


@pytest.mark.parametrize("variance_reduced", [True, False])
def test_sliced_objective_is_unbiased_for_the_exact_one(variance_reduced):
    """E_v[v^T H v] = tr H and E_v[(v^T s)^2] = |s|^2 for v ~ N(0, I). With 20000 projections
    per datum the standard error is below 0.05 (the variance of v^T P v is 2 tr P^2 = 25)."""
    model = GaussianEBM(2, mean=MEAN, covariance=COV)
    x = torch.randn(8, 2)
    exact = ScoreMatching(model, method="exact").loss(x)
    sliced = ScoreMatching(model, method="sliced", num_projections=20000, variance_reduced=variance_reduced).loss(x)
    assert abs(float((sliced - exact).detach())) < 0.15


def test_denoising_objective_closed_form():
    """For a Gaussian model and a single datum x, E_z 1/2 |s(x + sigma z) + z / sigma|^2 =
    1/2 |P (x - mu)|^2 + 1/2 sigma^2 tr(P^2) - tr P + D / (2 sigma^2): averaged over 40000
    draws of z (standard error about 0.05 here)."""
    model = GaussianEBM(2, mean=MEAN, covariance=COV)
    sigma = 0.5
    x = torch.tensor([[0.5, -1.0]]).expand(40000, 2)
    got = ScoreMatching(model, method="denoising", sigma=sigma).loss(x)
    r = (x[0] - MEAN) @ PREC
    expected = 0.5 * r.pow(2).sum() + 0.5 * sigma**2 * (PREC @ PREC).trace() - PREC.trace() + 2 / (2 * sigma**2)
    assert abs(float((got - expected).detach())) < 0.2


class NoiseConditionalGaussian(pgm.Model):
    """score(x, sigma) = -(x - m) / (v + sigma^2): exact for N(m, v I) data at every level."""

    def __init__(self):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(2))
        self.log_v = nn.Parameter(torch.zeros(()))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.ImproperUniform(dist.constraints.real, (), (2,)), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, 2),)

    def score(self, x, sigma=None):
        var = self.log_v.exp() + (0.0 if sigma is None else sigma[:, None] ** 2)
        return -(x - self.m) / var


def test_multi_level_denoising_recovers_a_noise_conditional_gaussian():
    """Data N(mu, 0.5 I); levels 1.0, 0.32, 0.1 (geometric): the optimum at every level is
    m = mu, v = 0.5. 4000 data, 600 Adam steps; tolerances 0.08 on m and 0.08 on v (seed
    spread about 0.02)."""
    g = torch.Generator().manual_seed(2)
    data = MEAN + 0.5**0.5 * torch.randn(4000, 2, generator=g)
    model = NoiseConditionalGaussian()
    engine = ScoreMatching(model, method="denoising", sigmas=geometric(1.0, 0.1, 3), lr=0.02)
    fit(engine, data, epochs=75, batch_size=500, progress=False, seed=0)
    assert torch.allclose(model.m.detach(), data.mean(0), atol=0.08)
    assert abs(float(model.log_v.detach().exp()) - 0.5) < 0.08


@pytest.mark.parametrize("method", ["exact", "sliced"])
def test_bare_linear_score_network_recovers_the_gaussian_score(method):
    """An nn.Linear score net s(x) = W x + b on Gaussian data: the optimum is the data's score
    -P (x - mu), i.e. W = -P and b = P mu (P, mu the sample precision and mean). 800 Adam steps;
    tolerances 0.15 per entry of W (P has entries up to 3.0; the error measured is below 0.05)
    and 0.1 on the implied mean -W^-1 b."""
    data = gaussian_data(4000)
    net = nn.Linear(2, 2)
    engine = ScoreMatching(net, method=method, x_shape=2, num_projections=4 if method == "sliced" else 1, lr=0.05)
    fit(engine, data, epochs=100, batch_size=500, progress=False, seed=0)
    prec = torch.linalg.inv(torch.cov(data.T))
    w, b = net.weight.detach(), net.bias.detach()
    assert torch.allclose(w, -prec, atol=0.15), w
    assert torch.allclose(-torch.linalg.solve(w, b), data.mean(0), atol=0.1), b


def test_discrete_model_is_refused_naming_working_engines():
    with pytest.raises(EngineError, match="Engines that would work:.*ContrastiveDivergence"):
        ScoreMatching(RBM(v_dim=4, h_dim=2))


def test_model_without_a_differentiable_energy_is_refused():
    def latent_program(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    model = pgm.Model.from_program(latent_program, example_args=(torch.zeros(3),))
    with pytest.raises(EngineError, match="differentiable energy.*Engines that would work"):
        ScoreMatching(model)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": "implicit"}, ValueError, "method"),
        ({"method": "exact", "sigma": 0.1}, ValueError, "sigma"),
        ({"method": "denoising", "sigma": 0.1, "sigmas": [1.0, 0.1]}, ValueError, "sigma"),
        ({"method": "denoising", "sigma": -0.1}, ValueError, "sigma"),
        ({"method": "denoising", "sigmas": [0.1, 1.0]}, ValueError, "decreasing"),
        ({"method": "sliced", "num_projections": 0}, ValueError, "num_projections"),
        ({"lr": 0.0}, ValueError, "lr"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        ScoreMatching(GaussianEBM(2), **kwargs)


def test_bare_network_needs_its_data_shape():
    with pytest.raises(ValueError, match="x_shape"):
        ScoreMatching(nn.Linear(2, 2))


def test_state_round_trip_and_float64():
    data = gaussian_data(64)
    engine = ScoreMatching(GaussianEBM(2), method="sliced", lr=0.01)
    engine.step(data)
    other = ScoreMatching(GaussianEBM(2), method="sliced", lr=0.01)
    other.load_state_dict(engine.state_dict())
    assert other.num_steps == 1 and other.optimizer.state_dict()["state"].keys() == engine.optimizer.state_dict()["state"].keys()
    engine.to(dtype=torch.float64)
    assert engine.step(data.double())["loss"] == pytest.approx(engine.loss(data.double()).item(), abs=5.0)
    assert engine.model.mu.dtype == torch.float64


class MarginalNormal(pgm.Model):
    """z ~ N(m, I), x ~ N(z, I): no energy of its own (z is continuous), but a closed-form
    log density, x ~ N(m, 2 I)."""

    def __init__(self):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(2))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.m, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, 2),)

    def log_prob(self, x):
        return dist.Normal(self.m, 2**0.5).to_event(1).log_prob(x)


def test_a_model_with_a_log_density_but_no_energy_is_trained_through_it():
    model = MarginalNormal()
    assert model.missing("energy") is not None and model.missing("log_prob") is None
    data = gaussian_data(2000)
    fit(ScoreMatching(model, method="exact", lr=0.05), data, epochs=20, batch_size=500, progress=False, seed=0)
    assert torch.allclose(model.m.detach(), data.mean(0), atol=0.1)
