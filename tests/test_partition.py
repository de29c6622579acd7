"""log Z: exact enumeration routes agree with brute force; AIS agrees with exact."""

import math

import pytest
import torch

from inference.partition import AISResult, ais_log_likelihood, log_partition
from models.boltzmann import BoltzmannMachine
from models.rbm import RBM, GaussianRBM


def bits(n):
    codes = torch.arange(2**n)
    return ((codes[:, None] >> torch.arange(n - 1, -1, -1)) & 1).double()


def random_rbm(v_dim, h_dim, scale=1.0, seed=0):
    torch.manual_seed(seed)
    rbm = RBM(v_dim, h_dim, init_scale=scale).double()
    with torch.no_grad():
        rbm.b.normal_(0, 1.0)
        rbm.c.normal_(0, 1.0)
    return rbm


def test_exact_log_z_of_an_8x4_rbm_by_both_routes_and_brute_force():
    rbm = random_rbm(8, 4)
    v, h = bits(8), bits(4)
    brute = torch.logsumexp(-rbm.joint_energy(v[:, None, :], h[None, :, :]).flatten(), 0)
    hidden_route = log_partition(rbm, method="exact")  # 2^4 hidden states, visible units summed out
    visible_route = torch.logsumexp(-rbm.free_energy(v), 0)  # 2^8 visible states, free energy
    assert torch.allclose(hidden_route, brute, atol=1e-10)
    assert torch.allclose(visible_route, brute, atol=1e-10)
    wide = random_rbm(4, 8)  # more hidden than visible: enumerates v through the free energy
    v4, h8 = bits(4), bits(8)
    brute = torch.logsumexp(-wide.joint_energy(v4[:, None, :], h8[None, :, :]).flatten(), 0)
    assert torch.allclose(log_partition(wide), brute, atol=1e-10)


def test_exact_log_z_in_chunks():
    rbm = random_rbm(16, 18, scale=0.3)  # 2^16 visible states, enumerated in chunks of 2^14
    v = bits(16)
    assert torch.allclose(log_partition(rbm), torch.logsumexp(-rbm.free_energy(v), 0), atol=1e-9)


def test_ais_is_within_a_tenth_of_a_nat_of_exact():
    rbm = random_rbm(8, 4)
    exact = log_partition(rbm, method="exact")
    torch.manual_seed(1)
    result = log_partition(rbm, method="ais", num_chains=500, num_steps=1000, return_details=True)
    assert isinstance(result, AISResult) and result.log_weights.shape == (500,)
    assert abs(float(result.log_z - exact)) < 0.1
    assert result.std_error < 0.05


def test_ais_with_a_data_based_base_rate_rbm():
    rbm = random_rbm(10, 6, scale=0.7)
    data = torch.bernoulli(torch.full((50, 10), 0.3, dtype=torch.float64))
    exact = log_partition(rbm)
    betas = torch.cat([torch.linspace(0, 0.5, 100), torch.linspace(0.5, 1, 401)[1:]])
    ais = log_partition(rbm, method="ais", data=data, betas=betas, num_chains=300)
    assert abs(float(ais - exact)) < 0.1


def test_ais_log_likelihood_normalises():
    rbm = random_rbm(6, 3)
    v = bits(6)
    ll = ais_log_likelihood(rbm, v, method="exact")
    assert torch.allclose(torch.logsumexp(ll, 0), torch.zeros((), dtype=ll.dtype), atol=1e-10)
    ll_ais = ais_log_likelihood(rbm, v, num_chains=300, num_steps=500)
    assert torch.allclose(ll_ais, ll, atol=0.1)


def test_continuous_ais_on_gaussian_energies():
    from models.ebm import GaussianEBM

    torch.manual_seed(0)
    ebm = GaussianEBM(2).double()
    ebm.set(mean=torch.tensor([1.0, -0.5]), covariance=torch.tensor([[2.0, 0.6], [0.6, 0.5]]))
    ais = log_partition(ebm, method="ais", num_chains=300, num_steps=200, step_size=0.1)
    assert abs(float(ais - ebm.log_partition().detach())) < 0.05

    grbm = GaussianRBM(2, 3, init_scale=0.8).double()
    with torch.no_grad():
        grbm.c.normal_(0, 0.5)
    data = torch.randn(100, 2, dtype=torch.float64)
    ais = log_partition(grbm, method="ais", data=data, num_chains=300, num_steps=300, step_size=0.3)
    assert abs(float(ais - log_partition(grbm))) < 0.05


def test_boltzmann_machine_exact_and_refusals():
    bm = BoltzmannMachine(4, 2, init_scale=1.0).double()
    v, h = bits(4), bits(2)
    joint = torch.logsumexp(-bm.joint_energy(v[:, None, :], h[None, :, :]).flatten(), 0)
    assert torch.allclose(log_partition(bm), joint - 6 * math.log(2), atol=1e-10)
    with pytest.raises(NotImplementedError, match="method='exact'"):
        log_partition(bm, method="ais")
    with pytest.raises(ValueError, match="max_bits"):
        log_partition(RBM(30, 30))
    with pytest.raises(ValueError, match="method"):
        log_partition(bm, method="magic")
    with pytest.raises(ValueError, match="betas"):
        log_partition(RBM(3, 2), method="ais", betas=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(TypeError, match="pgm.Model"):
        log_partition("rbm")
