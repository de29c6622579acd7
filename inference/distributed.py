"""Data-parallel training under ``torchrun``: process group, gradient averaging, data shards.

This is what `torch.nn.parallel.DistributedDataParallel` does (an all-reduce of the gradients
after every backward pass, parameters broadcast from rank 0 at the start, each rank reading
its own shard of the data), done at the engine level instead: Pyro programs call a model's
submodules directly (the encoder in the guide, the decoder in the model) rather than through
one DDP-wrapped ``forward``, so DDP's hooks would miss them. `inference.engine.Engine._apply`
calls `average_gradients` between ``backward`` and the optimiser step; `inference.fit` calls
`setup`, `broadcast_parameters` and `shard`.

Started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``), training is distributed when ``WORLD_SIZE > 1``; the backend is gloo on
the CPU and NCCL on CUDA. Outside torchrun every function here is a cheap no-op.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
from torch import nn

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "setup",
    "average_gradients",
    "broadcast_parameters",
    "broadcast_object",
    "all_reduce_mean",
    "shard",
    "barrier",
    "cleanup",
]


def _dist():
    return torch.distributed if torch.distributed.is_available() else None


def _initialized() -> bool:
    dist = _dist()
    return dist is not None and dist.is_initialized()


def is_distributed() -> bool:
    """True when running as one of several processes (started by torchrun, WORLD_SIZE > 1)."""
    if _initialized():
        return torch.distributed.get_world_size() > 1
    return _dist() is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    if _initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0")) if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    if _initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if is_distributed() else 1


_rank, _world_size = rank, world_size  # for functions whose arguments shadow the names


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK; 0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def setup(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group when distributed (idempotent) and return this rank's device.

    The backend is NCCL for a CUDA `device` (each rank then takes ``cuda:LOCAL_RANK`` unless
    the device names an index) and gloo otherwise. Reads torchrun's environment variables.
    Not distributed: returns `device` unchanged and does nothing else.
    """
    device = torch.device(device)
    if not is_distributed():
        return device
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not _initialized():
        missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start the "
                "processes with torchrun (python -m torch.distributed.run --nproc_per_node=N script.py)"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    return device


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of `params` over all processes (all-reduce SUM, then divide by
    the world size), as DDP does after backward. A no-op when not distributed.

    Gradients are reduced in one flat buffer per (device, dtype). A parameter whose gradient is
    None on every rank stays None; one that has a gradient on some ranks only gets the average
    with zeros from the others, so that all ranks take the same optimiser step.
    """
    if not _initialized():
        return
    n = torch.distributed.get_world_size()
    if n == 1:
        return
    groups: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    # Same iteration order on every rank: group keys are sorted, parameters keep their order.
    for (device, dtype), group in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        sizes = [p.numel() for p in group]
        pieces = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(s, device=device, dtype=dtype)
                  for p, s in zip(group, sizes)]
        present = torch.tensor([float(p.grad is not None) for p in group], device=device, dtype=dtype)
        flat = torch.cat(pieces + [present])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat[: sum(sizes)].div_(n)
        counts = flat[sum(sizes):]
        for p, chunk, count in zip(group, flat[: sum(sizes)].split(sizes), counts.tolist()):
            if count == 0:
                continue
            if p.grad is None:
                p.grad = chunk.view_as(p).clone()
            else:
                p.grad.copy_(chunk.view_as(p.grad))


def broadcast_parameters(module_or_params: nn.Module | Iterable[torch.Tensor], src: int = 0) -> None:
    """Copy rank `src`'s parameters (and a module's buffers) to every rank, in place, as DDP
    does at construction. A no-op when not distributed."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return
    if isinstance(module_or_params, nn.Module):
        tensors = list(module_or_params.parameters()) + list(module_or_params.buffers())
    else:
        tensors = list(module_or_params)
    with torch.no_grad():
        for t in tensors:
            torch.distributed.broadcast(t.data, src=src)


def broadcast_object(obj, src: int = 0):
    """Rank `src`'s picklable `obj`, on every rank (`obj` itself when not distributed)."""
    if not _initialized() or torch.distributed.get_world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: dict[str, float], device: str | torch.device = "cpu") -> dict[str, float]:
    """The mean over ranks of each value (same keys on every rank); `values` when not distributed."""
    if not _initialized() or torch.distributed.get_world_size() == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    t /= torch.distributed.get_world_size()
    return dict(zip(keys, t.tolist()))


def shard(
    n: int,
    seed: int,
    epoch: int,
    *,
    shuffle: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> torch.Tensor:
    """This rank's indices into data of `n` rows for one epoch, like `DistributedSampler`.

    Every rank draws the same permutation of ``range(n)`` from a generator seeded by
    ``(seed, epoch)`` (no permutation when ``shuffle=False``), pads it by repeating its start
    to a multiple of the world size, and takes every ``world_size``-th index from its rank on,
    so that ranks get disjoint, equally long shards. Not distributed: the whole permutation.

    >>> shard(5, seed=0, epoch=0, shuffle=False, rank=1, world_size=2)
    tensor([1, 3, 0])
    """
    r = _rank() if rank is None else rank
    w = _world_size() if world_size is None else world_size
    if not 0 <= r < w:
        raise ValueError(f"rank: expected 0 <= rank < world_size = {w}, got {r}")
    if n < 1:
        raise ValueError(f"n: expected at least one row of data, got {n}")
    if shuffle:
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.arange(n)
    if w == 1:
        return order
    total = -(-n // w) * w
    if total > n:
        order = torch.cat([order, order.repeat(-(-(total - n) // n))[: total - n]])
    return order[r:total:w]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s data order, from the run's seed."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if _initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if _initialized():
        torch.distributed.destroy_process_group()
