"""How data-parallel training processes divide the work: whole batches, or a part of each.

Under ``torchrun`` every process steps through its own shard of each epoch's batches
(:class:`ShardedBatches`). The processes that ``train.processes=N`` starts
(:mod:`mtkit.training.launch`) share every batch instead (:class:`SplitBatches`), so
they make the updates one process would make. The trainer asks the division four things
and nothing else: the batches of an epoch, this process's part of a batch, the batch's
loss and tokens as one process would log them, and how many threads validation may use.
A single process is a sharded run of one.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch

from mtkit.training import distributed
from mtkit.training.distributed import DistInfo


class BatchDivision(ABC):
    """What differs between the two ways of dividing the batches, and nothing else."""

    def __init__(self, dist: DistInfo) -> None:
        self.dist = dist

    @property
    @abstractmethod
    def counting_world(self) -> int:
        """The processes whose tokens one process's count stands for, in tokens/s."""

    @abstractmethod
    def epoch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """The batches this process steps through in an epoch of ``batches``."""

    @abstractmethod
    def portion(self, indices: np.ndarray, tgt_lengths: np.ndarray) -> tuple[np.ndarray, float]:
        """This process's pairs of the batch ``indices``, and the weight of their loss."""

    @abstractmethod
    def batch_totals(
        self, nll_sum: float, n_tokens: int, weight: float, device: torch.device
    ) -> tuple[float, int]:
        """The summed NLL and target tokens of what this process's step stands for."""

    @abstractmethod
    def all_cores(self) -> contextlib.AbstractContextManager[None]:
        """A block in which rank 0 works alone (validation, the final test)."""


class ShardedBatches(BatchDivision):
    """Whole batches, a shard of each epoch per process (torchrun, or a single process)."""

    @property
    def counting_world(self) -> int:
        return self.dist.world  # each process counted its own batches

    def epoch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        return distributed.shard(batches, self.dist)

    def portion(self, indices: np.ndarray, tgt_lengths: np.ndarray) -> tuple[np.ndarray, float]:
        return indices, 1.0

    def batch_totals(
        self, nll_sum: float, n_tokens: int, weight: float, device: torch.device
    ) -> tuple[float, int]:
        return nll_sum, n_tokens

    @contextlib.contextmanager
    def all_cores(self) -> Iterator[None]:
        """Under torchrun the other processes have cores of their own: nothing to give."""
        yield


class SplitBatches(BatchDivision):
    """Every batch, split between the processes (``train.processes=N``).

    Each process trains on its part with a loss weight that makes the average of the
    processes' losses the whole batch's mean (:func:`mtkit.training.distributed.part`),
    so the update is the one a single process makes on the whole batch.
    """

    @property
    def counting_world(self) -> int:
        return 1  # the summed count is already the whole batch's

    def epoch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        return batches

    def portion(self, indices: np.ndarray, tgt_lengths: np.ndarray) -> tuple[np.ndarray, float]:
        return distributed.part(indices, tgt_lengths, self.dist)

    def batch_totals(
        self, nll_sum: float, n_tokens: int, weight: float, device: torch.device
    ) -> tuple[float, int]:
        # a process that got no pair of the batch (weight 0) computed on a stand-in pair
        counted = weight > 0
        nll_sum, total = distributed.summed(
            [nll_sum * counted, n_tokens * counted], self.dist, device
        )
        return nll_sum, int(total)

    @contextlib.contextmanager
    def all_cores(self) -> Iterator[None]:
        """The other processes wait (blocked, not spinning) while rank 0 works alone: give
        it their threads for that while."""
        before = torch.get_num_threads()
        torch.set_num_threads(before * self.dist.world)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def batch_division(dist: DistInfo, started_here: int) -> BatchDivision:
    """How this run divides its batches: split when ``train.processes`` started the
    processes (``started_here`` of them), else whole batches, sharded."""
    if dist.enabled and started_here > 1:
        return SplitBatches(dist)
    return ShardedBatches(dist)
