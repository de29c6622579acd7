"""Data-parallel fit under torchrun: 2 CPU processes (gloo) end with identical parameters, equal
to a single-process run on the full batch (the mean loss's gradient is the average of the
shards' gradients when the shards are equal in size)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference import checkpoint as ckpt
from inference.fit import fit
from inference.maximum_likelihood import MaximumLikelihood

ROOT = Path(__file__).resolve().parents[1]
WORLD, BATCH_PER_RANK, EPOCHS, SEED = 2, 4, 3, 11
N = 24  # 3 steps an epoch: each step, each rank takes 4 rows of the same 8-row slice of a permutation


def model(init_seed):
    from test_fit import LearnableNormal

    torch.manual_seed(init_seed)
    return LearnableNormal(dim=3)


def data():
    g = torch.Generator().manual_seed(0)
    return 1.0 + 2.0 * torch.randn(N, 3, generator=g)


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_two_processes_match_each_other_and_one_full_batch_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", "--standalone",
               str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD] and ranks[0]["backend"] == "gloo"
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), f"ranks differ in {name}"
    assert ranks[0]["epoch_losses"] == ranks[1]["epoch_losses"]  # epoch means are averaged over ranks

    # One process, the same initial values (rank 0's), batches of WORLD * BATCH_PER_RANK rows.
    single = MaximumLikelihood(model(init_seed=0), lr=0.05)
    history = fit(single, data(), epochs=EPOCHS, batch_size=WORLD * BATCH_PER_RANK, seed=SEED, device="cpu",
                  progress=False)
    assert len(history) == len(ranks[0]["losses"]) == EPOCHS * N // (WORLD * BATCH_PER_RANK)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["params"][name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(ranks[0]["epoch_losses"]), torch.tensor(history.epochs["loss"]))

    # Rank 0 alone wrote the checkpoint, and it holds the final parameters.
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / ckpt.CHECKPOINT_NAME)
    assert state["world_size"] == WORLD and state["step"] == len(history)
    for name, value in state["model"].items():
        assert torch.equal(value, ranks[0]["params"][name])
