"""Run directories never lose work: locks, refusals that change nothing, resume rules, checksummed
checkpoints with a kept previous one, unwritable folders, failing saves, and the last good
state after a non-finite loss (inference.rundir, inference.checkpoint, inference.fit)."""

import errno
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from inference import checkpoint as ckpt
from inference.engine import Engine, NonFiniteLossError, as_args
from inference.fit import fit
from inference.maximum_likelihood import MaximumLikelihood
from small_models import LearnableNormal
from inference.rundir import (
    LOCK_NAME,
    ResumeMismatchError,
    RunDirectory,
    RunExistsError,
    RunLockedError,
)


def Normal(dim=3):
    """The learnable Normal, starting at zero whatever the seed."""
    return LearnableNormal(dim, random_init=False)


def data(n=32, dim=3, seed=0):
    return 1.0 + torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def engine(dim=3, lr=0.05):
    torch.manual_seed(0)
    return MaximumLikelihood(Normal(dim), lr=lr)


RUN = dict(epochs=2, batch_size=8, seed=1, progress=False, device="cpu")


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def trained(folder):
    fit(engine(), data(), checkpoint_dir=folder, **RUN)
    return snapshot(folder)


# ---------------------------------------------------------------- refusals change nothing
def test_rerun_without_resume_is_refused_and_changes_nothing(tmp_path):
    before = trained(tmp_path)
    with pytest.raises(RunExistsError, match="--resume.*--overwrite"):
        fit(engine(), data(), checkpoint_dir=tmp_path, **{**RUN, "epochs": 0})
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_run(tmp_path):
    trained(tmp_path)
    fit(engine(), data(seed=5), checkpoint_dir=tmp_path, overwrite=True, **{**RUN, "epochs": 1})
    state = ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)
    assert state["step"] == 4 and not (tmp_path / ckpt.PREVIOUS_NAME).exists()


def test_refused_bad_data_leaves_an_existing_run_untouched(tmp_path):
    before = trained(tmp_path)
    bad = data()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        fit(engine(), bad, checkpoint_dir=tmp_path, overwrite=True, **RUN)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("change, pattern", [
    (lambda: (engine(dim=4), data(dim=4)), r"parameters\.loc: \[3\] -> \[4\]"),
    (lambda: (engine(), data(seed=9)), r"data\.sha256"),
])
def test_resume_with_another_model_or_data_is_refused_listing_the_differences(tmp_path, change, pattern):
    before = trained(tmp_path)
    other_engine, other_data = change()
    with pytest.raises(ResumeMismatchError, match=pattern):
        fit(other_engine, other_data, checkpoint_dir=tmp_path, resume=True, **{**RUN, "epochs": 3})
    assert snapshot(tmp_path) == before


def test_resume_with_cd_instead_of_persistent_cd_is_refused(tmp_path):
    from inference.contrastive_divergence import ContrastiveDivergence
    from models import RBM

    x = (torch.rand(40, 6, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    torch.manual_seed(0)
    fit(ContrastiveDivergence(RBM(6, 3).double(), k=1, persistent=True), x, checkpoint_dir=tmp_path, **RUN)
    torch.manual_seed(0)
    with pytest.raises(ResumeMismatchError, match=r"engine_kind.chains: \"persistent\" -> \"cd\""):
        fit(ContrastiveDivergence(RBM(6, 3).double(), k=1), x, checkpoint_dir=tmp_path, resume=True, **RUN)


def test_mcmc_resumed_on_other_data_is_refused(tmp_path):
    from inference.mcmc import MCMC
    from models import NormalNormal

    model = NormalNormal()
    y = torch.tensor([0.5, 1.0, 1.5])
    fit(MCMC(model, kernel="nuts", num_samples=20, warmup_steps=10), y, checkpoint_dir=tmp_path, progress=False,
        device="cpu", seed=0)
    with pytest.raises(ResumeMismatchError, match="data"):
        fit(MCMC(model, kernel="nuts", num_samples=20, warmup_steps=10), y + 3.0, checkpoint_dir=tmp_path,
            resume=True, progress=False, device="cpu", seed=0)


# ---------------------------------------------------------------- safe changes on resume
def test_a_lower_learning_rate_on_resume_takes_effect_and_is_recorded(tmp_path):
    trained(tmp_path)
    slow = engine(lr=0.001)
    fit(slow, data(), checkpoint_dir=tmp_path, resume=True, **{**RUN, "epochs": 3})
    assert slow.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["fit"]["lr"] == 0.001 and config["resumed"][-1]["fit.lr"] == [0.05, 0.001]
    assert config["resumed"][-1]["fit.epochs"] == [2, 3]


def test_resume_with_the_same_learning_rate_is_still_exact(tmp_path):
    whole = engine()
    fit(whole, data(), checkpoint_dir=tmp_path / "a", **{**RUN, "epochs": 4})
    part = engine()
    fit(part, data(), checkpoint_dir=tmp_path / "b", **RUN)
    part = engine()
    fit(part, data(), checkpoint_dir=tmp_path / "b", resume=True, **{**RUN, "epochs": 4})
    for a, b in zip(whole.model.parameters(), part.model.parameters()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- one writer at a time
HOLDER = textwrap.dedent("""
    import sys, time
    from inference.rundir import RunDirectory
    with RunDirectory(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            fit(engine(), data(), checkpoint_dir=tmp_path, **RUN)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / ckpt.CHECKPOINT_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    fit(engine(), data(), checkpoint_dir=tmp_path, **RUN)
    assert (tmp_path / ckpt.CHECKPOINT_NAME).exists() and not (tmp_path / LOCK_NAME).exists()


def test_the_lock_is_released_after_a_failure(tmp_path):
    bad = data()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError):
        fit(engine(), bad, checkpoint_dir=tmp_path, **RUN)
    assert not (tmp_path / LOCK_NAME).exists()
    fit(engine(), data(), checkpoint_dir=tmp_path, **RUN)


# ---------------------------------------------------------------- trustworthy checkpoints
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_a_damaged_checkpoint_gives_one_clear_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"w": torch.arange(100.0)})
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[-20] ^= 0x01
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(b"hello, this is not a checkpoint\n")
    path.write_bytes(bytes(raw))
    with pytest.raises(ckpt.CheckpointError, match=str(path)):
        ckpt.load_checkpoint(path)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    fit(engine(), data(), checkpoint_dir=tmp_path, checkpoint_every=2, **RUN)  # 8 steps: saves at 2, 4, 6, 8
    assert ckpt.load_checkpoint(tmp_path / ckpt.PREVIOUS_NAME)["step"] == 6
    newest = tmp_path / ckpt.CHECKPOINT_NAME
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="previous checkpoint"):
        resumed = engine()
        fit(resumed, data(), checkpoint_dir=tmp_path, resume=True, **{**RUN, "epochs": 3})
    assert ckpt.load_checkpoint(newest)["step"] == 12


def test_temporary_files_of_an_interrupted_save_are_cleaned_up(tmp_path):
    trained(tmp_path)
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    fit(engine(), data(), checkpoint_dir=tmp_path, resume=True, **{**RUN, "epochs": 3})
    assert not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_and_history_have_the_permissions_of_other_files(tmp_path):
    trained(tmp_path)
    (tmp_path / "other.txt").write_text("x")
    mode = (tmp_path / "other.txt").stat().st_mode & 0o777
    for name in (ckpt.CHECKPOINT_NAME, ckpt.HISTORY_NAME, "config.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_unwritable_checkpoint_dir_is_refused_before_the_first_step(tmp_path, where):
    (tmp_path / "f").write_text("x")
    folder = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    steps = []
    with pytest.raises(ValueError, match="checkpoint_dir: .*f"):
        fit(engine(), data(), checkpoint_dir=folder, callbacks=lambda info: steps.append(info.step), **RUN)
    assert steps == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoint_dir_is_refused_before_the_first_step(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="cannot write"):
            fit(engine(), data(), checkpoint_dir=tmp_path / "run", **RUN)
    finally:
        tmp_path.chmod(0o700)


def test_a_failing_save_keeps_the_last_good_checkpoint_and_says_so(tmp_path, monkeypatch):
    real = torch.save
    calls = []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match="No space left.*last good checkpoint \\(step 4\\) is kept"):
        fit(engine(), data(), checkpoint_dir=tmp_path, **RUN)
    monkeypatch.setattr(torch, "save", real)
    assert ckpt.load_checkpoint(tmp_path / ckpt.CHECKPOINT_NAME)["step"] == 4


# ---------------------------------------------------------------- the last good state
class Diverging(Engine):
    """Adds a growing (finite) amount to the parameters each step, then returns NaN at `nan_at`:
    finite but diverged parameters that must not survive the failure."""

    def __init__(self, model, nan_at):
        super().__init__(model)
        self.nan_at = nan_at

    def step(self, batch):
        self.num_steps += 1
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(10.0 ** self.num_steps)
        return {"loss": float("nan") if self.num_steps == self.nan_at else float(self.num_steps)}


@pytest.mark.parametrize("with_dir", [True, False])
def test_after_a_non_finite_loss_the_model_is_at_its_last_good_state(tmp_path, with_dir):
    torch.manual_seed(0)
    model = Normal()
    eng = Diverging(model, nan_at=7)
    kept = {}

    def remember(info):
        if info.step == 4:  # the end of epoch 0: the last checkpoint before the failure
            kept.update({k: v.clone() for k, v in model.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match="step 7.*last good state \\(step 4\\)"):
        fit(eng, data(), checkpoint_dir=tmp_path if with_dir else None, callbacks=remember, **RUN)
    for k, v in model.state_dict().items():
        assert torch.equal(v, kept[k]), k


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**40), ValueError, "seed"),
    (dict(callbacks=1), TypeError, "callbacks"),
    (dict(callbacks=[print, 3]), TypeError, r"callbacks\[1\]"),
    (dict(overwrite=True), ValueError, "overwrite=True needs checkpoint_dir"),
])
def test_bad_fit_arguments_name_the_argument(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fit(engine(), data(), progress=False, **kwargs)


def test_a_model_passed_instead_of_an_engine_is_refused():
    with pytest.raises(TypeError, match="engine: expected an inference engine.*MaximumLikelihood"):
        fit(Normal(), data(), progress=False)


def test_as_args_is_unchanged():
    assert as_args(torch.zeros(2))[0].shape == (2,)


def test_run_directory_lock_is_reentrant_in_one_process(tmp_path):
    run = RunDirectory(tmp_path)
    with run.lock():
        with RunDirectory(tmp_path).lock():
            assert (tmp_path / LOCK_NAME).exists()
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
