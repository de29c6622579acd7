"""Langevin samplers: MALA samples a Gaussian EBM exactly, ULA has its known O(step) bias,
annealed Langevin runs through the noise levels with the right step sizes, initialisations,
and the refusals (discrete models; MALA without an energy)."""


import pytest
import scipy.linalg
import torch
from torch import nn

from inference.engine import EngineError
from inference.langevin import Langevin, ScoreNetwork, check_sigmas, score_of
from models.ebm import GaussianEBM
from models.rbm import RBM

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]])  # eigenvalues 2.2 and 0.3


def gaussian():
    return GaussianEBM(2, mean=MEAN, covariance=COV)


def test_score_is_minus_the_energy_gradient():
    g = gaussian()
    x = torch.randn(5, 2)
    expected = -(x - MEAN) @ torch.linalg.inv(COV)
    assert torch.allclose(score_of(g, x), expected, atol=1e-4)


def ula_covariance(step):
    """Stationary covariance of x' = x - eps P (x - mu) + sqrt(2 eps) z: C = A C A^T + 2 eps I."""
    a = (torch.eye(2) - step * torch.linalg.inv(COV)).double().numpy()
    return torch.from_numpy(scipy.linalg.solve_discrete_lyapunov(a, 2 * step * torch.eye(2).double().numpy())).float()


def test_mala_matches_the_gaussian_and_ula_has_its_closed_form_bias():
    """At step 0.2, ULA's stationary covariance (discrete Lyapunov equation) is far from COV
    (the 0.3 variance becomes 0.45); MALA removes the bias. 4000 chains, 150 steps (the slow
    mode contracts by (1 - 0.2 / 2.2)^2 per step). Standard errors: 0.03 on a mean, about
    0.05 on the 2.0 variance; tolerances are 0.1 and 0.15."""
    target_ula = ula_covariance(0.2)
    assert float(target_ula[1, 1] - COV[1, 1]) > 0.08  # the bias is large enough to detect
    for method, target in (("mala", COV), ("ula", target_ula)):
        sampler = Langevin(gaussian(), method=method, step_size=0.2, num_steps=150)
        x = sampler.sample(4000)
        assert torch.allclose(x.mean(0), MEAN, atol=0.1), method
        assert torch.allclose(torch.cov(x.T), target, atol=0.15), (method, torch.cov(x.T), target)
        if method == "mala":
            assert 0.4 < sampler.acceptance_rate < 1.0


def test_ula_bias_formula_in_one_dimension():
    """For N(0, v), ULA with step eps samples N(0, v / (1 - eps / (2 v))): v=1, eps=0.5 gives
    4/3. 5000 chains: standard error of the variance 0.027; tolerance 0.08."""
    g = GaussianEBM(1)
    x = Langevin(g, method="ula", step_size=0.5, num_steps=60).sample(5000)
    assert abs(float(x.var()) - 4 / 3) < 0.08
    assert abs(float(x.var()) - 1.0) > 0.2


def test_mala_step_size_adaptation_reaches_the_target_rate():
    sampler = Langevin(gaussian(), method="mala", step_size=2.0, num_steps=150, adapt_step_size=True, adapt_rate=0.2)
    sampler.sample(500)
    assert sampler.step_size < 2.0
    assert 0.4 < sampler.last_acceptance_rate < 0.75


class NoisyGaussianScore(nn.Module):
    """The score of N(0, I) convolved with N(0, sigma^2 I), recording the levels it is asked for."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma):
        self.calls.append(float(sigma[0]))
        return -x / (1 + sigma[:, None] ** 2)


def test_annealed_langevin_runs_over_the_noise_levels():
    """A bare noise-conditional score network: one pass visits each level `num_steps` times,
    largest first, with steps eps sigma_i^2 / sigma_L^2; at the end the chains sample the last
    level's noisy data N(0, 1 + 0.1^2), widened by ULA's bias at step eps = 0.05 to
    1.01 / (1 - 0.05 / 2.02) = 1.0356 (5000 chains: standard error 0.02, tolerance 0.07)."""
    net = NoisyGaussianScore()
    sigmas = [1.0, 0.5, 0.1]
    sampler = Langevin(net, x_shape=2, method="annealed", sigmas=sigmas, step_size=0.05, num_steps=100)
    assert isinstance(sampler.model, ScoreNetwork)
    assert sampler.step_sizes() == pytest.approx([5.0, 1.25, 0.05])
    assert sampler.init_scale == 1.0  # noise at the largest level
    x = sampler.sample(5000)
    assert net.calls == pytest.approx([1.0] * 100 + [0.5] * 100 + [0.1] * 100)
    expected = 1.01 / (1 - 0.05 / 2.02)
    assert torch.allclose(x.var(0), torch.full((2,), expected), atol=0.07)
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=0.06)


def test_persistent_and_data_initialisation():
    sampler = Langevin(gaussian(), step_size=0.1, num_steps=5, init="persistent")
    first = sampler.sample(10)
    again = sampler.sample(10, num_steps=0)  # starts where the previous call ended
    assert torch.equal(first, again)
    other = Langevin(gaussian(), step_size=0.1, num_steps=5, init="persistent")
    other.load_state_dict(sampler.state_dict())
    assert torch.equal(other.sample(10, num_steps=0), first)
    data = torch.randn(4, 2)
    from_data = Langevin(gaussian(), init="data")
    assert torch.equal(from_data.sample(data=data, num_steps=0), data)
    with pytest.raises(ValueError, match="data"):
        from_data.sample(4)
    chains = from_data.run(from_data.init(data), 3)
    assert from_data.visible(chains).shape == (4, 2) and not torch.equal(from_data.visible(chains), data)


def test_discrete_models_are_refused_with_a_pointer_to_gibbs():
    with pytest.raises(EngineError, match="Gibbs"):
        Langevin(RBM(v_dim=4, h_dim=2))


def test_mala_needs_an_energy():
    with pytest.raises(EngineError, match="energy"):
        Langevin(nn.Linear(2, 2), x_shape=2, method="mala")
    Langevin(nn.Linear(2, 2), x_shape=2, method="ula").sample(3)  # a score is enough for ULA


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "hmc"}, "method"),
        ({"step_size": 0.0}, "step_size"),
        ({"num_steps": -1}, "num_steps"),
        ({"init": "zeros"}, "init"),
        ({"method": "annealed"}, "sigmas"),
        ({"method": "ula", "sigmas": [1.0, 0.1]}, "sigmas"),
        ({"method": "annealed", "sigmas": [0.1, 1.0]}, "decreasing"),
        ({"final_denoise": True}, "final_denoise"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Langevin(gaussian(), **kwargs)


def test_check_sigmas():
    assert check_sigmas(torch.tensor([1.0, 0.5])) == [1.0, 0.5]
    with pytest.raises(ValueError, match="positive"):
        check_sigmas([1.0, -0.5])


def test_float64_chains():
    g = gaussian().to(torch.float64)
    x = Langevin(g, method="mala", step_size=0.1, num_steps=3).sample(4)
    assert x.dtype == torch.float64
