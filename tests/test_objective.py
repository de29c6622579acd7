"""The Objective engine: a model's own training loss (the VQ-VAE's) through inference.fit."""

import pytest
import torch

import inference
import models
import pgm
from inference.engine import EngineError


def digits():
    return pgm.data.load("digits", binarize=True)


def test_vqvae_trains_through_fit_and_its_encoder_learns():
    data = digits()
    torch.manual_seed(0)
    vq = models.VQVAE(x_dim=64, num_codes=16, code_dim=4, num_latents=4, hidden_dims=(64,))
    encoder_before = [p.detach().clone() for p in vq.encoder.parameters()]
    with torch.no_grad():
        before = float(vq.loss(data.test).mean())
    engine = inference.Objective(vq, lr=3e-3, reset_dead_codes_every=50)
    history = inference.fit(engine, data.train, epochs=15, batch_size=128, seed=0, progress=False)
    with torch.no_grad():
        after = float(vq.loss(data.test).mean())
    assert after < before - 5.0, (before, after)  # nats per image; 64 ln 2 = 44.4 for a fair coin
    assert all(not torch.equal(a, p) for a, p in zip(encoder_before, vq.encoder.parameters()))
    assert {"reconstruction", "codebook", "commitment", "codes_reset"} <= set(history.metrics)
    assert vq.codebook_usage(data.test)["used"] >= 8  # resets keep the codebook in use


def test_objective_resumes_exactly(tmp_path):
    data = digits().train[:256]

    def make():
        torch.manual_seed(1)
        vq = models.VQVAE(x_dim=64, num_codes=8, code_dim=2, num_latents=2, hidden_dims=(32,))
        return inference.Objective(vq, lr=1e-2, reset_dead_codes_every=3)

    whole = make()
    inference.fit(whole, data, epochs=3, batch_size=64, seed=0, progress=False)
    part = make()
    inference.fit(part, data, epochs=3, batch_size=64, seed=0, progress=False, checkpoint_dir=tmp_path, max_steps=5)
    resumed = make()
    inference.fit(resumed, data, epochs=3, batch_size=64, seed=0, progress=False, checkpoint_dir=tmp_path, resume=True)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_objective_refuses_a_model_without_its_own_loss():
    with pytest.raises(EngineError, match="loss.*Engines that would work:.*SVI"):
        inference.Objective(models.VAE(x_dim=8, z_dim=2))
    with pytest.raises(ValueError, match="reset_dead_codes_every"):
        inference.Objective(models.VQVAE(x_dim=16, num_codes=4, code_dim=2, num_latents=2), reset_dead_codes_every=0)
