"""Noise-contrastive and flow-contrastive estimation: the NCE objective at its optimum in closed
form, the learnt log normaliser against the Gaussian's log partition function, FCE on a
Gaussian, the flow, state for resume, refusals and bad input."""

import math

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import pytest
import torch

import pgm
from inference.engine import EngineError
from inference.fit import fit
from inference.nce import NCE, CouplingFlow, FlowContrastive
from models.ebm import EBM, GaussianEBM
from models.rbm import RBM

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]])


def gaussian_data(n=4000, seed=1):
    g = torch.Generator().manual_seed(seed)
    return MEAN + torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(COV).T


def log_partition(cov):
    """log Z of exp(-1/2 (x - mu)^T cov^-1 (x - mu)): 1/2 log det(2 pi cov)."""
    return float(0.5 * torch.logdet(2 * math.pi * cov))


@pytest.mark.parametrize("nu", [1, 4])
def test_nce_objective_at_the_optimum_is_the_closed_form(nu):
    """With model = noise and c = log Z, every logit is -log nu, so
    -J = -log(1 / (1 + nu)) - nu log(nu / (1 + nu)) whatever the samples."""
    model = GaussianEBM(2, mean=MEAN, covariance=COV)
    engine = NCE(model, noise=dist.MultivariateNormal(MEAN, COV), num_noise=nu)
    with torch.no_grad():
        engine.log_normalizer.fill_(log_partition(COV))
    expected = -math.log(1 / (1 + nu)) - nu * math.log(nu / (1 + nu))
    assert float(engine.loss(gaussian_data(64)).detach()) == pytest.approx(expected, abs=1e-4)


def test_nce_learns_the_log_partition_function():
    """c is learnt as a parameter; at the NCE optimum it is log Z of the fitted model, which for
    Gaussian data is 1/2 log det(2 pi Sigma_data) = 1.62. 800 Adam steps; tolerance 0.05 (the
    seed-to-seed spread is about 0.02; the initial c is 0 and the initial model's log Z 1.84)."""
    data = gaussian_data()
    model = GaussianEBM(2)
    engine = NCE(model, num_noise=4, lr=0.05)
    history = fit(engine, data, epochs=100, batch_size=500, progress=False, seed=0)
    c = float(engine.log_normalizer.detach())
    assert c == pytest.approx(log_partition(torch.cov(data.T)), abs=0.05)
    assert c == pytest.approx(float(model.log_partition().detach()), abs=0.05)
    assert history.last()["log_normalizer"] == pytest.approx(c)
    # The fitted Gaussian noise has the data's moments.
    assert torch.allclose(engine.noise_mean, data.mean(0), atol=1e-5)
    noise_cov = engine.noise_scale_tril @ engine.noise_scale_tril.T
    assert torch.allclose(noise_cov, torch.cov(data.T), atol=1e-3)


def test_nce_with_a_given_noise_distribution():
    """A broad N(0, 9 I) noise (nu = 4): a less efficient estimator, so a looser check after
    400 steps: mean within 0.2, c within 0.15 of log Z."""
    data = gaussian_data()
    model = GaussianEBM(2)
    engine = NCE(model, noise=dist.MultivariateNormal(torch.zeros(2), 9 * torch.eye(2)), num_noise=4, lr=0.05)
    fit(engine, data, epochs=50, batch_size=500, progress=False, seed=0)
    assert torch.linalg.norm(model.mean.detach() - data.mean(0)) < 0.2
    assert float(engine.log_normalizer.detach()) == pytest.approx(log_partition(torch.cov(data.T)), abs=0.15)


def test_flow_contrastive_recovers_a_gaussian():
    """FCE, adversarial: the EBM (and c) against a 2-layer affine-coupling flow. 300 steps, lr
    0.02 / 0.001. Seeds 0-2 gave errors below 0.02 (mean), 0.012 (relative covariance) and 0.02
    (c - log Z); the looser tolerances (0.15, 0.15, 0.1) allow for the min-max dynamics. The
    flow, trained to fool the EBM, matches the data's moments too (0.2, 0.2). About 7 s."""
    data = gaussian_data()
    model = GaussianEBM(2)
    engine = FlowContrastive(model, num_layers=2, hidden_dims=(16, 16), lr=0.02, flow_lr=0.001)
    history = fit(engine, data, epochs=30, batch_size=400, progress=False, seed=0)
    target_cov = torch.cov(data.T)
    assert torch.linalg.norm(model.mean.detach() - data.mean(0)) < 0.15
    assert torch.linalg.norm(model.covariance.detach() - target_cov) / torch.linalg.norm(target_cov) < 0.15
    assert float(engine.log_normalizer.detach()) == pytest.approx(log_partition(target_cov), abs=0.1)
    with torch.no_grad():
        flow_samples = engine.flow.rsample(4000)
    assert torch.linalg.norm(flow_samples.mean(0) - data.mean(0)) < 0.2
    assert torch.linalg.norm(torch.cov(flow_samples.T) - target_cov) / torch.linalg.norm(target_cov) < 0.2
    assert 0.4 < history.last()["accuracy"] < 0.65  # the flow nearly fools the classifier


def test_coupling_flow_is_a_normalised_density():
    """The default affine-coupling flow (affine part set to the data's moments) integrates to 1
    on a grid over [-8, 8] x [-10, 6] (step 0.04), a 1D spline flow on a 0.001 grid; samples
    give a differentiable log_prob. (Randomly initialised 2D spline couplings are too spiky for
    a grid check at this resolution; they are only run.)"""
    flow = CouplingFlow(2, num_layers=2, hidden_dims=(8,)).init_from(gaussian_data(500))
    xx, yy = torch.meshgrid(torch.arange(-8, 8, 0.04), torch.arange(-10, 6, 0.04), indexing="ij")
    with torch.no_grad():
        p = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], -1)).exp()
    assert float(p.sum() * 0.04**2) == pytest.approx(1.0, abs=0.01)
    spline_1d = CouplingFlow(1, num_layers=2)  # elementwise splines: a fine 1D grid resolves them
    with torch.no_grad():
        p = spline_1d.log_prob(torch.arange(-10, 10, 0.001)[:, None]).exp()
    assert float(p.sum() * 0.001) == pytest.approx(1.0, abs=0.01)
    for f in (flow, CouplingFlow(2, num_layers=2, hidden_dims=(8,), layer="spline"), CouplingFlow(1, num_layers=1)):
        y = f.rsample(5)
        f.log_prob(y).sum().backward()
        assert torch.isfinite(f.log_prob(y)).all()
        assert all(q.grad is not None for q in f.parameters())


def test_flow_given_as_pyro_transforms_and_as_a_module():
    model = GaussianEBM(2)
    engine = FlowContrastive(model, flow=[T.affine_coupling(2, hidden_dims=[8])])
    assert set(engine.step(gaussian_data(32))) == {"loss", "flow_loss", "log_normalizer", "accuracy"}
    engine = FlowContrastive(model, flow=CouplingFlow(2, num_layers=1).init_from(gaussian_data(100)))
    engine.step(gaussian_data(32))
    with pytest.raises(TypeError, match="flow"):
        FlowContrastive(model, flow="realnvp")


def test_state_round_trip():
    data = gaussian_data(64)
    for make in (lambda m: NCE(m, num_noise=2), lambda m: FlowContrastive(m, num_layers=1, hidden_dims=(8,))):
        engine = make(GaussianEBM(2))
        engine.validate(data)
        engine.step(data)
        other = make(GaussianEBM(2))
        other.load_state_dict(engine.state_dict())
        assert torch.equal(other.log_normalizer, engine.log_normalizer)
        assert other.num_steps == 1
        if isinstance(engine, NCE):
            assert torch.equal(other.noise_mean, engine.noise_mean)
        else:
            for a, b in zip(other.flow.parameters(), engine.flow.parameters()):
                assert torch.equal(a, b)


def test_float64():
    data = gaussian_data(64).double()
    for engine in (NCE(GaussianEBM(2)), FlowContrastive(GaussianEBM(2), num_layers=1, hidden_dims=(8,))):
        engine.to(dtype=torch.float64)
        engine.validate(data)
        assert math.isfinite(engine.step(data)["loss"])
        assert engine.log_normalizer.dtype == torch.float64


def test_network_ebm_trains():
    data = gaussian_data(256)
    engine = NCE(EBM(2, hidden_dims=(16,)), num_noise=2, lr=1e-2)
    history = fit(engine, data, epochs=5, batch_size=64, progress=False, seed=0)
    assert len(history) == 20


def test_refusals():
    with pytest.raises(EngineError, match="continuous.*Engines that would work"):
        NCE(RBM(v_dim=4, h_dim=2))

    def latent_program(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(EngineError, match="energy"):
        FlowContrastive(pgm.Model.from_program(latent_program, example_args=(torch.zeros(3),)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_noise": 0}, ValueError, "num_noise"),
        ({"noise": "uniform"}, ValueError, "noise"),
        ({"noise": 3}, TypeError, "noise"),
        ({"noise_scale": 0.0}, ValueError, "noise_scale"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        NCE(GaussianEBM(2), **kwargs)


def test_unfitted_noise_is_fitted_on_the_first_batch():
    engine = NCE(GaussianEBM(2))
    engine.step(gaussian_data(50))
    assert engine.noise_mean is not None
