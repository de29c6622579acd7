"""NCSN: a noise-conditional score network, multi-level denoising score matching and annealed
Langevin dynamics; the mixture experiment of Song & Ermon (2019), section 3.2.3."""

from __future__ import annotations

import pytest
import torch

import inference
import models
from diffusion_helpers import MixtureScore, mmd2
from inference.score_matching import ScoreMatching
from models.ncsn import NCSN, geometric_sigmas

# p(x) = 0.2 N((-5, -5), I) + 0.8 N((5, 5), I)
MEANS, STDS, WEIGHTS = [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0], [0.2, 0.8]


class ExactNCSN(NCSN):
    """An NCSN whose score is the exact score of the mixture convolved with N(0, sigma^2 I)."""

    def __init__(self, **kwargs):
        super().__init__(x_dim=2, hidden_dim=4, num_layers=1, **kwargs)
        self.mixture = MixtureScore(MEANS, STDS, WEIGHTS)

    def score(self, x, sigma=None):
        sigma = torch.as_tensor(self.sigmas[-1] if sigma is None else sigma, dtype=x.dtype).expand(x.shape[0])
        return self.mixture.score(x, torch.ones_like(sigma), sigma).to(x.dtype)


def _mixture(n, seed):
    g = torch.Generator().manual_seed(seed)
    k = (torch.rand(n, generator=g) < 0.8).long()
    return torch.tensor(MEANS)[k] + torch.randn(n, 2, generator=g), k


def _share(x):
    """The fraction of samples in the 0.8 component's half plane."""
    return float((x.sum(-1) > 0).float().mean())


def _uniform_init(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 16 * torch.rand(n, 2, generator=g) - 8  # uniform on [-8, 8]^2, as in the paper


def test_mixture_weights_annealed_right_plain_langevin_wrong():
    torch.manual_seed(0)
    ncsn = ExactNCSN(sigmas=geometric_sigmas(20.0, 1.0, 10), steps_per_level=40, step_size=0.1, final_denoise=False)
    init = _uniform_init(1000)
    annealed = ncsn.sample(1000, init=init)
    plain = ncsn.sampler(annealed=False, step_size=0.1).sample(data=init)  # 400 steps at sigma = 1
    assert abs(_share(annealed) - 0.8) < 0.05, _share(annealed)
    assert abs(_share(plain) - 0.8) > 0.15, _share(plain)  # stays where it started: about one half
    # the annealed samples are the (slightly noised) mixture in distribution
    data, _ = _mixture(1000, seed=1)
    data = data + torch.randn_like(data)  # the last level's sigma = 1 blur
    assert mmd2(annealed, data) < 0.01


@pytest.mark.slow
def test_score_matching_takes_the_models_levels_and_trains_an_ncsn():
    """The experiment with a trained NCSN (about two minutes on one core)."""
    ncsn = NCSN(x_dim=2, sigmas=geometric_sigmas(20.0, 1.0, 10), hidden_dim=64, num_layers=2,
                steps_per_level=100, step_size=0.1, final_denoise=False)
    engine = ScoreMatching(ncsn, method="denoising", lr=3e-3)
    assert engine.sigmas == ncsn.sigmas
    data, _ = _mixture(4096, seed=2)
    inference.fit(engine, data, epochs=8, batch_size=128, seed=0, progress=False)
    torch.manual_seed(1)
    x = ncsn.sample(1000, init=_uniform_init(1000, seed=3))
    assert abs(_share(x) - 0.8) < 0.05, _share(x)
    plain = ncsn.sampler(annealed=False, step_size=0.1).sample(data=_uniform_init(1000, seed=3))
    assert abs(_share(plain) - 0.8) > 0.15, _share(plain)


@pytest.mark.slow
def test_trained_ncsn_gets_the_weights_right_quickly():
    """A short run of the experiment: 200 DSM steps, 400 chains, 30 steps per level (about 10 s
    on an idle core)."""
    ncsn = NCSN(x_dim=2, sigmas=geometric_sigmas(20.0, 1.0, 10), hidden_dim=64, num_layers=2,
                steps_per_level=30, step_size=0.1, final_denoise=False)
    data, _ = _mixture(2048, seed=2)
    inference.fit(ScoreMatching(ncsn, method="denoising", lr=3e-3), data, epochs=25, batch_size=256, seed=0, progress=False)
    torch.manual_seed(1)
    x = ncsn.sample(400, init=_uniform_init(400, seed=3))
    assert abs(_share(x) - 0.8) < 0.07, _share(x)


def test_registered_and_engines():
    ncsn = models.get("ncsn")
    assert isinstance(ncsn, NCSN) and ncsn.structure().observed == ("x",) and not ncsn.structure().latent
    names = inference.choice.engine_names_for(ncsn)
    assert names["mdsm"] is None and names["pcd"] is not None  # no energy: no contrastive divergence
    assert models.preset("ncsn").engine == "mdsm" and models.preset("ncsn").data == "moons"
    _, engine = inference.choice.build_engine("mdsm", ncsn)
    assert engine.method == "denoising" and engine.sigmas == ncsn.sigmas
    # an engine given its own levels keeps them
    assert ScoreMatching(ncsn, method="denoising", sigma=0.5).sigma == 0.5


def test_langevin_progress_changes_nothing():
    ncsn = ExactNCSN(sigmas=[4.0, 2.0, 1.0], steps_per_level=5, step_size=0.1)
    torch.manual_seed(3)
    a = ncsn.sample(10, progress=False)
    torch.manual_seed(3)
    b = ncsn.sample(10, progress=True)
    assert torch.equal(a, b)


def test_ncsn_errors():
    with pytest.raises(ValueError, match="decreasing"):
        NCSN(sigmas=[0.1, 1.0])
    with pytest.raises(ValueError, match="num_levels"):
        NCSN(num_levels=1)
    with pytest.raises(ValueError, match="network"):
        NCSN(network="transformer")
    with pytest.raises(ValueError, match="steps_per_level"):
        NCSN(steps_per_level=0)
    with pytest.raises(ValueError, match="init"):
        NCSN(hidden_dim=4, num_layers=1).sample(3, init=torch.zeros(2, 2))
    with pytest.raises(NotImplementedError, match="score network"):
        NCSN(hidden_dim=4, num_layers=1).energy(torch.zeros(2, 2))


def test_ncsn_program_is_drawn_as_one_observed_node():
    """A score model has no density and no latents: its program is x under the flat measure, so
    its graph is the single observed node x in the data plate; the network is not a node."""
    import pgm

    g = pgm.graph_of(NCSN(x_dim=2, hidden_dim=4, num_layers=1, num_levels=3), data_size=50)
    spec = g.to_dict()
    assert spec["nodes"] == {"x": {"kind": "observed", "dist": "ImproperUniform", "event_shape": [2], "plates": ["data"]}}
    assert spec["directed_edges"] == [] and spec["undirected_edges"] == [] and spec["factors"] == {}
    assert spec["plates"] == {"data": {"size": 50, "dim": -1}}
    assert g.kind == "directed" and not g.latent
