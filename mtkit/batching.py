"""Batches: bucketed token-budget sampling, and collation into padded tensors.

A batch's cost is its padded size, ``sentences x max(longest source, longest target)``,
and never exceeds ``batch_tokens`` (a single pair longer than the budget gets a batch
of its own). Sampling is a pure function of (seed, epoch): the same pair of numbers
always gives the same batches, which is what exact resume relies on.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mtkit.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    """Padded tensors for one batch. B batch, S source length, T target length."""

    src: torch.Tensor  # (B, S) source ids (reversed if the model was trained so) + EOS
    src_lengths: torch.Tensor  # (B,)
    src_mask: torch.Tensor  # (B, S) True on real tokens
    tgt_in: torch.Tensor  # (B, T) BOS + pieces
    tgt_out: torch.Tensor  # (B, T) pieces + EOS
    tgt_mask: torch.Tensor  # (B, T) True on real tokens
    indices: torch.Tensor  # (B,) positions of the examples in their split
    n_src_tokens: int
    n_tgt_tokens: int

    def to(self, device: torch.device) -> Batch:
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device, non_blocking=True))
        return moved


def pad_sequences(
    seqs: Sequence[np.ndarray | Sequence[int]], prefix: int | None = None, suffix: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences (optionally with a prefix/suffix id added) -> (ids, lengths)."""
    extra = int(prefix is not None) + int(suffix is not None)
    lengths = np.fromiter((len(s) + extra for s in seqs), dtype=np.int64, count=len(seqs))
    out = np.full((len(seqs), int(lengths.max())), PAD_ID, dtype=np.int64)
    start = int(prefix is not None)
    for row, seq in enumerate(seqs):
        if prefix is not None:
            out[row, 0] = prefix
        out[row, start : start + len(seq)] = seq
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return torch.from_numpy(out), torch.from_numpy(lengths)


def collate(
    sources: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    indices: Sequence[int] | np.ndarray,
) -> Batch:
    """Pad one batch: ``sources`` already end in EOS; targets are bare pieces."""
    src, src_lengths = pad_sequences(sources)
    tgt_in, tgt_lengths = pad_sequences(targets, prefix=BOS_ID)
    tgt_out, _ = pad_sequences(targets, suffix=EOS_ID)
    return Batch(
        src=src,
        src_lengths=src_lengths,
        src_mask=src != PAD_ID,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        tgt_mask=tgt_out != PAD_ID,
        indices=torch.as_tensor(np.asarray(indices, dtype=np.int64)),
        n_src_tokens=int(src_lengths.sum()),
        n_tgt_tokens=int(tgt_lengths.sum()),
    )


def fill_batches(
    order: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int
) -> list[np.ndarray]:
    """Cut ``order`` (already sorted by length) into consecutive batches within the budget."""
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for position, index in enumerate(order):
        length = max(int(src_lengths[index]), int(tgt_lengths[index]))
        new_longest = max(longest, length)
        if position > start and (position - start + 1) * new_longest > batch_tokens:
            batches.append(order[start:position])
            start, new_longest = position, length
        longest = new_longest
    if len(order) > start:
        batches.append(order[start:])
    return batches


class TokenBatchSampler:
    """Shuffle, cut into pools, sort each pool by length, fill to the budget, shuffle batches.

    With ``buckets`` (the TensorFlow tutorial's ``[(5, 10), (10, 15), ...]``), each pair goes
    to the first bucket that holds both its sides; pairs beyond the last bucket form one
    overflow bucket rather than being dropped.
    """

    def __init__(
        self,
        src_lengths: np.ndarray,
        tgt_lengths: np.ndarray,
        batch_tokens: int,
        seed: int,
        pool_batches: int = 64,
        buckets: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.pool_batches = pool_batches
        self.buckets = [tuple(b) for b in buckets] if buckets else None

    def __len__(self) -> int:
        return len(self.batches(0))

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of one epoch (lists of example indices), in training order."""
        rng = self._rng(epoch)
        order = rng.permutation(len(self.src_lengths))
        result = self._bucketed(order) if self.buckets else self._pooled(order)
        return [result[i] for i in rng.permutation(len(result))]

    def _sort(self, indices: np.ndarray) -> np.ndarray:
        # The budget counts the longer side, so sort by it first (full batches), then by
        # the total length (little padding on the shorter side).
        src, tgt = self.src_lengths[indices], self.tgt_lengths[indices]
        return indices[np.lexsort((src + tgt, np.maximum(src, tgt)))]

    def _pooled(self, order: np.ndarray) -> list[np.ndarray]:
        mean_len = float(np.maximum(self.src_lengths, self.tgt_lengths).mean())
        pool_size = max(1, int(self.pool_batches * self.batch_tokens / max(mean_len, 1.0)))
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool_size):
            pool = self._sort(order[start : start + pool_size])
            batches.extend(
                fill_batches(pool, self.src_lengths, self.tgt_lengths, self.batch_tokens)
            )
        return batches

    def _bucketed(self, order: np.ndarray) -> list[np.ndarray]:
        assert self.buckets is not None
        assignment = np.full(len(order), len(self.buckets), dtype=np.int64)
        src, tgt = self.src_lengths[order], self.tgt_lengths[order]
        for b, (max_src, max_tgt) in reversed(list(enumerate(self.buckets))):
            assignment[(src <= max_src) & (tgt <= max_tgt)] = b
        batches: list[np.ndarray] = []
        for b in range(len(self.buckets) + 1):
            members = order[assignment == b]
            if len(members) == 0:
                continue
            if b < len(self.buckets):
                size = max(1, self.batch_tokens // max(self.buckets[b]))
                batches.extend(members[i : i + size] for i in range(0, len(members), size))
            else:
                batches.extend(
                    fill_batches(
                        self._sort(members), self.src_lengths, self.tgt_lengths, self.batch_tokens
                    )
                )
        return batches


def padding_overhead(
    batches: Sequence[np.ndarray], src_lengths: np.ndarray, tgt_lengths: np.ndarray
) -> float:
    """Pad tokens / real tokens over both sides of all batches."""
    real = padded = 0
    for batch in batches:
        s, t = src_lengths[batch], tgt_lengths[batch]
        real += int(s.sum() + t.sum())
        padded += len(batch) * int(s.max() + t.max())
    return (padded - real) / max(real, 1)


def sorted_batches(lengths: Sequence[int], batch_tokens: int) -> list[np.ndarray]:
    """Batches for inference: indices sorted by length (longest first), cut to the budget."""
    lengths_array = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths_array, kind="stable")
    return fill_batches(order, lengths_array, lengths_array, batch_tokens)
