"""The model protocol: derived capabilities, exact enumeration, data validation, device/dtype."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import models
import pgm
from pgm.enumerate import NotEnumerable, enumerated_log_joint, joint_support


def burglary_joint(b, e, a, j, m):
    """P(b, e, a, j, m) from the AIMA tables, by hand."""
    pb, pe = 0.001, 0.002
    pa = {(1, 1): 0.95, (1, 0): 0.94, (0, 1): 0.29, (0, 0): 0.001}[(b, e)]
    pj = 0.90 if a else 0.05
    pm = 0.70 if a else 0.01

    def bern(p, x):
        return p if x else 1 - p

    return bern(pb, b) * bern(pe, e) * bern(pa, a) * bern(pj, j) * bern(pm, m)


def test_log_prob_by_enumeration_matches_hand_computation():
    model = models.Burglary()
    calls = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    got = model.log_prob(calls)
    assert got.shape == (3,)
    for row, value in zip(calls.tolist(), got):
        exact = sum(burglary_joint(b, e, a, int(row[0]), int(row[1])) for b, e, a in itertools.product((0, 1), repeat=3))
        assert math.isclose(float(value), math.log(exact), rel_tol=1e-5)


def test_capabilities_follow_the_program():
    assert {"log_prob", "sample", "latents", "energy"} <= models.Burglary().capabilities()
    rbm = models.RBM(v_dim=3, h_dim=2)
    assert "energy" in rbm.capabilities() and "log_prob" not in rbm.capabilities()
    assert "pyro.factor" in rbm.missing("log_prob")
    gan = models.GAN(x_dim=3, z_dim=2, hidden_dims=(4,))
    assert "sample" in gan.capabilities() and "energy" not in gan.capabilities()
    assert "'z'" in gan.missing("energy")
    with pytest.raises(ValueError, match="capability"):
        gan.missing("fly")


def test_derived_energy_sums_out_hidden_units_exactly():
    torch.manual_seed(0)
    rbm = models.RBM(v_dim=3, h_dim=2, init_scale=1.0)
    v = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    by_hand = []
    for row in v:
        terms = []
        for h in itertools.product((0.0, 1.0), repeat=2):
            h = torch.tensor(h)
            log_base = 5 * math.log(0.5)
            terms.append(log_base + row @ rbm.W @ h + row @ rbm.b + h @ rbm.c)
        by_hand.append(-torch.logsumexp(torch.stack(terms), 0))
    assert torch.allclose(pgm.Model.energy(rbm, v), torch.stack(by_hand), atol=1e-5)


def test_joint_support_and_limits():
    support = joint_support(dist.Categorical(torch.ones(3)).expand([2]).to_event(1))
    assert support.shape == (9, 2)
    with pytest.raises(NotEnumerable, match="configurations"):
        joint_support(dist.Bernoulli(0.5).expand([30]).to_event(1), "h")
    with pytest.raises(NotEnumerable, match="not discrete"):
        enumerated_log_joint(lambda: pyro.sample("z", dist.Normal(0.0, 1.0)))


def test_sample_draws_the_observed_sites():
    torch.manual_seed(0)
    drawn = models.Chain().sample(500)
    assert drawn.shape == (500,)
    # c = a + b-noise + c-noise shared a, b per draw batch: marginal variance of c given (a, b) is 1.
    assert 0.5 < float(drawn.var()) < 2.0

    class PlainRBM(models.RBM):  # the program alone, without the RBM's block-Gibbs sampler
        sample = pgm.Model.sample

    with pytest.raises(NotImplementedError, match="Markov chain"):
        PlainRBM(v_dim=2, h_dim=2).sample(3)


def test_validate_data_rejects_bad_data_with_clear_messages():
    rbm = models.RBM(v_dim=3, h_dim=2)
    rbm.validate_data(torch.tensor([[0.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        rbm.validate_data(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match=r"outside the support of its Bernoulli likelihood"):
        rbm.validate_data(torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"shapes \[\(1, 4\)\] do not fit RBM"):
        rbm.validate_data(torch.zeros(1, 4))


def test_from_program_wraps_a_plain_program():
    def program(x):
        loc = torch.tensor(0.0)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    m = pgm.Model.from_program(program, example_args=(torch.zeros(2),))
    x = torch.tensor([0.0, 1.0])
    assert torch.allclose(m.log_prob(x), dist.Normal(0.0, 1.0).log_prob(x))
    assert list(pgm.graph_of(m).nodes) == ["x"]
    with pytest.raises(TypeError, match="model"):
        pgm.Model.from_program(3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_the_module(dtype):
    model = models.Burglary().to(dtype)
    assert model.dtype == dtype
    assert model.log_prob(torch.ones(2, 2, dtype=dtype)).dtype == dtype
    rbm = models.RBM(v_dim=3, h_dim=2).to(dtype)
    assert rbm.energy(torch.ones(2, 3, dtype=dtype)).dtype == dtype


def test_normalized_capability_tells_undirected_likelihoods_apart():
    """Potentials over observed sites (an RBM) leave log Z unknown; potentials over latents only
    (a soft constraint) keep the program normalised for ELBO methods."""
    import pyro
    import pyro.distributions as dist

    assert "normalized" not in models.RBM(v_dim=4, h_dim=3).capabilities()
    assert "interaction" in models.RBM(v_dim=4, h_dim=3).missing("normalized")
    assert "normalized" in models.EightSchools().capabilities()
    # the top RBM of a DBN: potentials over latents only, but with learnable parameters
    assert "learnable parameters" in models.DBN(v_dim=6, hidden_dims=(4, 3)).missing("normalized")

    def constrained(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.factor("keep_positive", -10.0 * torch.relu(-mu))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    model = pgm.Model.from_program(constrained, example_args=(torch.zeros(3),))
    assert model.missing("normalized") is None
