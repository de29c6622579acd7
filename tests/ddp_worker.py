"""Worker for tests/test_distributed.py, started by torchrun with 2 CPU processes.

Each rank builds the model with its own random initial values (rank 0's are broadcast), fits it
with MaximumLikelihood on its shard of every epoch, and saves its final parameters to
``<out>/rank<r>.pt``. Usage: ``torchrun --nproc_per_node=2 tests/ddp_worker.py OUT``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from inference import distributed  # noqa: E402
from inference.fit import fit  # noqa: E402
from inference.maximum_likelihood import MaximumLikelihood  # noqa: E402

from test_distributed import BATCH_PER_RANK, EPOCHS, SEED, data, model  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    r = distributed.rank()
    engine = MaximumLikelihood(model(init_seed=r), lr=0.05)  # different on each rank until broadcast
    history = fit(engine, data(), epochs=EPOCHS, batch_size=BATCH_PER_RANK, seed=SEED, device="cpu",
                  checkpoint_dir=out / "checkpoints", progress=False)
    state = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    torch.save({"params": state, "world_size": distributed.world_size(), "backend": torch.distributed.get_backend(),
                "losses": history["loss"], "epoch_losses": history.epochs["loss"]}, out / f"rank{r}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
