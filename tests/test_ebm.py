"""Continuous energy-based models: energies derived from the programs against the closed forms,
the Gaussian's closed-form normaliser, moments and sampler, the registry, and bad input."""

import math

import pytest
import torch
from torch import nn

import pgm
from models.ebm import EBM, ClassifierEBM, GaussianEBM, energy_mlp
from models.registry import get

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[2.0, 0.6], [0.6, 0.5]])


def test_gaussian_energy_matches_the_energy_derived_from_its_program():
    g = GaussianEBM(2, mean=MEAN, covariance=COV)
    x = torch.randn(7, 2) * 2
    derived = pgm.Model.energy(g, x)  # from the trace: flat base measure + the "energy" factor
    closed = 0.5 * ((x - MEAN) @ torch.linalg.inv(COV) * (x - MEAN)).sum(-1)
    assert torch.allclose(g.energy(x), derived, atol=1e-5)
    assert torch.allclose(g.energy(x), closed, atol=1e-4)


def test_gaussian_closed_forms():
    g = GaussianEBM(2, mean=MEAN, covariance=COV)
    assert torch.allclose(g.mean, MEAN) and torch.allclose(g.covariance, COV, atol=1e-5)
    assert torch.allclose(g.precision, torch.linalg.inv(COV), atol=1e-4)
    # log Z = 1/2 log det(2 pi Sigma); log_prob is the MultivariateNormal's.
    assert math.isclose(float(g.log_partition().detach()), 0.5 * float(torch.logdet(2 * math.pi * COV)), abs_tol=1e-5)
    x = torch.randn(5, 2)
    reference = torch.distributions.MultivariateNormal(MEAN, COV).log_prob(x)
    assert torch.allclose(g.log_prob(x), reference, atol=1e-5)
    assert torch.allclose(g.distribution().log_prob(x), reference, atol=1e-5)
    # Exact sampler: moments of 20000 draws within ~4 standard errors (se of a variance of
    # ~2 is 2 sqrt(2 / n) = 0.02).
    s = g.sample(20000)
    assert s.shape == (20000, 2)
    assert torch.allclose(s.mean(0), MEAN, atol=0.05)
    assert torch.allclose(torch.cov(s.T), COV, atol=0.08)


def test_gaussian_gradients_reach_every_parameter():
    g = GaussianEBM(3)
    g.energy(torch.randn(4, 3) + 1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (g.mu, g.log_diag, g.lower))


@pytest.mark.parametrize("base_scale", [None, 2.0])
def test_ebm_energy_matches_the_energy_derived_from_its_program(base_scale):
    ebm = EBM(x_dim=3, hidden_dims=(16,), base_scale=base_scale)
    x = torch.randn(6, 3)
    assert torch.allclose(ebm.energy(x), pgm.Model.energy(ebm, x), atol=1e-5)
    net = ebm.energy_net(x).squeeze(-1)
    if base_scale is None:
        assert torch.allclose(ebm.energy(x), net)
    else:  # Normal(0, 4 I) base: + |x|^2 / 8 + 3/2 log(8 pi)
        assert torch.allclose(ebm.energy(x), net + x.pow(2).sum(-1) / 8 + 1.5 * math.log(8 * math.pi), atol=1e-5)
        assert ebm.base_distribution().event_shape == (3,)


def test_ebm_with_any_energy_network_and_image_shapes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    ebm = EBM(x_dim=(1, 4, 4), energy_net=net)
    x = torch.randn(5, 1, 4, 4)
    assert ebm.energy(x).shape == (5,)
    assert torch.allclose(ebm.energy(x), pgm.Model.energy(ebm, x), atol=1e-5)
    assert ebm.x_dim == 16 and ebm.example_inputs(3)[0].shape == (3, 1, 4, 4)
    assert EBM(x_shape=(1, 4, 4), energy_net=net).x_shape == (1, 4, 4)
    assert energy_mlp((1, 4, 4), (8,))(x).shape == (5, 1)


def test_ebm_capabilities_and_registry():
    ebm = get("ebm")
    assert isinstance(ebm, EBM) and ebm.x_shape == (2,)
    assert {"energy", "continuous", "program"} <= ebm.capabilities()
    assert "sample" not in ebm.capabilities() and "log_prob" not in ebm.capabilities()
    assert get("ebm", x_dim=5).x_shape == (5,)
    assert isinstance(get("gaussian_ebm"), GaussianEBM)
    g = pgm.graph_of(ebm)
    assert "x" in g.nodes


def test_classifier_ebm_energy_is_minus_logsumexp_of_the_logits():
    jem = ClassifierEBM(x_dim=2, num_classes=3, hidden_dims=(8,))
    x = torch.randn(6, 2)
    logits = jem.logits(x)
    assert torch.allclose(jem.energy(x), -logits.logsumexp(-1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(jem.energy(x, y), -logits[torch.arange(6), y])
    # The program's derived energy sums the latent label out under a uniform Categorical base
    # measure: it is energy(x) + log K (see the class docstring), and energy(x, y) + log K.
    assert torch.allclose(pgm.Model.energy(jem, x), jem.energy(x) + math.log(3), atol=1e-5)
    assert torch.allclose(pgm.Model.energy(jem, x, y), jem.energy(x, y) + math.log(3), atol=1e-5)
    assert torch.allclose(jem.class_probs(x), logits.softmax(-1))
    assert torch.equal(jem.predict(x), logits.argmax(-1))


def test_classifier_ebm_takes_any_classifier():
    clf = nn.Linear(4, 5)
    jem = ClassifierEBM(clf, num_classes=5, x_dim=4)
    x = torch.randn(3, 4)
    assert torch.allclose(jem.energy(x), -clf(x).logsumexp(-1))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: EBM(x_dim=0), "x_dim"),
        (lambda: EBM(x_dim="2"), "x_dim"),
        (lambda: EBM(x_shape=(2, 0)), "x_shape"),
        (lambda: EBM(x_dim=2, base_scale=-1.0), "base_scale"),
        (lambda: GaussianEBM(x_dim=2.5), "x_dim"),
        (lambda: GaussianEBM(2, mean=torch.zeros(3)), "mean"),
        (lambda: GaussianEBM(2, covariance=torch.tensor([[1.0, 2.0], [2.0, 1.0]])), "covariance"),
        (lambda: ClassifierEBM(num_classes=1, x_dim=2), "num_classes"),
        (lambda: ClassifierEBM(num_classes=3), "x_dim"),
    ],
)
def test_bad_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_data_shapes_are_named():
    with pytest.raises(ValueError, match=r"x: expected shape"):
        EBM(x_dim=2).energy(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"x: expected a tensor of shape \(batch, 2\)"):
        GaussianEBM(2).energy(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="energy_net"):
        EBM(x_dim=2, energy_net=3)


def test_float64():
    g = GaussianEBM(2, mean=MEAN, covariance=COV).to(torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    assert g.energy(x).dtype == torch.float64 and g.sample(3).dtype == torch.float64
    ebm = EBM(2, hidden_dims=(4,)).to(torch.float64)
    assert ebm.energy(x).dtype == torch.float64 and ebm.example_inputs()[0].dtype == torch.float64
