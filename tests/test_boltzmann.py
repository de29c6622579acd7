"""Boltzmann machines with lateral connections and deep belief nets: programs, energies and
samples against exact enumeration."""

import math

import pytest
import torch

import models
import pgm
from inference.partition import log_partition
from models.boltzmann import BoltzmannMachine
from models.dbn import DBN


def bits(n):
    codes = torch.arange(2**n)
    return ((codes[:, None] >> torch.arange(n - 1, -1, -1)) & 1).double()


def test_lateral_weights_are_symmetric_with_zero_diagonal():
    bm = BoltzmannMachine(5, 3, init_scale=1.0)
    for m in (bm.L, bm.J):
        assert torch.equal(m, m.T) and torch.all(torch.diagonal(m) == 0)
    assert torch.all(BoltzmannMachine(5, 3, visible_lateral=False).L == 0)


def test_unit_graph_has_the_lateral_edges():
    g = pgm.graph_of(BoltzmannMachine(3, 2), level="unit")
    assert ("v[0]", "v[1]") in g.undirected_edges and ("h[0]", "h[1]") in g.undirected_edges
    assert len(g.undirected_edges) == 3 * 2 + 3 + 1
    plain = pgm.graph_of(BoltzmannMachine(3, 2, visible_lateral=False, hidden_lateral=False), level="unit")
    assert len(plain.undirected_edges) == 6


def test_derived_energy_is_the_free_energy_of_the_joint():
    """The program's energy (hidden units enumerated) = -log sum_h exp(-E(v, h)) + (V + H) log 2."""
    torch.manual_seed(0)
    bm = BoltzmannMachine(4, 3, init_scale=1.0).double()
    v, h = bits(4), bits(3)
    brute = -torch.logsumexp(-bm.joint_energy(v[:, None, :], h[None, :, :]), 1)
    assert torch.allclose(bm.energy(v), brute + 7 * math.log(2), atol=1e-10)
    # and so log Z of the energy is log Z of the joint plus the same constant
    z_joint = torch.logsumexp(-bm.joint_energy(v[:, None, :], h[None, :, :]).flatten(), 0)
    assert torch.allclose(log_partition(bm), z_joint - 7 * math.log(2), atol=1e-10)


def test_registered():
    assert type(models.get("boltzmann_machine")).__name__ == "BoltzmannMachine"
    assert type(models.get("dbn")).__name__ == "DBN"
    with pytest.raises(ValueError, match="v_dim"):
        BoltzmannMachine(0, 2)
    with pytest.raises(ValueError, match="hidden_dims"):
        DBN(4, ())


def test_dbn_program_is_a_chain_graph():
    g = pgm.graph_of(DBN(6, (4, 3, 2)))
    assert g.kind == "mixed"
    assert g.undirected_edges == [("h2", "h3")]  # the top RBM
    assert sorted(g.directed_edges) == [("h1", "v"), ("h2", "h1")]


def test_dbn_top_down_samples_follow_its_program():
    """p(v) of a small DBN from its program (hidden layers enumerated, log Z over the 8 visible
    states) vs the frequencies of `sample`: total variation below 0.04 with 8000 samples."""
    torch.manual_seed(0)
    dbn = DBN(3, (2, 2), init_scale=1.5).double()
    v = bits(3)
    exact = torch.softmax(-dbn.energy(v), 0).detach()
    x = dbn.sample(8000, num_steps=30)
    freq = torch.bincount((x * torch.tensor([4.0, 2.0, 1.0], dtype=x.dtype)).sum(-1).long(), minlength=8).double() / 8000
    assert 0.5 * (freq - exact).abs().sum() < 0.04


def test_dbn_one_layer_is_an_rbm():
    dbn = DBN(5, (3,), init_scale=1.0).double()
    v = bits(5)
    assert torch.allclose(dbn.energy(v), dbn.layers[0].free_energy(v) + 8 * math.log(2), atol=1e-10)


def test_greedy_pretraining_trains_every_layer_on_the_layer_below():
    data = pgm.data.load("digits", binarize=True)
    torch.manual_seed(0)
    dbn = DBN(64, (32, 16))
    before = [layer.W.detach().clone() for layer in dbn.layers]
    histories = dbn.pretrain(data.train, epochs=2, batch_size=100, lr=0.01, seed=0)
    assert len(histories) == 2
    for layer, w0, history in zip(dbn.layers, before, histories):
        assert not torch.equal(layer.W, w0)
        errors = history["reconstruction_error"]
        assert sum(errors[-5:]) / 5 < sum(errors[:5]) / 5  # reconstruction improves in each layer
    assert dbn.sample(4, num_steps=5).shape == (4, 64)
    with pytest.raises(ValueError, match=r"data: expected a tensor of shape \(n, 64\)"):
        dbn.pretrain(torch.zeros(3, 10))
