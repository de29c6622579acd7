"""MCMC on Pyro's NUTS and HMC: draws in the Posterior layout, HMC's known answer, resume
through fit without rerunning, refusal of discrete latents, bad input."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgm
from inference.engine import ENGINES, EngineError
from inference.fit import fit
from inference.mcmc import MCMC
from models.classic import GaussianMixture, NormalNormal


def _data(n=20):
    return torch.randn(n, generator=torch.Generator().manual_seed(1)) + 2.0


def test_registered_names():
    assert ENGINES["mcmc"] is MCMC and ENGINES["nuts"] is MCMC
    assert MCMC.iterative is False


def test_posterior_layout_and_thinning():
    x = _data()
    engine = MCMC(NormalNormal(), kernel="hmc", num_samples=40, warmup_steps=50, num_steps=3, num_chains=2)
    history = fit(engine, x, seed=0, progress=False)
    post = engine.posterior()
    assert post.samples["mu"].shape == (2, 40)
    assert 0.0 < history["acceptance_rate"][-1] <= 1.0
    assert engine.diagnostics["divergences"] >= 0
    thinned = engine.posterior(10)
    assert thinned.samples["mu"].shape == (2, 10)
    assert torch.equal(thinned.samples["mu"][:, 0], post.samples["mu"][:, 0])
    assert torch.equal(thinned.samples["mu"][:, -1], post.samples["mu"][:, -1])
    with pytest.raises(ValueError, match="num_samples"):
        engine.posterior(41)


@pytest.mark.slow
def test_hmc_known_answer():
    """HMC (10 leapfrog steps, 2 chains of 100 + 200) gives the closed-form posterior: mean
    within 0.06 (~3 Monte Carlo standard errors), sd within 15%, r-hat < 1.05. About 15-30 s."""
    model = NormalNormal(prior_scale=2.0)
    x = _data()
    engine = MCMC(model, kernel="hmc", num_samples=200, warmup_steps=100, num_steps=10, num_chains=2)
    fit(engine, x, seed=0, progress=False)
    post = engine.posterior()
    loc, scale = model.posterior_params(x)
    assert abs(float(post.mean("mu")) - float(loc)) < 0.06
    assert abs(float(post.std("mu")) / float(scale) - 1) < 0.15
    assert post.summary()["mu"]["r_hat"] < 1.05


def test_resume_loads_the_draws_without_rerunning(tmp_path):
    x = _data()
    engine = MCMC(NormalNormal(), num_samples=50, warmup_steps=30)
    fit(engine, x, seed=0, progress=False, checkpoint_dir=tmp_path)
    again = MCMC(NormalNormal(), num_samples=50, warmup_steps=30)
    again.run = None  # would fail if fit ran the chain again
    fit(again, x, seed=0, progress=False, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(again.posterior().samples["mu"], engine.posterior().samples["mu"])


def test_enumerated_discrete_latents_are_summed_out():
    """The mixture's assignment is marked for enumeration: NUTS samples the continuous sites."""
    x = torch.cat([torch.randn(20, 1) - 4, torch.randn(20, 1) + 4])
    model = GaussianMixture(2, 1)
    engine = MCMC(model, num_samples=30, warmup_steps=30)
    fit(engine, x, seed=0, progress=False)
    post = engine.posterior()
    assert set(post.names) == {"weights", "locs"}
    assert post.samples["locs"].shape == (1, 30, 2, 1)


class Switch(pgm.Model):
    """A discrete latent not marked for enumeration."""

    def model(self, x):
        z = pyro.sample("z", dist.Bernoulli(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(3.0 * z, 1.0), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size),)


def test_refuses_unmarked_discrete_latents():
    with pytest.raises(EngineError) as info:
        MCMC(Switch())
    message = str(info.value)
    assert "'z'" in message and "enumerat" in message and "SVI" in message


def test_bad_arguments():
    model = NormalNormal()
    with pytest.raises(ValueError, match="kernel"):
        MCMC(model, kernel="gibbs")
    with pytest.raises(ValueError, match="num_samples"):
        MCMC(model, num_samples=0)
    with pytest.raises(ValueError, match="num_steps"):
        MCMC(model, kernel="nuts", num_steps=3)
    with pytest.raises(ValueError, match="chain_method"):
        MCMC(model, chain_method="threads")
    engine = MCMC(model)
    with pytest.raises(ValueError, match="run"):
        engine.posterior()
