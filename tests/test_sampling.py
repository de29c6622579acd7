"""inference.sampling.draw: the posterior predictive for models with global latents, ancestral
sampling for directed programs, independent Markov chains started apart for undirected ones."""

import torch

import models
from inference.sampling import draw, global_latents


def test_global_latents_are_the_sites_that_do_not_grow_with_the_data():
    assert global_latents(models.get("gaussian_mixture")) == ["weights", "locs"]
    assert global_latents(models.get("vae")) == []


def test_models_with_global_latents_draw_from_the_fitted_posterior_not_the_prior():
    model = models.NormalNormal(prior_loc=0.0, prior_scale=10.0, noise_scale=0.1)
    with torch.no_grad():  # a guide fitted to data around 5: q(mu) = N(5, 0.01^2)
        model.guide_loc.fill_(5.0)
        model.guide_log_scale.fill_(torch.log(torch.tensor(0.01)))
    torch.manual_seed(0)
    x = draw(model, 500)
    assert x.shape == (500,)
    assert abs(float(x.mean()) - 5.0) < 0.05 and abs(float(x.std()) - 0.1) < 0.02


def test_a_mixture_draws_around_its_fitted_components():
    model = models.GaussianMixture(num_components=2, dim=2, scale=0.1)
    with torch.no_grad():
        model.guide_locs.copy_(torch.tensor([[3.0, 3.0], [-3.0, -3.0]]))
        model.guide_locs_raw_scale.fill_(-10.0)
        model.guide_initialized.fill_(True)
    torch.manual_seed(0)
    x = draw(model, 400)
    nearest = torch.cdist(x, torch.tensor([[3.0, 3.0], [-3.0, -3.0]])).min(-1).values
    assert x.shape == (400, 2) and float(nearest.max()) < 0.6


def test_markov_chains_start_apart_from_distinct_data_points():
    torch.manual_seed(0)
    rbm = models.RBM(v_dim=6, h_dim=3)
    data = torch.eye(6)
    x = draw(rbm, 6, start=data, steps=1)
    assert x.shape == (6, 6) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_without_a_posterior_or_guide_the_draws_are_the_prior_predictive_one_per_draw():
    # eight schools has no guide: untrained, each draw is a whole data set (8 schools) drawn
    # with its own mu, tau, theta from the prior; Var(y_j) = 25 + Var(theta_j - mu) + sigma_j^2
    # is at least 25 + sigma_j^2.
    model = models.get("eight_schools")
    torch.manual_seed(0)
    x = draw(model, 2000)
    assert x.shape == (2000, 8)
    sigma = model.sigma
    assert bool((x.var(0) > 0.8 * (25 + sigma ** 2)).all())


def test_each_draw_takes_its_own_draw_of_the_guide():
    # q(mu) = N(5, 1), noise 0.1: the draws' spread is the guide's, not the noise's alone
    model = models.NormalNormal(prior_loc=0.0, prior_scale=10.0, noise_scale=0.1)
    with torch.no_grad():
        model.guide_loc.fill_(5.0)
        model.guide_log_scale.fill_(0.0)
    torch.manual_seed(0)
    x = draw(model, 2000)
    assert abs(float(x.std()) - (1 + 0.1 ** 2) ** 0.5) < 0.06


def test_an_engine_whose_posterior_needs_the_data_is_given_the_start_data():
    # an SVI engine reloaded from a run has not stepped: its posterior needs the program's data
    model = models.NormalNormal(prior_loc=0.0, prior_scale=10.0, noise_scale=0.1)
    (name,) = global_latents(model)

    class Posterior:
        def __init__(self, values):
            self.values = values

        def __contains__(self, site):
            return site == name

        def flat(self, site):
            return self.values

    class Reloaded:
        def posterior(self, n, *args):
            if not args:
                raise ValueError("posterior: pass the program's arguments (the data)")
            return Posterior(torch.full((n,), float(args[0].mean())))

    torch.manual_seed(0)
    x = draw(model, 400, engine=Reloaded(), start=torch.full((50,), 7.0))
    assert abs(float(x.mean()) - 7.0) < 0.05 and abs(float(x.std()) - 0.1) < 0.02
