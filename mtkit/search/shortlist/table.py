"""The shortlist table: which output columns each source piece suggests, counted on training pairs.

For each source piece s keep the ``k`` target pieces t of highest Dice score
``2 c(s, t) / (c(s) + c(t))`` over the training pairs, seen together at least
``MIN_COUNT`` times, besides the ``frequent`` most frequent target pieces, which every
sentence may always use (with EOS and UNK). Counting streams over the pairs in chunks of
``CHUNK`` and keeps only the (s, t) pairs seen, so memory grows with their number; only
the first ``max_pairs`` pairs are counted. Dice was chosen by measurement: at the same
allowed-set size it covers the validation references about as well as p(t | s) (the
frequent pieces set aside) and better than a smoothed PMI; a count floor of 2 keeps
one-off pairings out. Shapes: k candidates per source piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mtkit.corpus.layout import CorpusSplit
from mtkit.errors import CheckpointError
from mtkit.model.seq2seq import Seq2Seq

MAX_PAIRS = 2_000_000  # training pairs counted at most (the first ones)
MIN_COUNT = 2  # a candidate must co-occur with its source piece in this many pairs
SPECIALS = 4  # ids below this (pad, unk, bos, eos) never suggest candidates
CHUNK = 4096  # pairs counted at a time
ADD_COMMAND = "mtkit-shortlist {path} -o NEW.pt data.KEY=VALUE... (its training data settings)"


@dataclass
class Shortlist:
    """Candidate target ids per source id (V_src, k), -1 where none, and the frequent ids."""

    candidates: torch.Tensor  # (V_src, k) int32
    frequent: torch.Tensor  # (F,) int32, always allowed
    pairs: int  # training pairs counted

    def to_state(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "frequent": self.frequent, "pairs": self.pairs}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str, tgt_vocab: int) -> Shortlist:
        """The checkpoint's shortlist; a missing or damaged one is a one-line CheckpointError."""
        state = payload.get("shortlist")
        if state is None:
            raise CheckpointError(
                f"{source}: holds no shortlist; add one with: {ADD_COMMAND.format(path=source)}"
            )
        try:
            table, frequent = state["candidates"], state["frequent"]
            values = torch.cat([table.flatten(), frequent, torch.tensor([-1])]).long()
            if table.dim() != 2 or frequent.dim() != 1 or table.is_floating_point():
                raise ValueError
            if int(values.max()) >= tgt_vocab or int(values.min()) < -1:
                raise ValueError
            return cls(table.int(), frequent.int(), int(state["pairs"]))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):
            raise CheckpointError(f"{source}: damaged checkpoint (its 'shortlist' entry)") from None


# -- building ------------------------------------------------------------------------------


def build_shortlist(
    split: CorpusSplit, model: Seq2Seq, k: int, frequent: int, max_pairs: int = MAX_PAIRS
) -> Shortlist:
    """Count co-occurrences over (the first ``max_pairs`` of) ``split`` and pick candidates."""
    pairs = min(len(split), max_pairs)
    column_of = model.column_of.cpu().numpy()  # (V_tgt,) id -> column
    columns = len(model.output_ids)
    sources = model.encoder.embed.num_embeddings
    counts = _PairCounts()
    src_freq = np.zeros(sources, dtype=np.int64)  # pairs holding each source piece
    tgt_freq = np.zeros(columns, dtype=np.int64)  # pairs holding each target column
    tokens = np.zeros(columns, dtype=np.int64)  # occurrences of each target column
    for src_rows, tgt_rows, tgt_all in _chunks(split, pairs, column_of):
        src_freq += np.bincount(src_rows[1], minlength=sources)
        tgt_freq += np.bincount(tgt_rows[1], minlength=columns)
        tokens += np.bincount(tgt_all, minlength=columns)
        counts.add(*_cooccurrences(src_rows, tgt_rows, columns))
    keys, together = counts.total()
    base = np.argsort(-tokens, kind="stable")[:frequent]
    ids = model.output_ids.cpu().numpy()
    table = _top_candidates(keys, together, src_freq, tgt_freq, (sources, columns), base, k)
    table = np.where(table >= 0, ids[np.maximum(table, 0)], -1)
    return Shortlist(
        torch.from_numpy(table.astype(np.int32)),
        torch.from_numpy(ids[base].astype(np.int32)),
        pairs,
    )


def _chunks(
    split: CorpusSplit, pairs: int, column_of: np.ndarray
) -> Iterator[tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray]]:
    """Per chunk: unique (pair, source id) and (pair, target column) rows, and all columns."""
    for start in range(0, pairs, CHUNK):
        end = min(start + CHUNK, pairs)
        src = _unique_per_pair(split.src_offsets, split.src_values, start, end)
        tgt_all = column_of[split.tgt_values[split.tgt_offsets[start] : split.tgt_offsets[end]]]
        tgt = _unique_per_pair(split.tgt_offsets, tgt_all, start, end, shifted=True)
        keep = src[1] >= SPECIALS
        yield (src[0][keep], src[1][keep]), tgt, tgt_all


def _unique_per_pair(
    offsets: np.ndarray, values: np.ndarray, start: int, end: int, shifted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(pair in chunk, value) of each distinct value of each pair, sorted by pair then value."""
    bounds = np.asarray(offsets[start : end + 1], dtype=np.int64)
    flat = values if shifted else values[bounds[0] : bounds[-1]]
    owner = np.repeat(np.arange(end - start, dtype=np.int64), np.diff(bounds))
    width = int(flat.max(initial=0)) + 1
    keys = np.unique(owner * width + np.asarray(flat, dtype=np.int64))
    return keys // width, keys % width


def _cooccurrences(
    src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray], columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys ``s * M + t`` of the chunk's (source id, target column) pairs and counts."""
    src_pair, src_id = src
    tgt_pair, tgt_col = tgt
    per_pair = np.bincount(tgt_pair, minlength=int(src_pair.max(initial=-1)) + 1)
    first = np.cumsum(per_pair) - per_pair  # where each pair's targets start
    repeat = per_pair[src_pair]  # every source row meets all targets of its pair
    within = np.arange(int(repeat.sum())) - np.repeat(np.cumsum(repeat) - repeat, repeat)
    targets = tgt_col[np.repeat(first[src_pair], repeat) + within]
    return np.unique(np.repeat(src_id, repeat) * columns + targets, return_counts=True)


class _PairCounts:
    """Sparse counts of (source, target) keys, merged as they grow (amortised n log n)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self.pending.append((keys, counts))
        if sum(len(k) for k, _ in self.pending) > len(self.keys):
            self.total()

    def total(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [(self.keys, self.counts), *self.pending]
        keys, inverse = np.unique(np.concatenate([k for k, _ in parts]), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([c for _, c in parts]))
        self.keys, self.counts, self.pending = keys, counts.astype(np.int64), []
        return self.keys, self.counts


def _top_candidates(
    keys: np.ndarray,
    together: np.ndarray,
    src_freq: np.ndarray,
    tgt_freq: np.ndarray,
    shape: tuple[int, int],
    base: np.ndarray,
    k: int,
) -> np.ndarray:
    """(V_src, k) columns of highest Dice score per source id, -1 where there are fewer."""
    sources, columns = shape
    src, tgt = keys // columns, keys % columns
    always = np.zeros(columns, dtype=bool)
    always[base] = True
    keep = (together >= MIN_COUNT) & ~always[tgt]
    src, tgt, together = src[keep], tgt[keep], together[keep]
    dice = 2.0 * together / (src_freq[src] + tgt_freq[tgt])
    order = np.lexsort((tgt, -dice, src))  # by source, best first, ties by column
    src, tgt = src[order], tgt[order]
    rank = np.arange(len(src)) - np.searchsorted(src, src)  # place within its source
    table = np.full((sources, k), -1, dtype=np.int64)
    table[src[rank < k], rank[rank < k]] = tgt[rank < k]
    return table


# -- using ---------------------------------------------------------------------------------
