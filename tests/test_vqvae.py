"""models.vqvae: the codes -> x program, its exact likelihood on a tiny codebook, the
straight-through estimator, the codebook and commitment losses, usage reporting and dead-code
resets, and training by a torch optimiser over `loss`. About 5 s on one CPU core."""

import math

import pytest
import torch

import models
import pgm
from inference.evaluate import log_likelihood
from models.vqvae import VQVAE


@pytest.fixture(scope="module")
def digits():
    return pgm.data.load("digits", binarize=True)


def tiny(**kw):
    torch.manual_seed(0)
    return VQVAE(x_dim=64, num_codes=kw.pop("num_codes", 3), code_dim=2, num_latents=kw.pop("num_latents", 2), hidden_dims=(16,), **kw)


def test_graph_is_codes_to_x_and_registered():
    vq = tiny()
    g = pgm.graph_of(vq)
    assert sorted(g.nodes) == ["codes", "x"] and g.directed_edges == [("codes", "x")]  # no encoder, no codebook node
    assert g.is_isomorphic(pgm.graph_of(models.GAN(x_dim=6, z_dim=2)))
    entry = models.get("vqvae")
    assert isinstance(entry, VQVAE) and entry.x_shape == (64,)
    assert entry.missing("log_prob") is not None  # 32**4 code configurations: not summed out


def test_exact_likelihood_and_the_deterministic_guide_bound(digits):
    """With 3 codes at 2 positions, log p(x) sums 9 configurations; the guide's bound is
    log p(x | z_q(x)) - 2 log 3 (q is a point mass), below it, and the same for every K."""
    vq = tiny()
    x = digits.test[:12]
    exact = vq.log_prob(x).detach()
    configs = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # (9, 2)
    by_hand = torch.stack([vq.decode(vq.quantizer.lookup(c.expand(12, 2))).log_prob(x) for c in configs])
    by_hand = torch.logsumexp(by_hand, 0) - 2 * math.log(3)
    torch.testing.assert_close(exact, by_hand.detach())
    codes = vq.codes(x)
    closed = (vq.decode(vq.quantizer.lookup(codes)).log_prob(x) - 2 * math.log(3)).detach()
    for k in (1, 4):
        torch.testing.assert_close(log_likelihood(vq, x, num_samples=k), closed)
    assert (closed <= exact + 1e-5).all()


def test_straight_through_gradient_reaches_the_encoder(digits):
    vq = tiny(num_codes=8)
    x = digits.train[:32]
    terms = vq.loss_terms(x)
    terms["reconstruction"].mean().backward()
    enc = [p.grad for p in vq.encoder.parameters()]
    assert all(g is not None for g in enc) and sum(g.abs().sum() for g in enc) > 0
    assert vq.quantizer.codebook.grad is None  # the reconstruction term does not move the codes
    # Without the straight-through estimator nothing reaches the encoder (the test can fail).
    vq.zero_grad(set_to_none=True)
    _, z_q = vq.quantize(vq.encode(x))
    (-vq.decode(z_q).log_prob(x)).mean().backward()
    assert all(p.grad is None for p in vq.encoder.parameters())
    # The codebook term moves only the codes, the commitment term only the encoder.
    vq.zero_grad(set_to_none=True)
    vq.loss_terms(x)["codebook"].mean().backward()
    assert vq.quantizer.codebook.grad.abs().sum() > 0 and all(p.grad is None for p in vq.encoder.parameters())
    vq.zero_grad(set_to_none=True)
    vq.loss_terms(x)["commitment"].mean().backward()
    assert vq.quantizer.codebook.grad is None and all(p.grad is not None for p in vq.encoder.parameters())


def test_loss_terms_match_their_definitions(digits):
    vq = tiny(num_codes=5, commitment=0.4)
    x = digits.train[:16]
    z_e = vq.encode(x)
    book = vq.quantizer.codebook
    codes = torch.cdist(z_e.reshape(-1, 2), book).argmin(-1).reshape(16, 2)  # brute-force nearest codes
    z_q = book[codes]
    terms = vq.loss_terms(x)
    assert torch.equal(terms["codes"], codes)
    dist_sq = (z_q - z_e).pow(2).sum((1, 2))
    torch.testing.assert_close(terms["codebook"], dist_sq)
    torch.testing.assert_close(terms["commitment"], dist_sq)
    torch.testing.assert_close(terms["reconstruction"], -vq.decode(z_q).log_prob(x))
    torch.testing.assert_close(vq.loss(x), (terms["reconstruction"] + 1.4 * dist_sq).mean())


def test_usage_reporting():
    # An identity "encoder": each datum is 2 positions of 2 code dims.
    vq = VQVAE(x_dim=4, num_codes=4, code_dim=2, encoder=torch.nn.Unflatten(1, (2, 2)), hidden_dims=(8,))
    assert vq.grid_shape == (2,)
    with torch.no_grad():
        vq.quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [50.0, 50.0]]))
    x = torch.tensor([[0.1, 0.0, 4.0, 5.0], [0.0, 0.2, 5.0, 4.0], [-4.0, 5.0, 0.0, 0.0]])
    u = vq.codebook_usage(x)
    assert u["counts"].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert u["used"] == 3 and u["fraction_used"] == 0.75
    p = torch.tensor([3.0, 2.0, 1.0]) / 6
    assert u["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)


def test_dead_codes_are_reset_to_encoder_outputs(digits):
    vq = tiny(num_codes=16, num_latents=4)
    x = digits.train[:256]
    with torch.no_grad():
        z_e = vq.encode(x).reshape(-1, 2)
        vq.quantizer.codebook[:] = 100.0 + torch.arange(16.0).unsqueeze(1)  # far away ...
        vq.quantizer.codebook[0] = z_e.mean(0)  # ... except code 0, which takes every position
    vq.train()
    vq.loss(x)  # counts the codes used
    before = vq.codebook_usage()
    assert before["used"] == 1 and before["perplexity"] == pytest.approx(1.0)
    old = vq.quantizer.codebook.detach().clone()
    torch.manual_seed(3)
    assert vq.reset_dead_codes(x) == 15
    book = vq.quantizer.codebook.detach()
    assert torch.equal(book[0], old[0])  # the live code stays
    # Every reset code now sits on one of the encoder's outputs.
    nearest = (book[1:, None, :] - z_e[None]).abs().amax(-1).min(-1).values
    assert (nearest < 1e-6).all(), nearest
    assert vq.code_counts.sum() == 0  # counts start afresh
    after = vq.codebook_usage(x)
    assert after["used"] > 8 and after["perplexity"] > 4.0, after


def test_training_with_a_torch_optimizer_lowers_the_loss_and_raises_the_bound(digits):
    vq = tiny(num_codes=16, num_latents=4)
    opt = torch.optim.Adam(vq.parameters(), lr=3e-3)
    x = digits.train
    bound0 = log_likelihood(vq, digits.test, num_samples=1).mean().item()
    first = vq.loss(x).item()
    torch.manual_seed(0)
    for epoch in range(6):
        for batch in x[torch.randperm(len(x))].split(64):
            loss = vq.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        vq.reset_dead_codes(x[:256])
    last = vq.loss(x).item()
    bound1 = log_likelihood(vq, digits.test, num_samples=1).mean().item()
    assert last < first - 10.0, (first, last)
    assert bound1 > bound0 + 10.0, (bound0, bound1)
    assert vq.codebook_usage(x)["used"] >= 12


def test_conv_vqvae_on_8x8_images_and_float64():
    images = pgm.data.load("digits", binarize=True, flatten=False).train[:32]
    vq = VQVAE(x_shape=(1, 8, 8), num_codes=8, code_dim=3, conv=True, channels=(8, 16))
    assert vq.grid_shape == (2, 2)
    assert vq.codes(images).shape == (32, 2, 2) and vq.sample(3).shape == (3, 1, 8, 8)
    loss = vq.loss(images)
    loss.backward()
    assert math.isfinite(loss.item())
    vq64 = VQVAE(x_dim=64, num_codes=4, code_dim=2, num_latents=2, hidden_dims=(8,)).double()
    x = images.reshape(32, 64).double()
    assert vq64.loss(x).dtype == torch.float64
    assert log_likelihood(vq64, x, num_samples=2).dtype == torch.float64
    assert vq64.sample(2).dtype == torch.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_codes"):
        VQVAE(x_dim=4, num_codes=0)
    with pytest.raises(ValueError, match="commitment"):
        VQVAE(x_dim=4, commitment=-1.0)
    with pytest.raises(ValueError, match="conv"):
        VQVAE(x_dim=64, conv=True)
    with pytest.raises(ValueError, match="encoder"):
        VQVAE(x_dim=4, code_dim=3, encoder=torch.nn.Linear(4, 5))
