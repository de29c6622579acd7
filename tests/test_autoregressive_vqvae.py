"""The VQ-VAE's autoregressive code prior: fitted to the codes of data, used by sampling."""

from __future__ import annotations

import math

import pytest
import torch

import models
from models.autoregressive import Autoregressive


def _codes_data():
    """Binary data from two prototypes with a little noise: their code grids are far from uniform."""
    g = torch.Generator().manual_seed(0)
    protos = torch.bernoulli(torch.full((2, 16), 0.5), generator=g)
    which = torch.randint(2, (400,), generator=g)
    flip = torch.rand(400, 16, generator=g) < 0.05
    return (protos[which] + flip).remainder(2)


def test_prior_learns_code_grids_far_above_uniform_and_sampling_uses_it():
    torch.manual_seed(0)
    vq = models.VQVAE(x_dim=16, num_codes=8, code_dim=2, num_latents=3, hidden_dims=(16,), prior="pixelcnn",
                      prior_settings=dict(hidden=16, num_layers=1))
    x = _codes_data()
    uniform = -3 * math.log(8)
    vq.fit_prior(x, epochs=15, batch_size=100, lr=1e-2, progress=False)
    codes = vq.codes(x)
    prior_ll = float(vq.code_log_prob(codes).mean())
    # the codes of 2 prototypes carry about log 2 nats; the uniform prior spends 3 log 8
    assert prior_ll > uniform + 3.0
    assert isinstance(vq.prior_dist(5), Autoregressive)
    # sampled code grids follow the prior: they are data codes far more often than uniform ones
    torch.manual_seed(1)
    trace_codes = vq.prior_dist(500).sample()
    seen = {tuple(c.tolist()) for c in codes.long()}
    frac = sum(tuple(c.long().tolist()) in seen for c in trace_codes) / 500
    assert frac > 0.8 > len(seen) / 8 ** 3
    assert vq.sample(4).shape == (4, 16)
    # `VQVAE.sample` draws its code grids from the prior: the measure of the issue, on the codes
    # behind the sampled images, against the same VQ-VAE with the uniform prior
    def sampled_codes(model):
        seen_by_decoder, lookup = [], model.quantizer.lookup
        model.quantizer.lookup = lambda c: (seen_by_decoder.append(c), lookup(c))[1]
        try:
            images = model.sample(500)
        finally:
            del model.quantizer.lookup
        assert images.shape == (500, 16)
        return seen_by_decoder[-1].long()                      # the grids decoded into the images

    def data_fraction(grid):
        return sum(tuple(c.tolist()) in seen for c in grid) / len(grid)

    with_prior = sampled_codes(vq)
    prior, vq.prior = vq.prior, None
    uniform = sampled_codes(vq)
    vq.prior = prior
    assert data_fraction(with_prior) > 0.8 and data_fraction(uniform) < 0.2
    assert float(vq.code_log_prob(with_prior.double()).mean()) > uniform_ll_gap(vq, uniform)


def uniform_ll_gap(vq, uniform_codes):
    """The prior's mean log-likelihood of uniformly drawn code grids plus 3 nats: the grids the
    prior draws must score far above those."""
    return float(vq.code_log_prob(uniform_codes.double()).mean()) + 3.0


def test_prior_checks():
    with pytest.raises(ValueError, match="prior"):
        models.VQVAE(x_dim=16, num_codes=8, code_dim=2, num_latents=3, hidden_dims=(16,), prior="made")
    with pytest.raises(ValueError, match="code grid"):
        models.VQVAE(x_dim=16, num_codes=8, code_dim=2, num_latents=3, hidden_dims=(16,),
                     prior=models.PixelCNN(x_shape=(4,), levels=8, hidden=4, num_layers=1, first_kernel=3))
    vq = models.VQVAE(x_dim=16, num_codes=8, code_dim=2, num_latents=3, hidden_dims=(16,))
    assert torch.allclose(vq.code_log_prob(torch.zeros(2, 3)), torch.full((2,), -3 * math.log(8)))
