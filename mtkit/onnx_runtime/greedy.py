"""Greedy search over an export: every sentence takes its most likely column at each step.

The rules of :func:`mtkit.search.greedy_search` (its stream): each row's own step count
drives its length limit and ``min_len``; its score is :func:`final_score` of its fp32
log-probabilities summed in fp32. A row that ends leaves the batch at once (numpy's
row selection is cheap next to a step), which changes no other row's result. Shapes:
B sentences, A active rows, M output columns, S source length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtkit.onnx_runtime.codec import BOS_ID, EOS_ID
from mtkit.onnx_runtime.folder import ExportedModel, select
from mtkit.onnx_runtime.options import RuntimeOptions, final_score, limit_length, max_lengths


@dataclass
class Hypothesis:
    """One translation: text (filled in by the caller), target ids without EOS, score."""

    text: str
    tokens: list[int]
    score: float


def eos_column(model: ExportedModel) -> int:
    """EOS's output column (the export always has one)."""
    return int(np.searchsorted(model.output_ids, EOS_ID))


def greedy_search(
    model: ExportedModel, src: np.ndarray, lengths: np.ndarray, options: RuntimeOptions
) -> list[list[Hypothesis]]:
    """One hypothesis for each of B sentences: ids (B, S) ending in EOS, lengths (B,)."""
    batch, eos = src.shape[0], eos_column(model)
    enc = model.encode(src, lengths)
    state = model.init_state(enc)
    limits = max_lengths(lengths, options)  # (B,)
    rows = np.arange(batch)  # (A,) the sentence of each active row
    prev = np.full(batch, BOS_ID, dtype=np.int64)
    totals = np.zeros(batch, dtype=np.float32)
    history: list[np.ndarray] = []  # per step, (B,) the column each sentence chose
    results: list[list[Hypothesis]] = [[] for _ in range(batch)]
    picks = np.full(batch, eos, dtype=np.int64)
    for t in range(int(limits.max()) + 1):
        log_probs, state = model.step(prev, state, enc)
        limit_length(log_probs, t, limits[rows] <= t, options.min_len, eos)
        best = log_probs.argmax(axis=-1)  # (A,)
        totals[rows] += log_probs[np.arange(len(rows)), best]
        picks[:] = eos
        picks[rows] = best
        history.append(picks.copy())
        ended = best == eos
        for sentence in rows[ended].tolist():
            tokens = [int(h[sentence]) for h in history[:-1]]
            score = final_score(float(totals[sentence]), t + 1, options)
            results[sentence] = [Hypothesis("", model.output_ids[tokens].tolist(), score)]
        if ended.all():
            break
        keep = np.flatnonzero(~ended)
        if len(keep) < len(rows):
            rows, enc, state = rows[keep], select(enc, keep), select(state, keep)
            best = best[keep]
        prev = model.output_ids[best]
    return results


def forced_scores(
    model: ExportedModel,
    src: np.ndarray,
    lengths: np.ndarray,
    targets: list[list[int]],
    options: RuntimeOptions,
) -> list[float]:
    """The score search would report for each given target (ids without EOS): the model
    fed the target, its log-probs summed in fp32. An id outside the output columns has
    probability 0 (score -inf)."""
    steps = max(len(t) for t in targets) + 1
    padded = np.full((len(targets), steps), EOS_ID, dtype=np.int64)
    for row, target in enumerate(targets):
        padded[row, : len(target)] = target
    columns = np.minimum(np.searchsorted(model.output_ids, padded), len(model.output_ids) - 1)
    known = model.output_ids[columns] == padded
    enc = model.encode(src, lengths)
    state = model.init_state(enc)
    prev = np.full(len(targets), BOS_ID, dtype=np.int64)
    totals = np.zeros(len(targets), dtype=np.float32)
    for t in range(steps):
        log_probs, state = model.step(prev, state, enc)
        picked = np.where(known[:, t], log_probs[np.arange(len(targets)), columns[:, t]], -np.inf)
        running = np.array([t <= len(target) for target in targets])
        totals += np.where(running, picked, np.float32(0)).astype(np.float32)
        prev = padded[:, t]
    return [
        final_score(float(totals[row]), len(target) + 1, options)
        for row, target in enumerate(targets)
    ]
