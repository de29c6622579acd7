"""Reweighted wake-sleep: the bound improves to the exact evidence, the model's own parameter
is learned by wake-theta, resume is exact, bad input is refused."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgm
from inference.engine import ENGINES
from inference.fit import fit
from inference.wake_sleep import WakeSleep
from models.classic import NormalNormal


def _data(n=20):
    return torch.randn(n, generator=torch.Generator().manual_seed(1)) + 2.0


def test_registered():
    assert ENGINES["rws"] is WakeSleep


def test_bound_improves_to_the_evidence_and_guide_to_the_posterior():
    """With K=2 the IWAE bound of the prior-initialised guide is far below log p(x); after
    training it is within 0.02 nats per datum, and q matches the exact posterior."""
    x = _data()
    model = NormalNormal()
    engine = WakeSleep(model, num_particles=5, lr=0.05)
    exact = float(model.log_evidence(x)) / x.shape[0]
    def bound():  # the K=2 IWAE bound, averaged over 300 estimates
        return sum(engine.evidence_bound(x, 2) for _ in range(300)) / 300

    before = bound()
    fit(engine, x, epochs=500, seed=0, progress=False)
    after = bound()
    assert before < exact - 0.2
    assert after > before + 0.2 and abs(after - exact) < 0.02
    loc, scale = model.posterior_params(x)
    assert abs(float(model.guide_loc) - float(loc)) < 0.05
    assert abs(float(model.guide_log_scale.exp()) / float(scale) - 1) < 0.25


class LearnedPrior(pgm.Model):
    """mu ~ N(a, 1), x ~ N(mu, 1): maximum marginal likelihood puts a at mean(x)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(()))
        self.q_loc = torch.nn.Parameter(torch.zeros(()))

    def model(self, x):
        mu = pyro.sample("mu", dist.Normal(self.a, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def guide(self, x):
        pyro.sample("mu", dist.Normal(self.q_loc, 0.2))

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size),)


def test_wake_theta_learns_the_model():
    x = _data()
    model = LearnedPrior()
    fit(WakeSleep(model, num_particles=10, lr=0.05), x, epochs=600, seed=0, progress=False)
    assert abs(float(model.a) - float(x.mean())) < 0.15


def test_resume_is_exact(tmp_path):
    x = _data(12)

    def run(steps, resume, directory):
        pyro.clear_param_store()
        model = NormalNormal()
        engine = WakeSleep(model, guide=None, num_particles=3, lr=0.05)
        fit(engine, x, epochs=5, batch_size=4, seed=3, max_steps=steps, checkpoint_dir=directory,
            checkpoint_every=5, resume=resume, progress=False)
        return [p.detach().clone() for p in model.parameters()]

    full = run(11, False, tmp_path / "a")
    run(5, False, tmp_path / "b")
    for a, b in zip(full, run(11, True, tmp_path / "b")):
        assert torch.equal(a, b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_particles"):
        WakeSleep(NormalNormal(), num_particles=1)
    with pytest.raises(ValueError, match="insomnia"):
        WakeSleep(NormalNormal(), insomnia=2.0)


def test_refuses_an_unnormalised_model():
    from inference.engine import EngineError
    from models.rbm import RBM

    with pytest.raises(EngineError, match="normalized"):
        WakeSleep(RBM(6, 4))
