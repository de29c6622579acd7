"""Posterior: layout checks, moments, ArviZ export dims, summary diagnostics."""

import math

import numpy as np
import pytest
import torch

from inference.posterior import Posterior


def test_layout_and_moments():
    g = torch.Generator().manual_seed(0)
    post = Posterior({"w": torch.randn(3, 500, 2, generator=g) * 2 + 1, "b": torch.randn(3, 500, generator=g)})
    assert (post.num_chains, post.num_draws) == (3, 500)
    assert post.flat("w").shape == (1500, 2)
    assert torch.allclose(post.mean("w"), post.flat("w").mean(0))
    assert torch.allclose(post.std("w"), torch.tensor([2.0, 2.0]), atol=0.15)
    assert torch.allclose(post.quantile("b", 0.5), post.flat("b").median(), atol=0.02)
    one = Posterior.from_draws({"mu": torch.zeros(7, 4)})
    assert one["mu"].shape == (1, 7, 4)
    assert "mu" in one and list(one) == ["mu"] and len(one) == 1


def test_bad_input():
    with pytest.raises(ValueError, match="chains, draws"):
        Posterior({"mu": torch.zeros(5)})
    with pytest.raises(ValueError, match="differs"):
        Posterior({"a": torch.zeros(2, 5), "b": torch.zeros(2, 6)})
    with pytest.raises(TypeError, match="samples"):
        Posterior([torch.zeros(2, 5)])
    with pytest.raises(KeyError, match="sites: a"):
        Posterior({"a": torch.zeros(2, 5)})["b"]
    with pytest.raises(ValueError, match="prob"):
        Posterior({"a": torch.zeros(2, 5)}).summary(prob=1.5)


def test_to_arviz_dims():
    post = Posterior({"w": torch.randn(2, 30, 3), "b": torch.randn(2, 30)})
    data = post.to_arviz()
    w = data.posterior["w"]
    assert w.dims[:2] == ("chain", "draw") and w.shape == (2, 30, 3)
    assert data.posterior["b"].shape == (2, 30)
    np.testing.assert_allclose(w.values, post.samples["w"].numpy())


def test_summary_r_hat_and_ess_against_arviz_and_known_cases():
    import arviz as az

    g = torch.Generator().manual_seed(0)
    mixed = torch.randn(4, 400, generator=g)
    stuck = torch.stack([torch.randn(400, generator=g) + 3 * c for c in range(4)])
    summary = Posterior({"good": mixed, "bad": stuck, "v": torch.randn(4, 400, 2, generator=g)}).summary()
    assert set(summary) == {"good", "bad", "v[0]", "v[1]"}
    assert {"mean", "sd", "5%", "95%", "r_hat", "ess_bulk"} <= set(summary["good"])
    assert summary["good"]["r_hat"] < 1.01 and summary["bad"]["r_hat"] > 1.5
    assert summary["good"]["r_hat"] == pytest.approx(float(az.rhat(mixed.numpy())), rel=1e-9)
    assert summary["good"]["ess_bulk"] == pytest.approx(float(az.ess(mixed.numpy(), method="bulk")), rel=1e-9)
    assert summary["good"]["ess_bulk"] > 1000  # independent draws: about 1600
    assert summary["good"]["5%"] == pytest.approx(float(np.quantile(mixed.numpy(), 0.05)))
    assert "r_hat" in str(summary)
    constant = Posterior({"c": torch.ones(2, 10)}).summary()
    assert math.isnan(constant["c"]["r_hat"])
