"""inference.fit: exact resume, non-finite losses, bad data, atomic checkpoints, history, devices,
the MaximumLikelihood engine against closed forms, and engines that run once."""

import math
import os
import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pgm
from inference import checkpoint as ckpt
from inference import distributed
from inference.engine import Engine, NonFiniteLossError, as_args
from inference.fit import fit, resolve_device
from inference.history import History
from inference.maximum_likelihood import MaximumLikelihood
from small_models import LearnableNormal


# ---------------------------------------------------------------- small models and engines
class LearnableCoins(pgm.Model):
    """x_id ~ Bernoulli(sigmoid(logits_d)); the MLE is the per-dimension frequency."""

    def __init__(self, dim=4):
        super().__init__()
        self.dim = dim
        self.logits = nn.Parameter(torch.zeros(dim))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Bernoulli(logits=self.logits).to_event(1), obs=x)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, self.dim, dtype=self.dtype, device=self.device),)


class LinearGaussian(pgm.Model):
    """y_i ~ Normal(x_i . w, 1): the program takes (x, y); the MLE of w is least squares."""

    def __init__(self, dim=3):
        super().__init__()
        self.dim = dim
        self.w = nn.Parameter(torch.zeros(dim))

    def model(self, x, y):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(x @ self.w, 1.0), obs=y)

    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, self.dim), torch.zeros(batch_size))


class NoisyEngine(Engine):
    """An SVI-like stochastic engine: its loss draws noise from torch, numpy and Python's RNGs,
    so an exact resume needs every RNG state restored. `nan_at` forces a NaN loss at that step
    (0-based count of completed steps)."""

    def __init__(self, model, lr=0.05, nan_at=None):
        super().__init__(model)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.nan_at = nan_at

    def loss(self, batch):
        x = as_args(batch)[0]
        noisy = x + 0.3 * torch.randn_like(x)
        jitter = 0.01 * float(np.random.randn()) + 0.01 * random.random()
        loss = -self.model.log_prob(noisy).mean() * (1.0 + jitter)
        if self.nan_at is not None and self.num_steps == self.nan_at:
            loss = loss * float("nan")
        return loss

    def step(self, batch):
        return {"loss": self._apply(self.loss(batch), self.optimizer)}

    def state_dict(self):
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])


class RecklessEngine(NoisyEngine):
    """Steps even on a NaN loss (no `_apply` check), corrupting the parameters."""

    def step(self, batch):
        loss = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.num_steps += 1
        return {"loss": loss.item()}


def normal_data(n=40, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2.0 + 0.5 * torch.randn(n, dim, generator=g)


def make(engine_cls=NoisyEngine, model_cls=LearnableNormal, init_seed=0, **kwargs):
    torch.manual_seed(init_seed)
    return engine_cls(model_cls(), **kwargs)


def params(engine):
    return {k: v.detach().clone() for k, v in engine.model.state_dict().items()}


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: {a[k]} != {b[k]}"


def no_temp_files(folder):
    return [f for f in os.listdir(folder) if f.startswith(".")] == []


COMMON = dict(epochs=3, batch_size=8, seed=123, progress=False, device="cpu")


# ---------------------------------------------------------------- exact resume
@pytest.mark.parametrize("engine_cls, extra", [(NoisyEngine, {}), (MaximumLikelihood, {"lr": 0.05})])
def test_resume_after_max_steps_is_bitwise_identical(tmp_path, engine_cls, extra):
    data = normal_data()  # 40 rows, batches of 8: 5 steps an epoch, 15 in all
    whole = make(engine_cls, **extra)
    h_whole = fit(whole, data, checkpoint_dir=tmp_path / "a", checkpoint_every=3, **COMMON)

    first = make(engine_cls, **extra)
    h_first = fit(first, data, checkpoint_dir=tmp_path / "b", checkpoint_every=3, max_steps=7, **COMMON)
    assert len(h_first) == 7  # stopped in the middle of epoch 1
    assert ckpt.load_checkpoint(tmp_path / "b" / ckpt.CHECKPOINT_NAME)["step"] == 7

    second = make(engine_cls, init_seed=99, **extra)  # other initial values: all must come from the checkpoint
    torch.manual_seed(1)  # and other RNG states
    np.random.seed(1)
    h_second = fit(second, data, checkpoint_dir=tmp_path / "b", checkpoint_every=3, resume=True, **COMMON)

    assert_bitwise_equal(params(second), params(whole))
    assert h_second["loss"] == h_whole["loss"]
    assert h_second.epochs["loss"] == h_whole.epochs["loss"]
    assert len(h_second) == 15


def test_resume_after_a_crash_continues_from_the_last_checkpoint(tmp_path):
    data = normal_data()
    whole = make()
    fit(whole, data, **COMMON)

    def crash(state):
        if state.step == 8:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        fit(make(), data, checkpoint_dir=tmp_path, checkpoint_every=3, callbacks=[crash], **COMMON)
    assert ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)["step"] == 6  # the crash wrote nothing

    resumed = make(init_seed=5)
    history = fit(resumed, data, checkpoint_dir=tmp_path, checkpoint_every=3, resume=True, **COMMON)
    assert_bitwise_equal(params(resumed), params(whole))
    assert history["step"] == list(range(1, 16))


def test_resume_needs_the_rng_states(tmp_path, monkeypatch):
    """The exact-resume test has teeth: without restoring the RNG states the result differs."""
    data = normal_data()
    whole = make()
    fit(whole, data, **COMMON)
    fit(make(), data, checkpoint_dir=tmp_path, max_steps=7, **COMMON)
    import importlib

    fit_module = importlib.import_module("inference.fit")  # the module; `inference.fit` is the function

    monkeypatch.setattr(fit_module, "set_rng_state", lambda state: None)
    resumed = make()
    fit(resumed, data, checkpoint_dir=tmp_path, resume=True, validate=False, **COMMON)
    assert not torch.equal(resumed.model.loc, whole.model.loc)


def test_resume_rejects_other_batch_settings_mid_epoch(tmp_path):
    data = normal_data()
    fit(make(), data, checkpoint_dir=tmp_path, max_steps=3, **COMMON)
    with pytest.raises(ValueError, match="batch_size 8 -> 4"):
        fit(make(), data, checkpoint_dir=tmp_path, resume=True, **{**COMMON, "batch_size": 4})


def test_resume_without_checkpoint_dir_is_an_error():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        fit(make(), normal_data(), resume=True, progress=False)


def test_callback_stop_ends_training_with_a_checkpoint(tmp_path):
    engine = make()
    history = fit(engine, normal_data(), checkpoint_dir=tmp_path, callbacks=lambda s: "stop" if s.step == 4 else None,
                  **COMMON)
    assert len(history) == 4
    state = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    assert (state["step"], state["epoch"], state["batch"]) == (4, 0, 4)
    assert_bitwise_equal(state["model"], params(engine))


# ---------------------------------------------------------------- non-finite losses
def test_nan_loss_stops_with_a_clear_error_and_the_last_checkpoint_intact(tmp_path):
    engine = make(nan_at=4)  # the 5th step's loss is NaN
    with pytest.raises(NonFiniteLossError) as raised:
        fit(engine, normal_data(), checkpoint_dir=tmp_path, checkpoint_every=2, **COMMON)
    message = str(raised.value)
    assert "step 5 (epoch 0, batch 4)" in message
    assert str(tmp_path / ckpt.CHECKPOINT_NAME) in message

    state = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    assert state["step"] == 4
    assert History.load(tmp_path / ckpt.HISTORY_NAME)["step"] == [1, 2, 3, 4]
    assert no_temp_files(tmp_path)
    # _apply refused the step: the parameters are those of step 4, finite, and equal to the checkpoint's.
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    assert_bitwise_equal(params(engine), state["model"])


def test_nan_from_an_engine_that_stepped_anyway_restores_the_last_checkpoint(tmp_path):
    engine = make(RecklessEngine, nan_at=4)
    with pytest.raises(NonFiniteLossError, match="restored to their last good state"):
        fit(engine, normal_data(), checkpoint_dir=tmp_path, checkpoint_every=2, **COMMON)
    state = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    assert state["step"] == 4
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    assert_bitwise_equal(params(engine), state["model"])


# ---------------------------------------------------------------- bad data
@pytest.mark.parametrize(
    "model_cls, data, pattern",
    [
        (LearnableNormal, normal_data().index_put_((torch.tensor([3]),), torch.tensor(float("nan"))), "non-finite"),
        (LinearGaussian, (torch.zeros(10, 5), torch.zeros(10)), r"shapes \[\(10, 5\), \(10,\)\] do not fit"),
        (LearnableCoins, torch.full((10, 4), 0.5), r"outside the support of its Bernoulli likelihood"),
    ],
    ids=["nan", "wrong-shape", "non-binary-for-bernoulli"],
)
def test_bad_data_is_rejected_before_the_first_step(tmp_path, model_cls, data, pattern):
    engine = MaximumLikelihood(model_cls())
    before = params(engine)
    with pytest.raises(ValueError, match=pattern):
        fit(engine, data, checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert engine.num_steps == 0
    assert_bitwise_equal(params(engine), before)
    assert os.listdir(tmp_path) == []


def test_bad_arguments_are_rejected():
    engine = make()
    with pytest.raises(ValueError, match="batch_size"):
        fit(engine, normal_data(), batch_size=0, progress=False)
    with pytest.raises(ValueError, match="first dimensions differ"):
        fit(engine, (torch.zeros(3, 2), torch.zeros(4)), progress=False)
    with pytest.raises(TypeError, match="expected a tensor"):
        fit(engine, [[1.0, 2.0]], progress=False)


# ---------------------------------------------------------------- atomic checkpoints
def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"x": torch.arange(3)})
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the temporary file
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"x": torch.arange(5)})
    assert torch.equal(ckpt.load_checkpoint(path)["x"], torch.arange(3))
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_a_crash_while_fit_writes_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def flaky(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full (simulated)")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky)
    with pytest.raises(OSError, match="disk full"):
        fit(make(), normal_data(), checkpoint_dir=tmp_path, checkpoint_every=2, **COMMON)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)["step"] == 2
    assert no_temp_files(tmp_path)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    ckpt.save_checkpoint(tmp_path / "r.pt", {"rng": ckpt.get_rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(4), np.random.seed(4), random.seed(4)
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


# ---------------------------------------------------------------- history and plot
def test_history_is_saved_and_plotted(tmp_path):
    history = fit(MaximumLikelihood(LearnableCoins(), lr=0.1), (torch.rand(30, 4) < 0.3).float(), epochs=4,
                  batch_size=10, seed=0, checkpoint_dir=tmp_path, progress=False, device="cpu")
    assert len(history) == 12 and history.epochs["epoch"] == [0, 1, 2, 3]
    assert history.epochs["step"] == [3, 6, 9, 12]
    assert set(history.metrics) == {"loss", "nll", "bits_per_dim"}
    assert history.epochs["loss"][0] == pytest.approx(sum(history["loss"][:3]) / 3)
    saved = History.load(tmp_path / ckpt.HISTORY_NAME)
    assert saved.to_dict() == history.to_dict() == History.from_dict(history.to_dict()).to_dict()
    history.plot(tmp_path / "loss.png")
    with open(tmp_path / "loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- devices and dtypes
def test_device_auto_picks_cuda_when_present_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    engine = make(MaximumLikelihood)
    fit(engine, normal_data(), device="auto", progress=False)
    assert engine.model.loc.device.type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_device_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(make(), normal_data(), device="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_cuda_moves_model_data_and_optimiser_state():
    engine = make(MaximumLikelihood)
    fit(engine, normal_data(), device="cuda", epochs=2, batch_size=8, progress=False)
    assert engine.model.loc.is_cuda
    assert all(v.is_cuda for s in engine.optimizer.state.values() for k, v in s.items() if k != "step")


def test_floating_data_follow_the_model_dtype():
    engine = MaximumLikelihood(LearnableNormal().double(), lr=0.05)
    fit(engine, normal_data().float(), epochs=2, progress=False, device="cpu")
    assert engine.model.loc.dtype == torch.float64


# ---------------------------------------------------------------- MaximumLikelihood: known answers
def test_mle_normal_matches_the_sample_mean_and_std():
    data = normal_data(n=200)
    torch.manual_seed(0)
    engine = MaximumLikelihood(LearnableNormal(), lr=0.05)
    history = fit(engine, data, epochs=600, seed=0, progress=False, device="cpu")
    model = engine.model
    assert torch.allclose(model.loc, data.mean(0), atol=1e-3)
    assert torch.allclose(model.log_scale.exp(), data.std(0, unbiased=False), atol=1e-3)
    exact_nll = -dist.Normal(data.mean(0), data.std(0, unbiased=False)).log_prob(data).sum(-1).mean()
    assert history["nll"][-1] == pytest.approx(float(exact_nll), abs=1e-4)
    assert "bits_per_dim" not in history


def test_mle_bernoulli_matches_the_frequencies_and_reports_bits_per_dim():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.1, 0.3, 0.5, 0.8])
    data = (torch.rand(500, 4, generator=g) < probs).float()
    engine = MaximumLikelihood(LearnableCoins(), optim="adam", lr=0.1)
    history = fit(engine, data, epochs=30, batch_size=100, seed=0, progress=False, device="cpu")
    freq = data.mean(0)
    assert torch.allclose(torch.sigmoid(engine.model.logits), freq, atol=0.02)
    assert history["bits_per_dim"][-1] == pytest.approx(history["nll"][-1] / (4 * math.log(2)))


def test_mle_on_tuple_data_is_least_squares():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)
    engine = MaximumLikelihood(LinearGaussian(), optim=torch.optim.SGD, lr=0.3)
    fit(engine, (x, y), epochs=300, progress=False, device="cpu")
    w = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    assert torch.allclose(engine.model.w, w, atol=1e-4)


def test_mle_state_dict_holds_the_optimiser_state():
    engine = make(MaximumLikelihood, lr=0.05)
    fit(engine, normal_data(), epochs=1, batch_size=8, progress=False, device="cpu")
    state = engine.state_dict()
    assert state["num_steps"] == 5 and state["optimizer"]["state"]
    other = make(MaximumLikelihood, lr=0.05)
    other.load_state_dict(state)
    assert other.num_steps == 5
    assert torch.equal(other.optimizer.state_dict()["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_mle_refuses_a_model_without_log_prob():
    class Latent(pgm.Model):
        def model(self, x):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

        def example_inputs(self, batch_size=2):
            return (torch.zeros(batch_size),)

    with pytest.raises(TypeError, match="log_prob"):
        MaximumLikelihood(Latent())


# ---------------------------------------------------------------- engines that run once
class FakeMCMC(Engine):
    iterative = False

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def run(self, data, progress=True):
        self.calls.append((data, progress))
        return {"accept_prob": 0.8, "num_samples": 10}


def test_non_iterative_engine_runs_once_on_the_whole_data(tmp_path):
    engine = FakeMCMC(LearnableNormal())
    data = normal_data()
    with pytest.warns(UserWarning, match="ignoring epochs=5, batch_size=8"):
        history = fit(engine, data, epochs=5, batch_size=8, progress=False, checkpoint_dir=tmp_path, device="cpu")
    assert len(engine.calls) == 1
    assert torch.equal(engine.calls[0][0], data) and engine.calls[0][1] is False
    assert history["accept_prob"] == [0.8] and history.epochs["num_samples"] == [10]
    assert ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)["history"] == history.to_dict()


# ---------------------------------------------------------------- data shards
def test_shards_split_one_permutation_evenly():
    n, world = 11, 3
    shards = [distributed.shard(n, seed=7, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in shards} == {4}
    assert set(torch.cat(shards).tolist()) == set(range(n))  # every row; one padded twice
    assert torch.equal(torch.stack(shards, 1).reshape(-1)[:n], distributed.shard(n, seed=7, epoch=2))
    assert not torch.equal(distributed.shard(n, 7, 2), distributed.shard(n, 7, 3))


def test_distributed_helpers_are_no_ops_in_one_process():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    distributed.broadcast_parameters([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    assert (distributed.is_distributed(), distributed.rank(), distributed.world_size()) == (False, 0, 1)


def test_a_non_finite_gradient_with_a_finite_loss_is_refused_before_the_step():
    """loss = 0 * sqrt(-|loc|) - like constructions: finite value, NaN gradient in one parameter;
    `_apply` refuses the step and leaves every parameter as it was."""

    class NaNGradient(Engine):
        requires = frozenset()

        def __init__(self, model):
            super().__init__(model)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

        def loss(self, batch):
            m = self.model
            finite = ((batch - m.loc) ** 2).mean() + m.log_scale.sum()
            return finite + (m.loc[0] * torch.tensor(float("nan"))).nan_to_num()

        def step(self, batch):
            return {"loss": self._apply(self.loss(batch), self.optimizer)}

    engine = NaNGradient(LearnableNormal())
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="non-finite gradient at step 0"):
        engine.step(normal_data())
    assert_bitwise_equal(engine.model.state_dict(), before)
