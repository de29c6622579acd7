"""SVI: ELBO gradients against hand-derived ones, beta (fixed, warm-up) against its closed-form
optimum, refusals, bad input, plain programs with autoguides, jit, and exact resume."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pgm
from inference.engine import EngineError
from inference.fit import fit
from inference.svi import SVI, WarmUp
from models.classic import NormalNormal


def _data(n=10):
    return torch.randn(n, generator=torch.Generator().manual_seed(2)) + 1.0


def _analytic_elbo_and_grads(x, m, s, mu0=0.0, s0=1.0, sigma=1.0):
    """ELBO of NormalNormal under q(mu) = N(m, s^2) and its derivatives in m and s."""
    n = x.shape[0]
    elbo = (-0.5 * n * math.log(2 * math.pi * sigma**2) - (((x - m) ** 2).sum() + n * s**2) / (2 * sigma**2)
            - 0.5 * math.log(2 * math.pi * s0**2) - ((m - mu0) ** 2 + s**2) / (2 * s0**2)
            + 0.5 * math.log(2 * math.pi * math.e * s**2))
    d_m = (x - m).sum() / sigma**2 - (m - mu0) / s0**2
    d_s = -n * s / sigma**2 - s / s0**2 + 1 / s
    return float(elbo), float(d_m), float(d_s)


@pytest.mark.parametrize("elbo", ["meanfield", "trace", "tracegraph"])
def test_elbo_value_and_gradients_match_hand_derived(elbo):
    """With 50000 vectorised particles the loss and its gradients match the analytic ELBO of
    the conjugate model within 3% (Monte Carlo standard error ~0.6%)."""
    x = _data()
    model = NormalNormal()
    with torch.no_grad():
        model.guide_loc.fill_(0.3)
        model.guide_log_scale.fill_(math.log(0.6))
    engine = SVI(model, elbo=elbo, num_particles=50000)
    loss = engine.loss(x)  # -ELBO / N
    loss.backward()
    value, d_m, d_s = _analytic_elbo_and_grads(x, 0.3, 0.6)
    n = x.shape[0]
    assert abs(-float(loss.detach()) * n - value) < 0.01 * abs(value)
    assert abs(-float(model.guide_loc.grad) * n - d_m) < 0.03 * abs(d_m)
    # d/d log s = s d/ds
    assert abs(-float(model.guide_log_scale.grad) * n - 0.6 * d_s) < 0.03 * abs(0.6 * d_s)


def _beta_optimum(x, beta):
    """argmax_q E_q log p(x|mu) - beta KL(q || N(0, 1)) for q = N(m, s^2), sigma = 1."""
    n = x.shape[0]
    precision = n + beta
    return float(x.sum() / precision), math.sqrt(beta / precision)


def test_beta_reaches_its_closed_form_optimum():
    x = _data()
    model = NormalNormal()
    steps = 1500
    engine = SVI(model, elbo="meanfield", beta=0.3, lr=0.05,
                 scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, (0.001 / 0.05) ** (1 / steps)))
    history = fit(engine, x, epochs=steps, seed=0, progress=False)
    m, s = _beta_optimum(x, 0.3)
    assert abs(float(model.guide_loc) - m) < 0.03
    assert abs(float(model.guide_log_scale.exp()) / s - 1) < 0.1
    assert s < model.posterior_params(x)[1]  # beta < 1 narrows q
    assert history["beta"][-1] == 0.3


def test_beta_warmup_schedule_is_followed():
    x = _data()
    engine = SVI(NormalNormal(), beta=(0.0, 1.0, 4))
    assert isinstance(engine.beta, WarmUp)
    history = fit(engine, x, epochs=6, seed=0, progress=False)
    assert history["beta"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    calls = []
    engine = SVI(NormalNormal(), beta=lambda t: calls.append(t) or 2.0)
    fit(engine, x, epochs=3, seed=0, progress=False)
    assert calls == [0, 1, 2]


def test_beta_scales_the_kl_term_exactly():
    """The loss is E_q log p(x|mu) - beta KL: with meanfield and a fixed draw, loss(beta=b) -
    loss(beta=0) = b * KL / N."""
    x = _data()
    model = NormalNormal()
    with torch.no_grad():
        model.guide_loc.fill_(0.5)
    values = {}
    for beta in (0.0, 2.0):
        pyro.set_rng_seed(7)
        values[beta] = float(SVI(model, elbo="meanfield", beta=beta).loss(x))
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(0.5, 1.0), torch.distributions.Normal(0.0, 1.0))
    assert abs((values[2.0] - values[0.0]) - 2.0 * float(kl) / x.shape[0]) < 1e-5


def test_bad_arguments():
    model = NormalNormal()
    with pytest.raises(ValueError, match="elbo"):
        SVI(model, elbo="nope")
    with pytest.raises(ValueError, match="alpha"):
        SVI(model, elbo="renyi")
    with pytest.raises(ValueError, match="num_particles"):
        SVI(model, num_particles=0)
    with pytest.raises(ValueError, match="beta"):
        SVI(model, beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        SVI(model, beta=(0.0, 1.0))
    with pytest.raises(ValueError, match="jit"):
        SVI(model, elbo="iwae", jit=True)
    with pytest.raises(ValueError, match="guide"):
        SVI(model, guide="nonsense")


class Coin(pgm.Model):
    """No latent sites: nothing for SVI to infer."""

    def __init__(self):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.zeros(()))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=self.logit), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size),)


def test_refusal_names_engines_that_work():
    with pytest.raises(EngineError) as info:
        SVI(Coin())
    message = str(info.value)
    assert "latents" in message and "MaximumLikelihood" in message


def test_plain_program_with_autoguide():
    """A plain Pyro program and no guide: an AutoNormal is built and fits the posterior."""
    def program(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    x = _data()
    steps = 800
    engine = SVI(program, elbo="meanfield", lr=0.05,
                 scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, (0.002 / 0.05) ** (1 / steps)))
    fit(engine, x, epochs=steps, seed=0, progress=False)
    post = engine.posterior(4000)
    loc, scale = NormalNormal().posterior_params(x)
    assert isinstance(engine.guide, pyro.infer.autoguide.AutoNormal)
    assert abs(float(post.mean("mu")) - float(loc)) < 0.05
    assert abs(float(post.std("mu")) / float(scale) - 1) < 0.15
    # two engines never share autoguide parameters
    other = SVI(program)
    other.loss(x)
    assert other.guide._pyro_name != engine.guide._pyro_name


def test_evidence_bound_is_below_the_evidence_and_tight_at_the_posterior():
    x = _data()
    model = NormalNormal()
    loc, scale = model.posterior_params(x)
    exact = float(model.log_evidence(x)) / x.shape[0]
    engine = SVI(model)
    assert engine.evidence_bound(x, 2000) < exact - 0.01
    with torch.no_grad():
        model.guide_loc.copy_(loc)
        model.guide_log_scale.copy_(scale.log())
    assert abs(engine.evidence_bound(x, 2000) - exact) < 1e-4  # q = posterior: the bound is exact


def test_jit_matches_the_interpreted_elbo():
    x = _data()
    values = []
    for jit in (False, True):
        model = NormalNormal()
        engine = SVI(model, elbo="trace", jit=jit, lr=0.01)
        history = fit(engine, x, epochs=5, seed=0, progress=False)
        values.append((history["loss"], float(model.guide_loc)))
    assert values[0][0] == pytest.approx(values[1][0], rel=1e-5)
    assert values[0][1] == pytest.approx(values[1][1], rel=1e-5)


class GuideModule(torch.nn.Module):
    """A guide of its own, outside the model: its parameters travel in SVI's state_dict."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))
        self.log_scale = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        pyro.sample("mu", dist.Normal(self.loc, self.log_scale.exp()))


@pytest.mark.parametrize("guide", [None, "normal", "module"])
def test_resume_is_exact(tmp_path, guide):
    """Checkpoint after 7 steps, resume to 15: the same parameters as 15 uninterrupted steps
    (Adam's moments, the guide's parameters and the RNG travel in the checkpoint)."""
    x = torch.randn(12) + 1.0

    def run(steps, resume, directory):
        pyro.clear_param_store()
        model = NormalNormal()
        engine = SVI(model, guide=GuideModule() if guide == "module" else guide, lr=0.05)
        fit(engine, x, epochs=5, batch_size=4, seed=3, max_steps=steps, checkpoint_dir=directory,
            checkpoint_every=7, resume=resume, progress=False)
        return [p.detach().clone() for p in engine.parameters()]

    full = run(15, False, tmp_path / "a")
    run(7, False, tmp_path / "b")
    resumed = run(15, True, tmp_path / "b")
    assert len(full) == len(resumed)
    for a, b in zip(full, resumed):
        assert torch.equal(a, b)
    state = SVI(NormalNormal(), lr=0.05)
    fit(state, x, epochs=1, seed=0, progress=False)
    assert "exp_avg" in str(state.state_dict()["optimizer"]["state"])


def test_refuses_an_unnormalised_model():
    """An RBM's potentials leave log Z unknown: the ELBO is no bound, and SVI says which
    engines train it instead."""
    from models.rbm import RBM

    with pytest.raises(EngineError) as info:
        SVI(RBM(6, 4))
    message = str(info.value)
    assert "normalized" in message and "ContrastiveDivergence" in message


def test_vae_local_latents():
    """An amortised guide over local latents: the posterior has a draw per datum, the loss
    falls, and a KL warm-up is followed."""
    from models.vae import VAE

    torch.manual_seed(0)
    vae = VAE(x_dim=12, z_dim=2, hidden_dims=(16,))
    x = torch.bernoulli(torch.rand(64, 12))
    engine = SVI(vae, elbo="meanfield", lr=1e-2, beta=(0.5, 1.0, 10))
    history = fit(engine, x, epochs=30, batch_size=32, seed=0, progress=False)
    assert history["beta"][:3] == [0.5, 0.55, 0.6] and history["beta"][-1] == 1.0
    early, late = sum(history["loss"][:4]) / 4, sum(history["loss"][-4:]) / 4
    assert late < early - 0.2
    post = engine.posterior(5, x)
    assert post["z"].shape == (1, 5, 64, 2)
    assert engine.evidence_bound(x, 10) > -12 * math.log(2)  # better than coin flips
