"""RBM and Gaussian RBM: closed forms against the program's derived energy, brute-force sums and
exact distributions."""

import math

import pytest
import torch

import models
import pgm
from inference.gibbs import Gibbs
from models.rbm import RBM, GaussianRBM
from pgm import Model
from pgm.enumerate import joint_support
import pyro.distributions as dist


def all_binary(n, dtype=torch.float64):
    return joint_support(dist.Bernoulli(torch.tensor(0.5, dtype=dtype)).expand([n]).to_event(1))


def random_rbm(v_dim=8, h_dim=4, scale=0.8):
    rbm = RBM(v_dim, h_dim, init_scale=scale).double()
    with torch.no_grad():
        rbm.b.normal_(0, 0.5)
        rbm.c.normal_(0, 0.5)
    return rbm


def test_free_energy_is_the_program_energy_summed_over_hidden_states():
    """Closed form F(v) vs the program's energy with h summed out by pgm.enumerate: they differ
    by the base measures' constant (V + H) log 2 only."""
    rbm = random_rbm(8, 4)
    v = all_binary(8)
    derived = Model.energy(rbm, v)  # the default: enumeration of the program's latent site
    assert torch.allclose(rbm.energy(v) + 12 * math.log(2), derived, atol=1e-10)
    # and the sum over hidden states of the joint energy, written out
    h = all_binary(4)
    brute = -torch.logsumexp(-rbm.joint_energy(v[:, None, :], h[None, :, :]), dim=1)
    assert torch.allclose(rbm.free_energy(v), brute, atol=1e-10)


def test_hidden_free_energy_sums_out_the_visible_units():
    rbm = random_rbm(5, 3)
    v, h = all_binary(5), all_binary(3)
    brute = -torch.logsumexp(-rbm.joint_energy(v[None, :, :], h[:, None, :]), dim=1)
    assert torch.allclose(rbm.hidden_free_energy(h), brute, atol=1e-10)


def test_closed_form_conditionals_are_the_ratios_of_joint_probabilities():
    rbm = random_rbm(6, 3)
    v = torch.bernoulli(torch.full((5, 6), 0.5, dtype=torch.float64))
    h = torch.bernoulli(torch.full((5, 3), 0.5, dtype=torch.float64))
    for j in range(3):
        on, off = h.clone(), h.clone()
        on[:, j], off[:, j] = 1, 0
        logit = rbm.joint_energy(v, off) - rbm.joint_energy(v, on)
        assert torch.allclose(rbm.p_h_given_v(v)[:, j], torch.sigmoid(logit), atol=1e-12)
    for i in range(6):
        on, off = v.clone(), v.clone()
        on[:, i], off[:, i] = 1, 0
        logit = rbm.joint_energy(off, h) - rbm.joint_energy(on, h)
        assert torch.allclose(rbm.p_v_given_h(h)[:, i], torch.sigmoid(logit), atol=1e-12)


def test_closed_form_conditionals_equal_the_derived_ones():
    """Gibbs's conditionals from one autograd gradient of the program vs the RBM's closed forms."""
    rbm = random_rbm(6, 3)
    gibbs = Gibbs(rbm, closed_form=False)
    chains = gibbs.init_random(7)
    logits = gibbs.logits(chains)
    closed = rbm.gibbs_conditionals()
    assert torch.allclose(logits["h"], closed["h"](chains).logits, atol=1e-10)
    assert torch.allclose(logits["v"], closed["v"](chains).logits, atol=1e-10)


def test_block_gibbs_sample_matches_the_exact_distribution():
    """rbm.sample: total variation to the exact p(v) over the 16 states below 0.04 with 8000
    chains (the sampling error alone is about 0.015)."""
    torch.manual_seed(0)
    rbm = random_rbm(4, 3, scale=1.0)
    v = all_binary(4)
    exact = torch.softmax(-rbm.free_energy(v), 0)
    x = rbm.sample(8000, num_steps=30)
    codes = (x * torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=x.dtype)).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).double() / x.shape[0]
    assert 0.5 * (freq - exact).abs().sum() < 0.04


def test_gaussian_rbm_free_energy_and_log_partition():
    torch.manual_seed(0)
    m = GaussianRBM(2, 3, init_scale=0.7, learn_sigma=True).double()
    with torch.no_grad():
        m.b.normal_(0, 0.5)
        m.c.normal_(0, 0.5)
        m.log_sigma.normal_(0, 0.2)
    x = torch.randn(5, 2, dtype=torch.float64)
    derived = Model.energy(m, x)  # the program's energy, h enumerated; v has the flat measure
    assert torch.allclose(m.energy(x) + 3 * math.log(2), derived, atol=1e-10)
    # log Z by quadrature on a grid (the density is a mixture of 8 Gaussians)
    g = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    cell = (g[1] - g[0]) ** 2
    numeric = torch.logsumexp(-m.energy(grid), 0) + torch.log(cell)
    assert torch.allclose(m.log_partition(), numeric, atol=1e-6)


def test_gaussian_rbm_gibbs_samples_have_the_exact_mean():
    """v | h ~ N(b + sigma W h, sigma^2): the exact mean is sum_h p(h) (b + sigma W h)."""
    torch.manual_seed(1)
    m = GaussianRBM(2, 3, init_scale=0.8).double()
    with torch.no_grad():
        m.c.normal_(0, 0.5)
    h = all_binary(3)
    s = m.sigma
    mean_h = m.b + s * (h @ m.W.T)
    log_ph = h @ m.c + ((mean_h**2 - m.b**2) / (2 * s**2)).sum(-1)
    exact = (torch.softmax(log_ph, 0)[:, None] * mean_h).sum(0)
    x = m.sample(6000, num_steps=30)
    assert torch.allclose(x.mean(0), exact.detach(), atol=0.05)  # standard error about 0.013


def test_registry_and_bad_input():
    assert type(models.get("rbm")).__name__ == "RBM"
    assert type(models.get("gaussian_rbm")).__name__ == "GaussianRBM"
    with pytest.raises(ValueError, match="h_dim"):
        RBM(4, 0)
    with pytest.raises(ValueError, match=r"v: expected shape \(batch, 4\)"):
        RBM(4, 3).energy(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="n: expected a positive int"):
        RBM(4, 3).sample(0)


def test_program_site_names_and_graph():
    g = pgm.graph_of(GaussianRBM(3, 2))
    assert set(g.nodes) >= {"v", "h"} and g.kind == "undirected"
    assert set(pgm.graph_of(RBM(3, 2)).factors) == {"interaction", "visible_bias", "hidden_bias"}


@pytest.mark.parametrize("make", [lambda: random_rbm(6, 3), lambda: GaussianRBM(3, 4, init_scale=0.7, learn_sigma=True).double()])
def test_free_energy_and_hidden_posterior_from_one_product(make):
    """free_energy_and_hidden(v) gives F(v) and p(h | v): the same values as free_energy and the
    closed-form hidden conditional, and gradients through both."""
    torch.manual_seed(0)
    model = make()
    v = torch.bernoulli(torch.full((5, model.v_dim), 0.5, dtype=torch.float64))
    energy, hidden = model.free_energy_and_hidden(v)
    assert torch.allclose(energy, model.free_energy(v), atol=1e-12)
    assert torch.allclose(hidden["h"].probs, model.p_h_given_v(v), atol=1e-12)
    assert torch.allclose(hidden["h"].logits, model.gibbs_conditionals()["h"]({"v": v}).logits, atol=1e-12)
    (g_fused,) = torch.autograd.grad(energy.sum(), model.W)
    (g_plain,) = torch.autograd.grad(model.free_energy(v).sum(), model.W)
    assert torch.allclose(g_fused, g_plain, atol=1e-12)


@pytest.mark.parametrize("kind, learn_sigma", [("rbm", False), ("gaussian", False), ("gaussian", True)])
def test_free_energy_backward_is_the_autograd_gradient_of_the_free_energy(kind, learn_sigma):
    """free_energy_backward(v, scale, hidden) adds scale * d sum_i F(v_i) / d theta to .grad: the
    same as autograd's gradient of the free energy, accumulated on top of an existing .grad,
    with p(h | v) given or computed, and parameters that are not trained left alone."""
    torch.manual_seed(0)
    if kind == "rbm":
        model = random_rbm(7, 4)
        v = torch.bernoulli(torch.full((6, 7), 0.5, dtype=torch.float64))
    else:
        model = GaussianRBM(3, 5, init_scale=0.7, learn_sigma=learn_sigma).double()
        with torch.no_grad():
            model.b.normal_()
            model.c.normal_()
            model.log_sigma.normal_(0.0, 0.3)
        v = torch.randn(6, 3, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    expected = torch.autograd.grad(-0.3 * model.free_energy(v).sum(), params)
    model.free_energy_backward(v, -0.3)
    assert all(torch.allclose(p.grad, g, atol=1e-12) for p, g in zip(params, expected))
    # a second call accumulates, as backward() does; the hidden conditional can be passed in
    hidden = model.free_energy_and_hidden(v)[1]
    model.free_energy_backward(v, -0.3, hidden)
    assert all(torch.allclose(p.grad, 2 * g, atol=1e-12) for p, g in zip(params, expected))
    if not learn_sigma and kind == "gaussian":
        assert model.log_sigma.grad is None
    with pytest.raises(ValueError, match=r"v: expected shape \(batch, "):
        model.free_energy_backward(v[:, :2])


def test_gaussian_rbm_sigma_is_fixed_or_the_start_of_learning():
    fixed = GaussianRBM(v_dim=3, h_dim=2, sigma=0.5)
    assert torch.allclose(fixed.sigma, torch.full((3,), 0.5)) and not fixed.log_sigma.requires_grad
    learned = GaussianRBM(v_dim=3, h_dim=2, sigma=0.5, learn_sigma=True)
    assert learned.log_sigma.requires_grad and torch.allclose(learned.sigma, torch.full((3,), 0.5))
    # v | h ~ Normal(b + sigma W h, sigma^2): the conditional's spread is sigma
    conditional = fixed.gibbs_conditionals()["v"]({"h": torch.ones(4000, 2)})
    assert abs(float(conditional.sample().std(0).mean()) - 0.5) < 0.03
    with pytest.raises(ValueError, match="sigma"):
        GaussianRBM(v_dim=3, h_dim=2, sigma=0.0)
