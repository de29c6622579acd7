"""models.vae: the VAE program and its likelihoods, trained through inference.fit + SVI on the
binarized 8x8 digits. The whole file runs in about 25 s on one CPU core."""

import copy
import math

import pyro.distributions as dist
import pytest
import torch

import models
import pgm
import pgm.program
from inference.evaluate import active_units, kl_per_dimension, log_likelihood
from inference.fit import fit
from inference.svi import SVI
from models.vae import VAE, Likelihood


@pytest.fixture(scope="module")
def digits():
    return pgm.data.load("digits", binarize=True)


def small_vae(**kw):
    torch.manual_seed(0)
    return VAE(x_dim=64, z_dim=kw.pop("z_dim", 8), hidden_dims=kw.pop("hidden_dims", (128,)), **kw)


def iwae_bound(vae, x, k, repeats=1):
    torch.manual_seed(1)
    return torch.stack([log_likelihood(vae, x, num_samples=k) for _ in range(repeats)]).mean().item()


@pytest.fixture(scope="module")
def trained(digits):
    """A VAE trained for 20 epochs (about 5 s), with its IWAE-20 test bound before training."""
    vae = small_vae()
    before = iwae_bound(vae, digits.test, 20)
    history = fit(SVI(vae, elbo="trace", lr=3e-3), digits.train, epochs=20, batch_size=64, seed=0, progress=False)
    return vae, before, history


# ------------------------------------------------------------------ the graph
def test_graph_is_z_to_x_and_isomorphic_with_the_gan():
    g = pgm.graph_of(VAE(x_dim=6, z_dim=2, hidden_dims=(8,)))
    assert sorted(g.nodes) == ["x", "z"] and g.directed_edges == [("z", "x")]  # no encoder node
    assert g.nodes_of_kind("latent") == ["z"] and g.nodes_of_kind("observed") == ["x"]
    gan = pgm.graph_of(models.GAN(x_dim=6, z_dim=2))
    assert g.is_isomorphic(gan, match_kinds=True)
    # A decoder swap (conv) and a flow posterior change no node or edge of the program.
    conv = pgm.graph_of(VAE(x_shape=(1, 8, 8), z_dim=2, conv=True))
    flow = pgm.graph_of(VAE(x_dim=6, z_dim=2, hidden_dims=(8,), flow=2))
    assert conv.is_isomorphic(g) and flow.is_isomorphic(g)
    assert conv.directed_edges == flow.directed_edges == [("z", "x")]


def test_registered_with_digit_defaults():
    vae = models.get("vae")
    assert isinstance(vae, VAE) and vae.x_shape == (64,) and vae.z_dim == 8
    assert vae.sample(5).shape == (5, 64)


# ------------------------------------------------------------------ training and bounds
def test_training_improves_the_iwae_bound_clearly(trained, digits):
    vae, before, history = trained
    after = iwae_bound(vae, digits.test, 20)
    assert math.isfinite(after) and after > before + 15.0, (before, after)  # about -44.5 -> -19
    assert history.epochs["loss"][-1] < history.epochs["loss"][0] - 10.0


def test_iwae_k5_is_tighter_than_trace_on_the_trained_model(trained, digits):
    vae, _, _ = trained
    x = digits.test
    # The engines' own estimates (RenyiELBO(alpha=0) with K=5 against Trace_ELBO), averaged.
    trace = SVI(vae, elbo="trace")
    iwae = SVI(vae, elbo="iwae", num_particles=5)
    torch.manual_seed(2)
    trace_bound = sum(trace.evidence_bound(x) for _ in range(20)) / 20
    iwae_bound_k5 = sum(iwae.evidence_bound(x) for _ in range(20)) / 20
    assert iwae_bound_k5 > trace_bound + 0.2, (trace_bound, iwae_bound_k5)
    # ... and evaluate.log_likelihood agrees with both engines (an independent implementation):
    # K=1 is the ELBO, K=5 the IWAE-5 bound, within Monte Carlo error (std of a mean ~0.05 nats).
    l1, l5 = iwae_bound(vae, x, 1, repeats=20), iwae_bound(vae, x, 5, repeats=20)
    assert abs(l1 - trace_bound) < 0.3 and abs(l5 - iwae_bound_k5) < 0.3, (l1, trace_bound, l5, iwae_bound_k5)
    assert l1 < l5 < iwae_bound(vae, x, 100) + 0.05


def test_collapse_diagnostics_on_the_trained_model(trained, digits):
    vae, _, _ = trained
    kl = kl_per_dimension(vae, digits.test)
    assert kl.shape == (8,) and (kl >= 0).all()
    # kl_per_dimension against a direct computation from the encoder.
    loc, scale = vae.encode(digits.test)
    direct = torch.distributions.kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl, direct.detach(), rtol=1e-4, atol=1e-5)
    n = active_units(vae, digits.test)
    assert n == int((loc.detach().var(0, unbiased=False) > 0.01).sum()) and 1 <= n <= 8


def test_beta_above_one_lowers_the_kl(digits):
    base = small_vae()
    kls = {}
    for beta in (1.0, 4.0):
        vae = copy.deepcopy(base)
        fit(SVI(vae, lr=3e-3, beta=beta), digits.train, epochs=8, batch_size=64, seed=0, progress=False)
        kls[beta] = kl_per_dimension(vae, digits.train).sum().item()
    assert kls[4.0] < 0.7 * kls[1.0], kls


def test_flow_posterior_trains_and_keeps_the_graph(digits):
    vae = small_vae(flow=2)
    assert len(vae.flows) == 2
    flow_params = [p for f in vae.flows for p in f.parameters()]
    names = {n for n, _ in vae.named_parameters()}
    assert flow_params and any(n.startswith("flows.") for n in names)  # registered: trained by engines
    start = [p.detach().clone() for p in flow_params]
    q = vae.posterior_dist(digits.test[:3])
    assert isinstance(q, dist.TransformedDistribution) and q.event_shape == (8,) and q.batch_shape == (3,)
    before = iwae_bound(vae, digits.test, 10)
    fit(SVI(vae, lr=3e-3), digits.train, epochs=6, batch_size=64, seed=0, progress=False)
    after = iwae_bound(vae, digits.test, 10)
    assert after > before + 10.0, (before, after)
    assert any(not torch.equal(a, p) for a, p in zip(start, flow_params))  # the IAF layers moved
    assert pgm.graph_of(vae).directed_edges == [("z", "x")]
    # log q(z|x) of the guide's own draws matches the change of variables through the layers.
    q = vae.posterior_dist(digits.test[:3])
    z = q.rsample()
    x0 = z
    log_det = torch.zeros(3)
    for t in reversed(list(vae.flows)):
        y = x0
        x0 = t.inv(y)
        log_det = log_det + t.log_abs_det_jacobian(x0, y)
    base = dist.Normal(*vae.encode(digits.test[:3])).to_event(1)
    torch.testing.assert_close(q.log_prob(z), base.log_prob(x0) - log_det, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="diagonal Normal"):
        kl_per_dimension(vae, digits.test)


# ------------------------------------------------------------------ variants
def test_sample_shapes():
    vae = VAE(x_dim=64, z_dim=4, hidden_dims=(16,))
    assert vae.sample(7).shape == (7, 64)
    means = vae.sample(7, mean=True)
    assert means.shape == (7, 64) and ((means > 0) & (means < 1)).all()
    img = VAE(x_shape=(1, 8, 8), z_dim=4, conv=True)
    assert img.sample(3).shape == (3, 1, 8, 8)


def test_conv_vae_on_8x8_images_runs_a_step():
    images = pgm.data.load("digits", binarize=True, flatten=False)
    assert images.train.shape[1:] == (1, 8, 8)
    vae = VAE(x_shape=(1, 8, 8), z_dim=4, conv=True, channels=(8, 16))
    before = [p.detach().clone() for p in vae.parameters()]
    history = fit(SVI(vae), images.train, epochs=1, batch_size=32, max_steps=2, seed=0, progress=False)
    assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["loss"])
    assert any(not torch.equal(a, p) for a, p in zip(before, vae.parameters()))
    assert vae.reconstruct(images.test[:4]).shape == (4, 1, 8, 8)


def test_double_precision_vae_runs_a_step(digits):
    vae = small_vae(flow=1).double()
    assert vae.dtype == torch.float64
    history = fit(SVI(vae), digits.train, epochs=1, batch_size=64, max_steps=2, seed=0, progress=False, device="cpu")
    assert all(math.isfinite(v) for v in history["loss"])
    assert all(p.dtype == torch.float64 for p in vae.parameters())
    assert vae.sample(3).dtype == torch.float64
    assert log_likelihood(vae, digits.test[:5].double(), num_samples=3).dtype == torch.float64


@pytest.mark.parametrize(
    "likelihood, kwargs, data",
    [
        ("gaussian", {"likelihood_scale": "learned"}, lambda d: d),
        ("gaussian", {"likelihood_scale": "decoder"}, lambda d: d),
        ("laplace", {"likelihood_scale": 0.3}, lambda d: d),
        ("continuous_bernoulli", {}, lambda d: d),
        ("beta", {}, lambda d: d.clamp(0.01, 0.99)),
        ("categorical", {"num_categories": 17}, lambda d: (d * 16).round()),
    ],
)
def test_other_likelihoods_train_a_step(likelihood, kwargs, data):
    grey = data(pgm.data.load("digits").train[:128])
    vae = small_vae(likelihood=likelihood, **kwargs)
    history = fit(SVI(vae), grey, epochs=1, batch_size=64, seed=0, progress=False)
    assert all(math.isfinite(v) for v in history["loss"])
    assert vae.sample(2).shape == (2, 64)


def test_likelihood_log_densities_against_torch():
    x_shape = (2, 3)
    params = torch.randn(4, 1, *x_shape)
    x = torch.randint(0, 2, (4, *x_shape)).float()
    bern = Likelihood("bernoulli", x_shape)(params)
    assert bern.batch_shape == (4,) and bern.event_shape == x_shape
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none").sum((1, 2))
    torch.testing.assert_close(bern.log_prob(x), expected)
    gauss = Likelihood("gaussian", x_shape, scale=0.5)(params)
    torch.testing.assert_close(gauss.log_prob(x), torch.distributions.Normal(params[:, 0], 0.5).log_prob(x).sum((1, 2)))
    two = torch.randn(4, 2, *x_shape)
    hetero = Likelihood("gaussian", x_shape, scale="decoder", min_scale=0.0)(two)
    scale = torch.nn.functional.softplus(two[:, 1])
    torch.testing.assert_close(hetero.log_prob(x), torch.distributions.Normal(two[:, 0], scale).log_prob(x).sum((1, 2)))
    logits = torch.randn(4, 5, *x_shape)
    cat = Likelihood("categorical", x_shape, num_categories=5)
    k = torch.randint(0, 5, (4, *x_shape))
    manual = logits.log_softmax(1).gather(1, k.unsqueeze(1)).squeeze(1).sum((1, 2))
    torch.testing.assert_close(cat(logits).log_prob(k), manual)
    torch.testing.assert_close(cat.mean(logits), (logits.softmax(1) * torch.arange(5.0).view(1, 5, 1, 1)).sum(1))


# ------------------------------------------------------------------ bad input
def test_non_binary_data_for_a_bernoulli_decoder_is_rejected_before_training(digits):
    vae = small_vae()
    before = [p.detach().clone() for p in vae.parameters()]
    grey = pgm.data.load("digits").train  # values in [0, 1], not binarized
    with pytest.raises(ValueError, match=r"outside the support.*Bernoulli.*binarize"):
        fit(SVI(vae), grey, epochs=1, batch_size=64, progress=False)
    nan = digits.train.clone()
    nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit(SVI(vae), nan, epochs=1, batch_size=64, progress=False)
    wrong = torch.zeros(10, 63)
    with pytest.raises(ValueError, match="shape"):
        fit(SVI(vae), wrong, epochs=1, batch_size=64, progress=False)
    assert all(torch.equal(a, p) for a, p in zip(before, vae.parameters()))  # no step was taken


def test_bad_constructor_arguments_name_themselves():
    with pytest.raises(ValueError, match="x_dim"):
        VAE(z_dim=2)
    with pytest.raises(ValueError, match="z_dim"):
        VAE(x_dim=4, z_dim=0)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(x_dim=4, z_dim=2, likelihood="poisson")
    with pytest.raises(ValueError, match="conv"):
        VAE(x_dim=64, z_dim=2, conv=True)
    with pytest.raises(ValueError, match="image_shape"):
        VAE(x_shape=(1, 6, 6), z_dim=2, conv=True)
    with pytest.raises(ValueError, match="flow"):
        VAE(x_dim=4, z_dim=2, flow=-1)
    with pytest.raises(ValueError, match="num_categories"):
        VAE(x_dim=4, z_dim=2, likelihood="categorical")
    with pytest.raises(ValueError, match="prior"):
        VAE(x_dim=4, z_dim=2, prior=dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pytest.raises(ValueError, match="x_dim, x_shape"):
        VAE(x_dim=10, x_shape=(1, 3, 3), z_dim=2)


class LearnedPrior(torch.nn.Module):
    """A Normal prior with a learned location: an nn.Module, so its parameter is trained."""

    def __init__(self, z_dim):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.full((z_dim,), 0.5))

    def forward(self):
        return dist.Normal(self.loc, 1.0).to_event(1)


def test_priors_a_distribution_or_a_learned_module(digits):
    laplace = dist.Laplace(torch.zeros(4), 1.0).to_event(1)
    vae = VAE(x_dim=64, z_dim=4, hidden_dims=(16,), prior=laplace)
    trace = vae.trace(digits.test[:3])
    assert isinstance(pgm.program.unwrap(trace.nodes["z"]["fn"]), dist.Laplace)
    assert pgm.graph_of(vae).directed_edges == [("z", "x")]
    learned = VAE(x_dim=64, z_dim=4, hidden_dims=(16,), prior=LearnedPrior(4))
    assert "prior.loc" in dict(learned.named_parameters())
    fit(SVI(learned, lr=1e-2), digits.train, epochs=1, batch_size=128, seed=0, progress=False)
    assert not torch.allclose(learned.prior.loc, torch.full((4,), 0.5))  # trained with the rest
