"""inference.evaluate: the importance-weighted bound against exact log-likelihoods, the exact
method, bits per dimension, and the posterior-collapse diagnostics on hand-built guides."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgm
from inference.evaluate import METHODS, active_units, bits_per_dim, kl_per_dimension, log_likelihood, unit_activity

A, B, S = 2.0, 0.5, 0.7  # x ~ N(A z + B, S), z ~ N(0, 1)  =>  p(x) = N(B, sqrt(A^2 + S^2))


class LinearGaussian(pgm.Model):
    """z ~ N(0, 1), x | z ~ N(A z + B, S) per datum (and per dimension: D i.i.d. copies in an
    inner plate, each with its own z), with a guide that is exact or deliberately off."""

    def __init__(self, guide_kind="exact", dims=1):
        super().__init__()
        self.guide_kind, self.dims = guide_kind, dims

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, self.dims),)

    def model(self, x):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("dims", self.dims, dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(A * z + B, S), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("dims", self.dims, dim=-1):
            if self.guide_kind == "exact":
                var = 1.0 / (1.0 + A**2 / S**2)
                loc, scale = var * A * (x - B) / S**2, math.sqrt(var)
            else:  # a poor guide: right direction, wrong location and width
                loc, scale = 0.2 * x - 0.3, 1.3
            pyro.sample("z", dist.Normal(loc, scale))


def exact_log_px(x):
    return dist.Normal(B, math.sqrt(A**2 + S**2)).log_prob(x).sum(-1)


@pytest.fixture
def data():
    return dist.Normal(B, math.sqrt(A**2 + S**2)).sample((300, 1))


def test_iwae_with_exact_posterior_is_exact_for_every_k(data):
    model = LinearGaussian("exact")
    for k in (1, 3, 50):
        ll = log_likelihood(model, data, num_samples=k, batch_size=64, sample_chunk=7)
        assert ll.shape == (300,)
        torch.testing.assert_close(ll, exact_log_px(data), atol=1e-4, rtol=1e-5)


def test_iwae_bound_rises_with_k_towards_exact(data):
    model = LinearGaussian("poor")
    exact = exact_log_px(data).mean().item()
    bounds = [log_likelihood(model, data, num_samples=k).mean().item() for k in (1, 10, 1000)]
    assert bounds[0] < bounds[1] < bounds[2] <= exact + 0.01, (bounds, exact)
    assert exact - bounds[0] > 0.2  # the poor guide's ELBO is clearly loose ...
    assert exact - bounds[2] < 0.05  # ... and K = 1000 nearly closes the gap


def test_iwae_sums_inner_plates_and_repeat_agrees_with_plate():
    model = LinearGaussian("exact", dims=3)
    x = torch.randn(20, 3)
    by_plate = log_likelihood(model, x, num_samples=4, sample_chunk=3)
    by_repeat = log_likelihood(model, x, num_samples=4, vectorize="repeat")
    torch.testing.assert_close(by_plate, exact_log_px(x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(by_repeat, exact_log_px(x), atol=1e-4, rtol=1e-5)


def test_iwae_is_stable_for_very_unlikely_data():
    # log weights around -1e4: a naive mean of exp(log w) underflows, logsumexp does not.
    x = torch.full((4, 1), 150.0)
    ll = log_likelihood(LinearGaussian("exact"), x, num_samples=10)
    assert torch.isfinite(ll).all()
    torch.testing.assert_close(ll, exact_log_px(x), rtol=1e-5, atol=1e-2)


def test_exact_method_on_a_latent_free_program():
    def gaussian(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(torch.tensor([1.0, -1.0]), 2.0).to_event(1), obs=x)

    x = torch.randn(10, 2)
    ll = log_likelihood(gaussian, x, method="exact", batch_size=3)
    torch.testing.assert_close(ll, dist.Normal(torch.tensor([1.0, -1.0]), 2.0).log_prob(x).sum(-1))


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="method"):
        log_likelihood(LinearGaussian(), torch.zeros(3, 1), method="nope")
    with pytest.raises(ValueError, match="num_samples"):
        log_likelihood(LinearGaussian(), torch.zeros(3, 1), num_samples=0)

    def no_guide(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(ValueError, match="guide"):
        log_likelihood(no_guide, torch.zeros(3))
    assert {"iwae", "exact"} <= set(METHODS)


def test_bits_per_dim():
    nll = torch.tensor([784 * math.log(2.0), 2 * 784 * math.log(2.0)])
    torch.testing.assert_close(bits_per_dim(nll, (1, 28, 28)), torch.tensor([1.0, 2.0]))
    assert bits_per_dim(math.log(2.0) * 64, 64) == pytest.approx(1.0)


class HandEncoder(pgm.Model):
    """q(z | x) = N([x, 0, 0], [1, 0.5, 1]) against the N(0, I) prior: KL per dim is
    0.5 E[x^2], 0.5 (0.25 - 1) - log 0.5, 0; only unit 0's posterior mean varies with x."""

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size),)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z[..., 0], 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], -1)
            scale = torch.tensor([1.0, 0.5, 1.0]).expand(loc.shape)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_kl_per_dimension_and_active_units_on_a_known_encoder():
    x = torch.randn(1000)
    kl = kl_per_dimension(HandEncoder(), x, batch_size=300)
    expected = torch.tensor([0.5 * x.pow(2).mean().item(), 0.5 * (0.25 - 1.0) - math.log(0.5), 0.0])
    torch.testing.assert_close(kl, expected, atol=1e-5, rtol=1e-5)
    activity = unit_activity(HandEncoder(), x, batch_size=300)
    torch.testing.assert_close(activity, torch.tensor([x.var(unbiased=False).item(), 0.0, 0.0]), atol=1e-5, rtol=1e-5)
    assert active_units(HandEncoder(), x) == 1
    assert active_units(HandEncoder(), 0.01 * x) == 0  # Var = 1e-4 < 0.01: inactive


def test_registered_methods_get_batches_the_guide_and_num_samples():
    from inference.evaluate import register_method

    calls = []

    @register_method("test_recorder")
    def recorder(model, guide, x, *, num_samples, scale=1.0):
        calls.append((x.shape[0], guide, num_samples))
        return scale * exact_log_px(x)

    try:
        model = LinearGaussian("exact")
        x = torch.randn(10, 1)
        ll = log_likelihood(model, x, method="test_recorder", num_samples=7, batch_size=4, scale=2.0)
        torch.testing.assert_close(ll, 2.0 * exact_log_px(x))
        assert [c[0] for c in calls] == [4, 4, 2]
        assert all(c[1] == model.guide and c[2] == 7 for c in calls)
    finally:
        METHODS.pop("test_recorder", None)
    with pytest.raises(ValueError, match="name"):
        register_method("")


def test_ais_and_exact_log_likelihood_of_an_rbm_agree():
    """log_likelihood routes energy models through log Z: "exact" enumerates it, "ais" estimates
    it (Salakhutdinov & Murray's schedule), within 0.1 nats for an 8x4 RBM."""
    import models
    from inference.evaluate import log_partition

    torch.manual_seed(0)
    rbm = models.RBM(v_dim=8, h_dim=4)
    with torch.no_grad():
        rbm.W.normal_(0.0, 1.0)
        rbm.b.normal_(0.0, 0.5)
    data = torch.bernoulli(torch.full((30, 8), 0.4))
    exact = log_likelihood(rbm, data, method="exact")
    ais = log_likelihood(rbm, data, method="ais", num_samples=200, num_steps=2000)
    assert exact.shape == ais.shape == (30,)
    assert (exact - ais).abs().max() < 0.1
    # a proper distribution: the exact probabilities of all 256 states sum to one
    states = torch.tensor([[(i >> j) & 1 for j in range(8)] for i in range(256)], dtype=torch.float32)
    assert torch.logsumexp(log_likelihood(rbm, states, method="exact"), 0).abs() < 1e-4
    assert float(log_partition(rbm, "exact")) == pytest.approx(float(log_partition(rbm, "ais", num_chains=200,
                                                                                        num_steps=2000)), abs=0.1)
