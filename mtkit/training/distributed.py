"""Distributed data parallel plumbing: ranks, sharding and agreement.

Under ``torchrun --nproc_per_node=N`` every process trains on its own shard of each
epoch's batches (:func:`shard`). The processes that ``train.processes=N`` starts
(:mod:`mtkit.training.launch`) instead split every batch between them (:func:`part`), so they
train on the batches one process would. Either way rank 0 alone validates and writes
files, and decisions that must be the same everywhere (stop now, the learning rate
after a plateau) are broadcast from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


def setup(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    info = launched()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def launched() -> DistInfo:
    """This process's place among the processes it was started with (the launcher's
    environment), whether or not it has joined their group yet."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(env_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def lost_peer(error: RuntimeError, info: DistInfo) -> bool:
    """Whether ``error`` says that another process of the group went away: a collective
    (the gradient average inside backward, too) fails with a backend error then."""
    if not info.enabled:
        return False
    text = str(error)
    return isinstance(error, dist.DistError) or "gloo" in text or "NCCL" in text


@contextmanager
def group_closed_on_exit() -> Iterator[None]:
    """Destroy the process group (if one was joined inside) however the block ends.

    A process that leaves with the group still open, say after a corpus error at start,
    can abort at exit in gloo's threads (``terminate called without an active
    exception``, SIGABRT) instead of exiting with its own status.
    """
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shard(batches: list[np.ndarray], info: DistInfo) -> list[np.ndarray]:
    """This rank's batches: every world-th one, with the same count on every rank."""
    if not info.enabled:
        return batches
    usable = len(batches) - len(batches) % info.world
    return batches[info.rank : usable : info.world]


def part(indices: np.ndarray, tgt_lengths: np.ndarray, info: DistInfo) -> tuple[np.ndarray, float]:
    """This process's part of one batch split between the processes, and its loss weight.

    The part is every world-th pair from the rank on: a batch is cut from pairs in length
    order, so the parts have almost the same shape and the processes arrive at the
    gradient average together. The weight ``world * n_rank / n_batch`` (target tokens,
    EOS included, from ``tgt_lengths`` of the split) turns the average of the processes'
    mean-token losses into the whole batch's mean, so the update is the one a single
    process makes on the whole batch. A rank that gets no pair (a batch of fewer pairs
    than processes) computes on the batch's first pair with weight 0, so that every
    process still takes part in the step.
    """
    mine = indices[info.rank :: info.world]
    total = int(np.asarray(tgt_lengths)[indices].sum())
    if len(mine) == 0:
        return indices[:1], 0.0
    return mine, info.world * int(np.asarray(tgt_lengths)[mine].sum()) / total


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a signal arrived)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def summed(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """The sum of ``values`` over every rank, on every rank."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank."""
    if not info.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()
