"""Flows wherever a distribution is needed: the VAE's posterior, FCE's noise, an SVI autoguide,
and the reverse-KL engine (the same flow, the engine swapped by one argument)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import inference
import models
from models.ebm import GaussianEBM


@pytest.mark.parametrize("family", ["iaf", "maf", "realnvp", "nice", "spline"])
def test_vae_flow_posterior_family(family):
    torch.manual_seed(0)
    vae = models.VAE(x_dim=6, z_dim=3, hidden_dims=(8,), flow=family, flow_layers=2)
    assert vae.posterior_flow is not None and not len(vae.flows)
    assert any(n.startswith("posterior_flow.") for n, _ in vae.named_parameters())
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    q = vae.posterior_dist(x)
    z = q.rsample()
    assert z.shape == (5, 3) and q.log_prob(z).shape == (5,)
    start = [p.detach().clone() for p in vae.posterior_flow.parameters()]
    engine = inference.SVI(vae, lr=1e-2)
    for _ in range(3):
        engine.step(x)
    assert any(not torch.equal(a, p) for a, p in zip(start, vae.posterior_flow.parameters()))


def test_vae_flow_posterior_given_as_a_flow_and_bad_values():
    flow = models.IAF(x_dim=2, num_layers=1, hidden_dims=(8,), normalize=False)
    vae = models.VAE(x_dim=4, z_dim=2, hidden_dims=(8,), flow=flow)
    assert vae.posterior_flow is flow
    with pytest.raises(ValueError, match="flow"):
        models.VAE(x_dim=4, z_dim=2, flow="glow")
    with pytest.raises(ValueError, match="flow"):
        models.VAE(x_dim=4, z_dim=3, flow=flow)


def test_fce_noise_is_a_zoo_flow():
    torch.manual_seed(0)
    noise = models.RealNVP(x_dim=2, num_layers=2, hidden_dims=(16,))
    engine = inference.FlowContrastive(GaussianEBM(2), noise=noise)
    assert engine.flow is noise
    x = torch.randn(256, 2) * 0.5 + 2.0
    engine.validate(x)  # data-dependent initialisation of the flow
    assert torch.allclose(noise.sample(4000).mean(0), torch.tensor([2.0, 2.0]), atol=0.5)  # was near 0
    metrics = engine.step(x[:64])
    assert {"loss", "flow_loss"} <= set(metrics)
    with pytest.raises(ValueError, match="noise"):
        inference.FlowContrastive(GaussianEBM(3), noise=models.RealNVP(x_dim=2))


def test_svi_flow_autoguide_builds_and_steps():
    def program(y):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(a, 0.5), obs=y)

    engine = inference.SVI(program, guide="flow", lr=1e-2)
    engine.step(torch.ones(3))
    assert isinstance(engine.guide, inference.AutoFlow)
    assert "guide" in engine.state_dict() or "pyro_params" in engine.state_dict() or engine.state_dict()
    with pytest.raises(ValueError, match="num_layers"):
        inference.AutoFlow(program, num_layers=0)


@pytest.mark.slow
def test_svi_flow_autoguide_on_a_correlated_posterior():
    """Two latents whose sum alone is observed: their posterior is a correlated Gaussian that a
    mean-field guide cannot represent; the flow guide recovers the correlation."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    def program(y):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(a + b, 0.5), obs=y)

    y = torch.full((4,), 2.0)
    engine = inference.SVI(program, guide="flow", lr=2e-2)
    inference.fit(engine, y, epochs=800, progress=False, seed=0)
    assert isinstance(engine.guide, inference.AutoFlow)
    post = engine.posterior(4000, y)
    a, b = post["a"].reshape(-1), post["b"].reshape(-1)
    # exact: precision [[1 + 16, 16], [16, 1 + 16]]; mean (a, b) = (32 / 33, 32 / 33); corr = -16/17
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert corr < -0.7, corr
    # the means carry the stochastic-gradient noise of the last steps (lr 2e-2)
    assert abs(float(a.mean()) - 32 / 33) < 0.25 and abs(float((a + b).mean()) - 64 / 33) < 0.2


@pytest.mark.slow
def test_reverse_kl_and_maximum_likelihood_fit_the_same_flow():
    """One flow object, two engines: forward KL on samples and reverse KL to the program's density."""
    mean = torch.tensor([1.0, -1.0])
    scale_tril = torch.tensor([[1.0, 0.0], [0.8, 0.6]])

    def target(x):  # an unnormalised Gaussian: a flat base measure and one factor
        with pyro.plate("data", x.shape[0]):
            x = pyro.sample("x", dist.Normal(0.0, 100.0).expand([2]).to_event(1), obs=x)
            d = torch.linalg.solve_triangular(scale_tril, (x - mean).unsqueeze(-1), upper=False).squeeze(-1)
            pyro.factor("gauss", -0.5 * (d**2).sum(-1))

    cov = scale_tril @ scale_tril.T
    for engine_of in (lambda f: inference.ReverseKL(f, target=target, lr=1e-2),
                      lambda f: inference.MaximumLikelihood(f, lr=5e-3)):
        torch.manual_seed(0)
        flow = models.RealNVP(x_dim=2, num_layers=4, hidden_dims=(16,), normalize=False)
        engine = engine_of(flow)
        if isinstance(engine, inference.ReverseKL):
            data = engine.placeholder(256)
        else:
            data = torch.distributions.MultivariateNormal(mean, scale_tril=scale_tril).sample((2048,))
        inference.fit(engine, data, epochs=250 if isinstance(engine, inference.ReverseKL) else 8,
                      batch_size=256, progress=False, seed=0)
        s = flow.sample(20000)
        assert torch.allclose(s.mean(0), mean, atol=0.12), (type(engine).__name__, s.mean(0))
        assert torch.allclose(torch.cov(s.T), cov, atol=0.15), (type(engine).__name__, torch.cov(s.T))


def test_reverse_kl_log_z_bound_and_bad_targets():
    torch.manual_seed(0)
    flow = models.RealNVP(x_dim=2, num_layers=2, hidden_dims=(8,), normalize=False)
    log_z = math.log(2 * math.pi * 4.0)  # of exp(-|x|^2 / 8)
    engine = inference.ReverseKL(flow, target=lambda x: -(x**2).sum(-1) / 8.0, lr=1e-2)
    history = inference.fit(engine, engine.placeholder(256), epochs=150, batch_size=256, progress=False, seed=0)
    bound = sum(history["log_z_bound"][-30:]) / 30
    assert log_z - 0.1 < bound <= log_z + 0.05
    with pytest.raises(ValueError, match="target"):
        inference.ReverseKL(flow)
    with pytest.raises(TypeError, match="target"):
        inference.ReverseKL(flow, target=3)


@pytest.mark.slow
def test_flow_posterior_tightens_the_iwae_gap_on_digits():
    """ELBO closer to the IWAE-k bound with an IAF posterior than with the Gaussian one."""
    import pgm
    from inference.evaluate import log_likelihood

    data = pgm.data.load("digits", binarize=True, seed=0)
    gaps = {}
    for flow in (None, "iaf"):
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        vae = models.VAE(x_dim=64, z_dim=4, hidden_dims=(128,), flow=flow, flow_layers=4)
        inference.fit(inference.SVI(vae, lr=2e-3), data.train, epochs=40, batch_size=64, progress=False, seed=0)
        test = data.test
        with torch.no_grad():
            elbo = torch.stack([log_likelihood(vae, test, method="iwae", num_samples=1) for _ in range(20)]).mean()
            iwae = log_likelihood(vae, test, method="iwae", num_samples=200).mean()
        gaps[flow] = float(iwae - elbo)
    assert gaps["iaf"] < gaps[None], gaps
