"""DDPM as a Pyro program (reverse chain + fixed forward guide), its schedules, samplers,
guidance, and the simplified-objective engine (issue 14)."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

import inference
import models
from inference.diffusion import Diffusion, ema_model_state
from models.ddpm import DDPM, beta_schedule, ddim_timesteps
from diffusion_helpers import LinearEps, MixtureScore, OracleEps, mmd2  # noqa: F401


# ---------------------------------------------------------------------------------------------
# schedules and the forward process
# ---------------------------------------------------------------------------------------------
def test_schedules_closed_forms():
    lin = beta_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    assert beta_schedule("linear", 100)[-1].item() == pytest.approx(0.2)  # scaled by 1000 / T
    cos = beta_schedule("cosine", 1000)
    ab = torch.cumprod(1 - cos, 0)
    s = 0.008
    f = lambda t: math.cos((t / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 250, 500, 900):
        assert ab[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert cos.max().item() <= 0.999
    m = DDPM(x_dim=1, num_steps=50, schedule="cosine", hidden_dim=4, num_layers=1)
    assert m.alphas_bar[0].item() == 1.0 and m.alphas_bar[-1].item() < 1e-3
    with pytest.raises(ValueError, match="schedule"):
        DDPM(x_dim=1, schedule="quadratic")


def test_forward_process_marginal_matches_closed_form():
    """The guide (the forward Markov chain x_t ~ N(sqrt(1-beta_t) x_{t-1}, beta_t)) has marginal
    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t): moments over many draws."""
    torch.manual_seed(0)
    m = DDPM(x_dim=2, num_steps=20, schedule="linear", hidden_dim=4, num_layers=1).double()
    x = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(20000, 2)
    trace = poutine.trace(m.guide).get_trace(x)
    for t in (1, 5, 12, 20):
        xt = trace.nodes[f"x_{t}"]["value"]
        ab = m.alphas_bar[t]
        se = (1 - ab).sqrt() / math.sqrt(20000)
        assert torch.allclose(xt.mean(0), ab.sqrt() * x[0], atol=5 * se.item())
        assert torch.allclose(xt.var(0), (1 - ab).expand(2), rtol=0.05)
        # and q_sample (the engine's shortcut) agrees
        direct = m.q_sample(x, t)
        assert torch.allclose(direct.mean(0), xt.mean(0), atol=8 * se.item())
        assert torch.allclose(direct.var(0), xt.var(0), rtol=0.06)


def test_prediction_targets_invert():
    """Whatever the network predicts (eps, x0, v), its target at (x0, eps) gives back x0 and eps."""
    torch.manual_seed(1)
    for prediction in ("eps", "x0", "v"):
        m = DDPM(x_dim=3, num_steps=30, prediction=prediction, hidden_dim=4, num_layers=1).double()
        x0, eps = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
        t = torch.randint(1, 31, (7,))
        xt = m.q_sample(x0, t, eps)
        a, e = m.to_x0_eps(xt, t, m.target(x0, eps, t))
        assert torch.allclose(a, x0) and torch.allclose(e, eps)


# ---------------------------------------------------------------------------------------------
# DDIM's time steps
# ---------------------------------------------------------------------------------------------
def test_ddim_timesteps_spacing():
    assert ddim_timesteps(1000, 10) == list(range(1000, 0, -100))
    assert ddim_timesteps(1000, 3) == [1000, 667, 334]
    assert ddim_timesteps(1000, 10, "leading") == list(range(901, 0, -100))
    assert ddim_timesteps(1000, 5, "linspace") == [1000, 750, 500, 251, 1]
    for spacing in ("trailing", "leading", "linspace"):
        assert ddim_timesteps(10, 10, spacing) == list(range(10, 0, -1))  # all steps = ancestral
        for T, S in ((1000, 7), (37, 36), (5, 1), (100, 33)):
            ts = ddim_timesteps(T, S, spacing)
            assert len(ts) == S and all(1 <= t <= T for t in ts)
            assert all(a > b for a, b in zip(ts[:-1], ts[1:]))  # strictly decreasing: no repeated step
            if spacing != "leading":
                assert ts[0] == T  # starts from pure noise, where sampling starts
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            ddim_timesteps(10, bad)
    with pytest.raises(ValueError, match="spacing"):
        ddim_timesteps(10, 5, "uniform")


# ---------------------------------------------------------------------------------------------
# the ELBO: SVI on the program against the closed form
# ---------------------------------------------------------------------------------------------
def _linear_gaussian_ddpm(T=8, m0=0.5, s0=0.7, shift=1.0, scale=2.0, perturb=0.3, variance="beta"):
    """A DDPM whose eps network is linear in x_t, near the exact one for data N(m0, s0^2) in
    diffusion space (perturbed so that the bound is not tight)."""
    torch.manual_seed(0)
    net = LinearEps(T).double()
    m = DDPM(x_dim=1, num_steps=T, schedule="linear", variance=variance, net=net, shift=shift, scale=scale).double()
    ab = m.alphas_bar
    with torch.no_grad():
        v = ab * s0**2 + 1 - ab
        a = (1 - ab).sqrt() / v
        net.a.copy_(a * (1 + perturb * torch.randn(T + 1, dtype=torch.float64)))
        net.b.copy_(-a * ab.sqrt() * m0 + perturb * torch.randn(T + 1, dtype=torch.float64))
    return m


def _closed_form(m: DDPM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO, exact log-likelihood) per datum of the linear-Gaussian DDPM, in data space."""
    net, T = m.net, m.num_steps
    x0 = (x[:, 0] - m.shift) / m.scale
    ab, c0, ct, s2, vq = m.alphas_bar, m.coef_x0, m.coef_xt, m.sigmas**2, m.posterior_variance
    neg = 0.5 * (ab[T] * x0**2 + (1 - ab[T]) - 1 - torch.log1p(-ab[T]))
    mean, var = torch.zeros(()), torch.ones(())
    for t in range(T, 0, -1):
        alpha = (1 - (1 - ab[t]).sqrt() * net.a[t]) / ab[t].sqrt()  # x0_hat = alpha x_t + beta
        beta = -(1 - ab[t]).sqrt() * net.b[t] / ab[t].sqrt()
        sq = c0[t] ** 2 * ((alpha * ab[t].sqrt() * x0 + beta - x0) ** 2 + alpha**2 * (1 - ab[t]))
        if t > 1:
            neg = neg + 0.5 * (torch.log(s2[t] / vq[t]) + (vq[t] + sq) / s2[t] - 1)
        else:
            neg = neg + 0.5 * (torch.log(2 * math.pi * s2[1]) + sq / s2[1]) + math.log(m.scale)
        A, B = c0[t] * alpha + ct[t], c0[t] * beta
        mean, var = A * mean + B, A**2 * var + s2[t]
    exact = torch.distributions.Normal(m.shift + m.scale * mean, m.scale * var.sqrt()).log_prob(x[:, 0])
    return -neg, exact


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_svi_elbo_on_the_program_equals_the_closed_form_bound(variance):
    m = _linear_gaussian_ddpm(variance=variance)
    x = 1.0 + 2.0 * (0.5 + 0.7 * torch.randn(64, 1, dtype=torch.float64))
    with torch.no_grad():
        closed, exact = _closed_form(m, x)
    closed, exact = closed.mean().item(), exact.mean().item()
    assert closed < exact - 0.01  # a bound, and not a tight one here
    svi = inference.SVI(m)
    assert svi.guide is m.guide or svi._guide_program is not None
    estimates = torch.tensor([svi.evidence_bound(x, num_particles=48) for _ in range(8)])
    se = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - closed) < 4 * se + 1e-3, (estimates.mean().item(), closed, se)
    assert estimates.mean().item() < exact
    # the model's own bound (KLs in closed form, one x_t draw per step) agrees too
    torch.manual_seed(3)
    own = torch.stack([m.elbo(x).mean() for _ in range(20)])
    assert abs(own.mean().item() - closed) < 4 * own.std().item() / math.sqrt(20) + 1e-3


def test_svi_trains_the_program():
    """SVI on the program raises the (closed-form) ELBO of a linear-Gaussian DDPM."""
    m = _linear_gaussian_ddpm(T=4, perturb=0.5)
    x = 1.0 + 2.0 * (0.5 + 0.7 * torch.randn(256, 1, dtype=torch.float64))
    before = _closed_form(m, x)[0].mean().item()
    inference.fit(inference.SVI(m, lr=0.02), x, epochs=25, batch_size=64, seed=0, progress=False)
    with torch.no_grad():
        after, exact = _closed_form(m, x)
    assert after.mean().item() > before + 0.05
    assert after.mean().item() < exact.mean().item()


def test_engine_elbo_estimate_is_unbiased():
    m = _linear_gaussian_ddpm(T=8)
    x = 1.0 + 2.0 * (0.5 + 0.7 * torch.randn(64, 1, dtype=torch.float64))
    closed = _closed_form(m, x)[0].mean().item()
    engine = Diffusion(m, ema_decay=None)
    torch.manual_seed(0)
    with torch.no_grad():
        draws = []
        for _ in range(300):
            x0, x_t, t, out, _ = engine._terms(x)
            draws.append(-(m.prior_kl(x0) + m.num_steps * m.vlb_term(x0, x_t, t, out)).mean())
    draws = torch.stack(draws)
    assert abs(draws.mean().item() - closed) < 4 * draws.std().item() / math.sqrt(300) + 1e-3


def test_eval_method_elbo_equals_the_closed_form_bound():
    """`pgm eval`'s default for a diffusion model: its bound, which on the linear-Gaussian DDPM
    matches the closed form (within Monte Carlo error) and stays below the exact log-likelihood."""
    from inference.choice import default_eval_method
    from inference.evaluate import log_likelihood

    m = _linear_gaussian_ddpm(T=8)
    assert default_eval_method(m)[0] == "elbo" and default_eval_method(models.get("ddpm"))[0] == "elbo"
    x = 1.0 + 2.0 * (0.5 + 0.7 * torch.randn(64, 1, dtype=torch.float64))
    with torch.no_grad():
        closed, exact = (v.mean().item() for v in _closed_form(m, x))
    torch.manual_seed(4)
    draws = torch.stack([log_likelihood(m, x, method="elbo", batch_size=16).mean() for _ in range(30)])
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - closed) < 4 * se + 1e-3, (draws.mean().item(), closed, se)
    assert draws.mean().item() < exact
    with pytest.raises(ValueError, match="own bound"):
        log_likelihood(models.GaussianEBM(2), torch.zeros(3, 2), method="elbo")


def test_pgm_eval_reports_the_ddpm_bound(tmp_path, capsys):
    import json

    from inference.diffusion import Diffusion  # noqa: F401
    from pgm.cli import main

    out = tmp_path / "run"
    assert main(["train", "ddpm", "--epochs", "1", "--set", "num_steps=20", "--set", "hidden_dim=16", "--set", "num_layers=1",
                 "--out", str(out), "--quiet", "--seed", "0", "--num-samples", "16"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(out), "--limit", "50"]) == 0
    printed = capsys.readouterr().out
    assert "method: elbo" in printed and "by elbo" in printed
    result = json.loads((out / "eval.json").read_text())
    assert result["method"] == "elbo" and result["test_size"] == 50 and result["num_samples"] is None
    assert math.isclose(result["bits_per_dim"], result["nll_nats"] / (64 * math.log(2)))
    assert math.isfinite(result["bits_per_dim"])


# ---------------------------------------------------------------------------------------------
# samplers, on a DDPM with the exact denoiser of a 2D Gaussian mixture
# ---------------------------------------------------------------------------------------------
MEANS = [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]]
STDS = [0.3, 0.5, 0.4]
WEIGHTS = [0.5, 0.3, 0.2]


def _oracle_ddpm(T=200, variance="beta", num_classes=None):
    m = DDPM(x_dim=2, num_steps=T, schedule="linear", variance=variance, hidden_dim=4, num_layers=1,
             num_classes=num_classes).double()
    m.net = OracleEps(MixtureScore(MEANS, STDS, WEIGHTS), m.alphas_bar)
    return m


def _mixture_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(torch.tensor(WEIGHTS), n, replacement=True, generator=g)
    x = torch.tensor(MEANS, dtype=torch.float64)[k] + torch.tensor(STDS, dtype=torch.float64)[k, None] * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, k


def test_ddim_with_ten_percent_of_the_steps_is_close_to_ancestral():
    m = _oracle_ddpm(T=200)
    data, _ = _mixture_data(800, seed=1)
    torch.manual_seed(0)
    ancestral = m.sample(800)
    fast = m.sample(800, steps=20, eta=0.0)
    noise_floor = mmd2(_mixture_data(800, seed=2)[0], data)
    d_anc, d_fast = mmd2(ancestral, data), mmd2(fast, data)
    assert d_anc < noise_floor + 0.01
    assert d_fast < noise_floor + 0.01, (d_fast, d_anc, noise_floor)
    # and the "leading" spacing, which starts at t = 181 from N(0, I), is visibly worse at 5 steps
    few_trailing = mmd2(m.sample(800, steps=5), data)
    few_leading = mmd2(m.sample(800, steps=5, spacing="leading"), data)
    assert few_leading > few_trailing


def test_ddim_eta_one_all_steps_is_ancestral_sampling():
    # with the posterior variance, DDIM(eta=1, S=T) is ancestral sampling step for step
    m = _oracle_ddpm(T=50, variance="posterior")
    torch.manual_seed(5)
    a = m.sample(300)
    torch.manual_seed(5)
    b = m.sample(300, steps=50, eta=1.0)
    assert torch.allclose(a, b, atol=1e-5)  # the schedule is held in float32: rounding only
    # with sigma_t^2 = beta_t the chains differ, but the distributions match
    m = _oracle_ddpm(T=100, variance="beta")
    torch.manual_seed(6)
    a, b, c = m.sample(800), m.sample(800, steps=100, eta=1.0), m.sample(800)
    assert abs(mmd2(a, b) - mmd2(a, c)) < 0.01


def test_guidance_zero_is_conditional_sampling_and_larger_w_is_more_confident():
    m = _oracle_ddpm(T=100, num_classes=3)
    # w = 0 reproduces the conditional chain exactly for the same noise: the chain by hand
    torch.manual_seed(7)
    guided = m.sample(50, guidance=0.0, label=2)
    torch.manual_seed(7)
    x = torch.randn(50, 2, dtype=torch.float64)
    y = torch.full((50,), 2)
    for t in range(100, 0, -1):
        eps = m.net(x, torch.full((50,), float(t), dtype=torch.float64), y)
        x0 = (x - m.sqrt_one_minus_alphas_bar[t] * eps) / m.sqrt_alphas_bar[t]
        mean = m.coef_x0[t] * x0 + m.coef_xt[t] * x
        x = mean + m.sigmas[t] * torch.randn_like(x) if t > 1 else mean
    assert torch.equal(guided, x)
    # w > 0 sharpens toward the class: the exact classifier's confidence rises with w
    classifier = m.net.mixture
    confidence = []
    for w in (0.0, 1.0, 4.0):
        torch.manual_seed(8)
        s = m.sample(400, guidance=w, label=2)
        confidence.append(classifier.classify(s)[:, 2].mean().item())
    assert confidence[0] > 0.9 and confidence[1] > confidence[0] and confidence[2] > confidence[1], confidence
    with pytest.raises(ValueError, match="label"):
        m.sample(4, guidance=1.0)


@pytest.mark.slow
def test_guidance_raises_the_project_classifiers_confidence_on_digits():
    """A small conditional DDPM trained briefly on the digits (label dropout 0.2): the project
    classifier's (`inference.metrics`) mean probability of the requested digit rises from w = 0
    (plain conditional sampling) to w = 2. Measured: about 0.84 at w = 0, 1.00 at w = 2."""
    import pgm.data
    from inference.metrics import features

    digits = pgm.data.load("digits", seed=0)
    torch.manual_seed(0)
    m = DDPM(x_dim=64, num_steps=100, schedule="cosine", prediction="v", hidden_dim=128, num_layers=2, num_classes=10,
             shift=0.5, scale=0.5, clip=(0.0, 1.0))
    engine = Diffusion(m, lr=2e-3, ema_decay=0.99, label_dropout=0.2)
    inference.fit(engine, (digits.train, digits.train_labels), epochs=20, batch_size=128, seed=0, progress=False)
    labels = torch.arange(10).repeat_interleave(20)
    confidence = {}
    with engine.averaged():
        for w in (0.0, 2.0):
            torch.manual_seed(1)
            x = m.sample(len(labels), steps=50, guidance=w, label=labels, progress=False)
            confidence[w] = features(x)[1][torch.arange(len(labels)), labels].mean().item()
    assert confidence[0.0] > 0.5, confidence  # conditional sampling alone already mostly right
    assert confidence[2.0] > confidence[0.0] + 0.05, confidence


# ---------------------------------------------------------------------------------------------
# the engine: training, EMA, exact resume
# ---------------------------------------------------------------------------------------------
def test_diffusion_engine_learns_and_resumes_exactly_with_ema(tmp_path):
    data, labels = _mixture_data(512, seed=3)
    data = data.float()

    def build():
        torch.manual_seed(0)
        m = DDPM(x_dim=2, num_steps=50, schedule="cosine", hidden_dim=32, num_layers=2, num_classes=3)
        return m, Diffusion(m, lr=2e-3, ema_decay=0.9)

    m1, e1 = build()
    h1 = inference.fit(e1, (data, labels), epochs=4, batch_size=128, seed=1, progress=False)
    m2, e2 = build()
    inference.fit(e2, (data, labels), epochs=2, batch_size=128, seed=1, progress=False, checkpoint_dir=tmp_path)
    m3, e3 = build()
    h3 = inference.fit(e3, (data, labels), epochs=4, batch_size=128, seed=1, progress=False, checkpoint_dir=tmp_path, resume=True)
    for (n, p), (_, q) in zip(m1.named_parameters(), m3.named_parameters()):
        assert torch.equal(p, q), n
    assert set(e1.ema) == set(e3.ema) and all(torch.equal(e1.ema[k], e3.ema[k]) for k in e1.ema)
    assert e1.ema_updates == e3.ema_updates == 16
    assert h1.last()["loss"] == h3.last()["loss"]
    # the average differs from the raw weights, and averaged() swaps it in and back
    name = next(iter(e1.ema))
    raw = dict(m1.named_parameters())[name].detach().clone()
    assert not torch.equal(raw, e1.ema[name])
    with e1.averaged():
        assert torch.equal(dict(m1.named_parameters())[name], e1.ema[name])
    assert torch.equal(dict(m1.named_parameters())[name], raw)
    from inference.checkpoint import load_checkpoint

    state = ema_model_state(load_checkpoint(tmp_path / "checkpoint.pt", weights_only=False))
    assert torch.equal(state[name], e3.ema[name]) and set(state) == set(m3.state_dict())
    # it learnt: the loss fell
    assert sum(h1["loss"][-4:]) < sum(h1["loss"][:4])


def test_engine_and_model_errors():
    m = DDPM(x_dim=2, num_steps=5, hidden_dim=4, num_layers=1)
    for kwargs, word in (({"ema_decay": 1.0}, "ema_decay"), ({"label_dropout": 2}, "label_dropout"), ({"grad_clip": 0}, "grad_clip")):
        with pytest.raises(ValueError, match=word):
            Diffusion(m, **kwargs)
    with pytest.raises(inference.EngineError, match="diffusion model"):
        Diffusion(models.GaussianEBM(2))
    with pytest.raises(ValueError, match="prediction"):
        DDPM(x_dim=2, prediction="score")
    with pytest.raises(ValueError, match="variance"):
        DDPM(x_dim=2, variance="learned")
    with pytest.raises(ValueError, match="num_steps"):
        DDPM(x_dim=2, num_steps=0)
    with pytest.raises(ValueError, match="eta"):
        m.sample(3, eta=0.5)
    with pytest.raises(ValueError, match="unconditional"):
        m.sample(3, label=1)
    c = DDPM(x_dim=2, num_steps=5, hidden_dim=4, num_layers=1, num_classes=3)
    with pytest.raises(ValueError, match="labels in 0..2"):
        c.sample(3, label=7)
    with pytest.raises(ValueError, match="shape"):
        Diffusion(c).validate((torch.zeros(4, 3), torch.zeros(4)))
    with pytest.raises(ValueError, match="conditional"):
        Diffusion(c).validate(torch.zeros(4, 2))


def test_program_structure_and_svi_applies():
    m = DDPM(x_dim=2, num_steps=4, hidden_dim=4, num_layers=1)
    s = m.structure()
    assert s.latent == ("x_4", "x_3", "x_2", "x_1") and s.observed == ("x",)
    assert {"latents", "normalized", "continuous", "sample", "guide"} <= m.capabilities()
    assert inference.engines_for(m)["SVI"] is None and inference.engines_for(m)["Diffusion"] is None
    assert models.get("ddpm").num_steps == 10  # a small chain for drawings (drawn collapsed)


def test_presets_build_their_engines():
    for name, classes in (("ddpm", None), ("ddpm_conditional", 10)):
        preset = models.preset(name)
        assert preset.engine == "diffusion" and preset.data == "digits"
        m = models.get(name, **{**preset.settings, "x_dim": 64, "num_steps": 10})
        assert m.num_classes == classes and m.prediction == "v"
        _, engine = inference.choice.build_engine(preset.engine, m, preset.engine_settings)
        assert isinstance(engine, Diffusion) and engine.ema_decay == 0.995
        batch = (torch.rand(8, 64),) if classes is None else (torch.rand(8, 64), torch.randint(10, (8,)))
        assert math.isfinite(engine.step(batch)["loss"])
    assert inference.choice.default_engine(models.get("ddpm")) == "svi"  # the true ELBO, when no engine is named


# ---------------------------------------------------------------------------------------------
# the graph: the chain drawn collapsed, x_T -> ... -> x_t -> ... -> x, or in full
# ---------------------------------------------------------------------------------------------
def test_collapsed_chain_graph_exactly():
    import pgm

    m = DDPM(x_dim=3, num_steps=12, hidden_dim=4, num_layers=1)
    full = pgm.graph_of(m, data_size=100)
    assert len(full.nodes) == 13 and len(full.directed_edges) == 12
    g = full.collapse_chain(m.chain_sites())
    spec = g.to_dict()
    assert list(g.nodes) == ["x_12", "x_12..x_t", "x_t", "x_t..x", "x"]
    assert spec["directed_edges"] == sorted([["x_12", "x_12..x_t"], ["x_12..x_t", "x_t"], ["x_t", "x_t..x"], ["x_t..x", "x"]])
    assert spec["plates"] == {"data": {"size": 100, "dim": -1}}
    for n in g.nodes:
        assert spec["nodes"][n]["plates"] == ["data"] and spec["nodes"][n]["event_shape"] == [3]
    assert spec["nodes"]["x"]["kind"] == "observed" and spec["nodes"]["x_t"] == spec["nodes"]["x_12"]  # latent Normal
    for dots in ("x_12..x_t", "x_t..x"):
        assert g.nodes[dots]["ellipsis"] and g.nodes[dots]["label"] == "\u22ef" and g.nodes[dots]["collapsed"] == 11
    # still a Markov chain: queries work on the collapsed graph
    assert g.is_d_separated("x_12", "x", given="x_t") and not g.is_d_separated("x_12", "x")
    assert full.is_d_separated("x_12", "x", given="x_6")
    # a short chain is left as it is; a non-chain is refused
    short = DDPM(x_dim=2, num_steps=4, hidden_dim=4, num_layers=1)
    g4 = pgm.graph_of(short)
    assert g4.collapse_chain(short.chain_sites()) is g4
    with pytest.raises(ValueError, match="no edge x_12 -> x_10"):
        full.collapse_chain(["x_12", "x_10", "x_9", "x_8", "x_7", "x_6"])
    with pytest.raises(ValueError, match="already nodes"):
        full.collapse_chain(m.chain_sites(), middle="x")


def test_collapsed_drawing_and_the_command_line(tmp_path, capsys):
    import matplotlib

    matplotlib.use("Agg")
    import pgm
    from pgm.cli import main

    m = DDPM(x_dim=2, num_steps=12, hidden_dim=4, num_layers=1)
    g = pgm.graph_of(m).collapse_chain(m.chain_sites())
    ax = g.draw()
    labels = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert labels["label:x_12..x_t"] == "\u22ef" and labels["label:x_t"] == "x_t" and labels["label:x"] == "x"
    patches = {p.get_gid(): p for p in ax.patches}
    assert patches["node:x_t..x"].get_edgecolor()[3] == 0 and patches["node:x_t"].get_edgecolor()[3] == 1  # dots: no circle
    assert 'label="\u22ef", shape=plaintext' in g.to_dot()
    # `pgm draw ddpm` collapses by default; --full-chain draws every step
    assert main(["draw", "ddpm", "-o", str(tmp_path / "c.png")]) == 0
    assert "5 nodes, 4 directed" in capsys.readouterr().out
    assert main(["draw", "ddpm", "-o", str(tmp_path / "f.png"), "--full-chain"]) == 0
    assert "11 nodes, 10 directed" in capsys.readouterr().out


# ---------------------------------------------------------------- discrete data: the discretized decoder
def test_the_discretized_last_step_sums_to_one_over_the_grid():
    torch.manual_seed(0)
    m = models.DDPM(x_dim=2, num_steps=4, hidden_dim=8, num_layers=1, shift=0.5, scale=0.5, levels=5).double()
    grid = torch.linspace(0, 1, 5, dtype=torch.float64)
    x = torch.cartesian_prod(grid, grid)  # all 25 states of two 5-level units
    x_1 = torch.randn(1, 2, dtype=torch.float64).expand(25, 2)  # one x_1, the network's output fixed
    t = torch.ones(25, dtype=torch.long)
    with torch.no_grad():
        terms = m.vlb_term(m.from_data(x), x_1, t, m._net(x_1, t))
    assert float(torch.exp(-terms).sum()) == pytest.approx(1.0, abs=1e-9)
    # a cell far in a tail keeps a finite log-probability (no log(0))
    far = m.discrete_nll(m.from_data(torch.tensor([[0.5, 0.25]], dtype=torch.float64)),
                         torch.tensor([[40.0, -40.0]], dtype=torch.float64))
    assert torch.isfinite(far).all() and float(far) > 100


def test_with_levels_the_bound_is_a_log_probability_of_the_discrete_data():
    torch.manual_seed(0)
    kwargs = dict(x_dim=3, num_steps=20, hidden_dim=16, num_layers=1, shift=0.5, scale=0.5)
    discrete, continuous = models.DDPM(**kwargs, levels=17), models.DDPM(**kwargs)
    continuous.load_state_dict(discrete.state_dict())
    x = torch.randint(0, 17, (64, 3)).float() / 16
    torch.manual_seed(1)
    bound = discrete.elbo(x)
    assert bool((bound <= 0).all()) and discrete.bits_per_dim(x) > 0
    torch.manual_seed(1)  # the same draws: only the t = 1 term differs
    other = continuous.elbo(x)
    assert not torch.allclose(bound, other)
    with pytest.raises(ValueError, match="17-level grid"):
        discrete.elbo(torch.full((2, 3), 0.3))
    with pytest.raises(ValueError, match="levels"):
        models.DDPM(x_dim=3, levels=1)
