"""inference.Gibbs: the block schedule from a colouring of the Markov network, derived
conditionals, exact sampling, refusals."""

import itertools

import networkx as nx
import pytest
import torch

import pgm
from inference.engine import EngineError
from inference.gibbs import Gibbs
from models.boltzmann import BoltzmannMachine
from models.rbm import RBM, GaussianRBM


def test_rbm_schedule_is_two_blocks_hidden_then_visible():
    gibbs = Gibbs(RBM(v_dim=4, h_dim=3))
    assert gibbs.blocks == [["h[0]", "h[1]", "h[2]"], ["v[0]", "v[1]", "v[2]", "v[3]"]]
    assert gibbs.level == "site"  # closed forms for every site: whole-site blocks
    derived = Gibbs(RBM(v_dim=4, h_dim=3), closed_form=False)
    assert derived.level == "unit" and derived.blocks == gibbs.blocks


@pytest.mark.parametrize("kwargs", [dict(), dict(hidden_lateral=False), dict(visible_lateral=False)])
def test_lateral_connections_give_more_blocks_each_an_independent_set(kwargs):
    bm = BoltzmannMachine(v_dim=4, h_dim=3, **kwargs)
    gibbs = Gibbs(bm)
    assert len(gibbs.blocks) > 2
    network = pgm.graph_of(bm, level="unit").to_networkx()
    units = [u for b in gibbs.blocks for u in b]
    assert sorted(units) == sorted(network.nodes) and len(units) == len(set(units))  # a partition
    for block in gibbs.blocks:
        assert not any(network.has_edge(a, b) for a, b in itertools.combinations(block, 2)), block
    # a proper colouring needs at least as many colours as the largest clique has units
    assert len(gibbs.blocks) >= max(len(c) for c in nx.find_cliques(network))


def test_large_rbm_gets_its_blocks_from_the_site_graph():
    gibbs = Gibbs(RBM(v_dim=784, h_dim=500), closed_form=False)
    assert gibbs.level == "site"
    assert [len(b) for b in gibbs.blocks] == [500, 784]
    assert gibbs.blocks[0][:2] == ["h[0]", "h[1]"] and gibbs.blocks[1][-1] == "v[783]"


def test_large_model_with_interacting_units_in_a_site_is_refused():
    with pytest.raises(ValueError, match="unit_limit"):
        Gibbs(BoltzmannMachine(v_dim=20, h_dim=3), unit_limit=10)
    assert len(Gibbs(BoltzmannMachine(v_dim=20, h_dim=3, visible_lateral=False, hidden_lateral=False), unit_limit=10).blocks) == 2


def test_derived_logits_are_exact_conditional_log_odds_for_lateral_connections():
    torch.manual_seed(0)
    bm = BoltzmannMachine(4, 3, init_scale=1.0).double()
    gibbs = Gibbs(bm)
    chains = gibbs.init_random(6)
    logits = gibbs.logits(chains)
    v, h = chains["v"], chains["h"]
    for i in range(4):
        on, off = v.clone(), v.clone()
        on[:, i], off[:, i] = 1, 0
        assert torch.allclose(logits["v"][:, i], bm.joint_energy(off, h) - bm.joint_energy(on, h), atol=1e-10)
    for j in range(3):
        on, off = h.clone(), h.clone()
        on[:, j], off[:, j] = 1, 0
        assert torch.allclose(logits["h"][:, j], bm.joint_energy(v, off) - bm.joint_energy(v, on), atol=1e-10)


def test_gibbs_samples_of_a_boltzmann_machine_match_the_exact_joint():
    """4 visible + 2 hidden units with lateral connections: total variation between the joint
    (v, h) frequencies of 8000 chains after 40 sweeps and the exact 64-state distribution below
    0.05 (i.i.d. exact draws give about 0.02; one sweep from noise gives 0.17)."""
    torch.manual_seed(0)
    bm = BoltzmannMachine(4, 2, init_scale=1.0).double()
    with torch.no_grad():
        bm.b.normal_(0, 0.5)
        bm.c.normal_(0, 0.5)
    gibbs = Gibbs(bm)
    assert len(gibbs.blocks) > 2
    chains = gibbs.run(gibbs.init_random(8000), 40)
    states = torch.cat([chains["v"], chains["h"]], 1)
    weights = 2 ** torch.arange(5, -1, -1, dtype=states.dtype)
    freq = torch.bincount((states * weights).sum(-1).long(), minlength=64).double() / 8000
    codes = torch.arange(64)
    bits = ((codes[:, None] >> torch.arange(5, -1, -1)) & 1).double()
    exact = torch.softmax(-bm.joint_energy(bits[:, :4], bits[:, 4:]), 0).detach()
    assert 0.5 * (freq - exact).abs().sum() < 0.05
    # and the visible marginal against the model's (enumerated) energy
    v_exact = torch.softmax(-bm.energy(bits[::4, :4]), 0).detach()
    v_freq = freq.reshape(16, 4).sum(1)
    assert 0.5 * (v_freq - v_exact).abs().sum() < 0.04


def test_clamped_sweeps_sample_the_hidden_posterior():
    torch.manual_seed(0)
    rbm = RBM(5, 3, init_scale=1.0).double()
    gibbs = Gibbs(rbm)
    x = torch.bernoulli(torch.full((1, 5), 0.5, dtype=torch.float64)).expand(20000, -1)
    chains = gibbs.sample_hidden(x)
    assert torch.equal(chains["v"], x)
    assert torch.allclose(chains["h"].mean(0), rbm.p_h_given_v(x[:1])[0].detach(), atol=0.02)


def test_a_continuous_model_is_refused_naming_engines_that_work():
    from models.ebm import GaussianEBM

    with pytest.raises(EngineError) as info:
        Gibbs(GaussianEBM(2))
    message = str(info.value)
    assert "['x']" in message and "Langevin" in message
    assert "Engines that would work" in message and "ContrastiveDivergence" in message


def test_gaussian_rbm_is_sampled_with_its_closed_form_visible_conditional():
    gibbs = Gibbs(GaussianRBM(3, 2))
    x = gibbs.sample(10, num_steps=3)
    assert x.shape == (10, 3) and not torch.all((x == 0) | (x == 1))


def test_bad_input():
    gibbs = Gibbs(RBM(3, 2))
    with pytest.raises(ValueError, match="data: expected shape"):
        gibbs.init(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="chains: expected a dict"):
        gibbs.step({"v": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="n: expected"):
        gibbs.init_random(0)
    with pytest.raises(TypeError, match="pgm.Model"):
        Gibbs(lambda x: None)
    with pytest.raises(ValueError, match="unit_limit"):
        Gibbs(RBM(3, 2), unit_limit=0)
