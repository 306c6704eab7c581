"""Batches: bucketed token-budget sampling, and collation into padded tensors.

A batch's cost is its padded size, ``sentences x max(longest source, longest target)``,
and never exceeds ``batch_tokens`` (a single pair longer than the budget gets a batch
of its own). Sampling is a pure function of (seed, epoch): the same pair of numbers
always gives the same batches, which is what exact resume relies on.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtkit.config import DataConfig
from mtkit.corpus.tokenizer import BOS_ID, EOS_ID, PAD_ID

if TYPE_CHECKING:
    from mtkit.corpus.layout import CorpusSplit


@dataclass
class Batch:
    """Padded tensors for one batch. B batch, S source length, T target length."""

    src: torch.Tensor  # (B, S) source ids (reversed if the model was trained so) + EOS
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) BOS + pieces
    tgt_out: torch.Tensor  # (B, T) pieces + EOS
    tgt_mask: torch.Tensor  # (B, T) True on real tokens
    n_tgt_tokens: int  # real target tokens (pieces + EOS): what training speed counts

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


def collate(sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Batch:
    """Pad one batch: ``sources`` already end in EOS; targets are bare pieces."""
    src, src_lengths = pad_sequences(sources)
    tgt_in, tgt_lengths = pad_sequences(targets, prefix=BOS_ID)
    tgt_out, _ = pad_sequences(targets, suffix=EOS_ID)
    return Batch(
        src=src,
        src_lengths=src_lengths,
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        tgt_mask=tgt_out != PAD_ID,
        n_tgt_tokens=int(tgt_lengths.sum()),
    )


def fill_batches(
    order: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray, batch_tokens: int
) -> list[np.ndarray]:
    """Cut ``order`` (already sorted by length) into consecutive batches within the budget.

    Greedy: a batch takes the next pair while ``pairs x longest side`` stays within
    ``batch_tokens``; a single pair over the budget gets a batch of its own.
    """
    longest = np.maximum(src_lengths[order], tgt_lengths[order])  # (N,)
    if longest.size > 1 and bool(np.all(longest[1:] >= longest[:-1])):
        cuts = _ascending_cuts(longest, batch_tokens)
    else:
        cuts = _greedy_cuts(longest.tolist(), batch_tokens)
    return [order[start:end] for start, end in itertools.pairwise(cuts)]


def _greedy_cuts(longest: list[int], batch_tokens: int) -> list[int]:
    """Batch boundaries for lengths in any order (the running maximum sets the cost)."""
    cuts, start, running = [0], 0, 0
    for position, length in enumerate(longest):
        widest = max(running, length)
        if position > start and (position - start + 1) * widest > batch_tokens:
            cuts.append(position)
            start, widest = position, length
        running = widest
    return [*cuts, len(longest)] if longest else []


def _ascending_cuts(longest: np.ndarray, batch_tokens: int) -> list[int]:
    """The same boundaries as :func:`_greedy_cuts` for non-decreasing lengths, a batch at a time.

    The last pair of a batch is its longest, so a batch starting at ``start`` ends
    before the first ``p > start`` with ``(p - start + 1) * longest[p] > batch_tokens``,
    and holds at most ``batch_tokens // longest[start]`` pairs: one short numpy search
    per batch instead of a Python step per pair (an epoch of 10M pairs in about a second).
    """
    cuts, start, n = [0], 0, len(longest)
    while start < n:
        window = longest[start : start + batch_tokens // max(int(longest[start]), 1) + 1]
        over = np.arange(1, len(window) + 1) * window > batch_tokens
        over[0] = False  # a batch holds at least one pair
        start += int(np.argmax(over)) if bool(over.any()) else len(window)
        cuts.append(start)
    return cuts


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
        self.src_lengths = _integers(src_lengths)  # (N,) kept as given: memory-mapped, int16
        self.tgt_lengths = _integers(tgt_lengths)
        # batch indices in the smallest type that holds them
        self._index = np.dtype(np.int32 if len(self.src_lengths) < 2**31 else np.int64)
        self._mean_longest: float | None = None
        self.batch_tokens = batch_tokens
        self.seed = seed
        self.pool_batches = pool_batches
        self.buckets = [tuple(b) for b in buckets] if buckets else None

    @classmethod
    def for_training(cls, split: CorpusSplit, data: DataConfig, seed: int) -> TokenBatchSampler:
        """The sampler of a training split, with the ``data`` section's budget and bucketing."""
        return cls(
            split.src_lengths, split.tgt_lengths, data.batch_tokens, seed, data.pool_batches,
            data.buckets,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.batches(0))

    def describe(self, batches: Sequence[np.ndarray]) -> str:
        """One log line about an epoch's batches: how many, and how much of them is padding."""
        padding = padding_overhead(batches, self.src_lengths, self.tgt_lengths)
        return f"{len(batches)} batches, padding overhead {100 * padding:.1f}%"

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of one epoch (arrays of example indices), in training order.

        Memory: the epoch's indices once (int32, 4 bytes a pair) and small per-pool
        temporaries; no Python object per pair.
        """
        rng = self._rng(epoch)
        order = rng.permutation(len(self.src_lengths)).astype(self._index)
        result = self._bucketed(order) if self.buckets else self._pooled(order)
        return [result[i] for i in rng.permutation(len(result))]

    def _sort(self, indices: np.ndarray) -> np.ndarray:
        # The budget counts the longer side, so sort by it first (full batches), then by
        # the total length (little padding on the shorter side).
        wide = np.int32 if self.src_lengths.itemsize <= 2 else np.int64  # no overflow in src + tgt
        src = self.src_lengths[indices].astype(wide)
        tgt = self.tgt_lengths[indices].astype(wide)
        return indices[np.lexsort((src + tgt, np.maximum(src, tgt)))]

    def _pooled(self, order: np.ndarray) -> list[np.ndarray]:
        if self._mean_longest is None:
            self._mean_longest = float(np.maximum(self.src_lengths, self.tgt_lengths).mean())
        mean_len = self._mean_longest
        pool_size = max(1, int(self.pool_batches * self.batch_tokens / max(mean_len, 1.0)))
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool_size):
            pool = self._sort(order[start : start + pool_size])
            batches.extend(
                fill_batches(pool, self.src_lengths, self.tgt_lengths, self.batch_tokens)
            )
        return batches

    def _assign(self, order: np.ndarray) -> np.ndarray:
        """(N,) the first bucket that holds each pair of ``order``; len(buckets) for none."""
        assert self.buckets is not None
        assignment = np.full(len(order), len(self.buckets), dtype=np.int32)
        src, tgt = self.src_lengths[order], self.tgt_lengths[order]
        fits, fits_tgt = np.empty(len(order), dtype=bool), np.empty(len(order), dtype=bool)
        for b, (max_src, max_tgt) in reversed(list(enumerate(self.buckets))):
            np.less_equal(src, max_src, out=fits)
            np.less_equal(tgt, max_tgt, out=fits_tgt)
            fits &= fits_tgt
            assignment[fits] = b
        return assignment

    def _bucketed(self, order: np.ndarray) -> list[np.ndarray]:
        assert self.buckets is not None
        assignment = self._assign(order)
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
        real += int(s.sum()) + int(t.sum())
        padded += len(batch) * (int(s.max()) + int(t.max()))
    return (padded - real) / max(real, 1)


def _integers(lengths: np.ndarray | Sequence[int]) -> np.ndarray:
    """``lengths`` as an integer array: no copy of one that already is (int16, memory-mapped)."""
    array = np.asarray(lengths)
    return array if array.dtype.kind in "iu" else array.astype(np.int64)


def sorted_batches(lengths: Sequence[int], batch_tokens: int) -> list[np.ndarray]:
    """Batches for inference: indices sorted by length (longest first), cut to the budget."""
    lengths_array = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths_array, kind="stable")
    return fill_batches(order, lengths_array, lengths_array, batch_tokens)
