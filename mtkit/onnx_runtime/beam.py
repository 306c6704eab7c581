"""Beam search over an export, with the rules of :func:`mtkit.search.beam_search`.

A sentence starts with one beam (W = 1) and has K after the first step. Each step:
the 2K best continuations of each sentence over its beams (:func:`_top_continuations`);
those ending in EOS within the top K finish, scored with length normalisation
(:func:`_finish`); the K best others stay on the beam (:func:`_extend`). A sentence is
done once it holds K finished hypotheses, and leaves the batch at once; EOS is forced
at its maximum length. Live beams compete on fp32 cumulative log-probs, finished ones
on their normalised scores. Shapes: A active sentences, W beams each, K beam size,
M output columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mtkit.onnx_runtime.codec import BOS_ID
from mtkit.onnx_runtime.folder import ExportedModel, select
from mtkit.onnx_runtime.greedy import Hypothesis, eos_column
from mtkit.onnx_runtime.options import RuntimeOptions, final_score, limit_length, max_lengths

Finished = list[tuple[float, list[int]]]  # (score, ids) of a sentence's finished hypotheses


@dataclass
class _Beams:
    """The active sentences' beams: A sentences x W beams, one row each."""

    sentences: np.ndarray  # (A,) original index of each active sentence
    scores: np.ndarray  # (A, W) fp32 cumulative log-probs, -inf for dead beams
    history: np.ndarray  # (A*W, t) columns chosen so far
    limits: np.ndarray  # (A*W,) maximum lengths
    state: Any
    enc: Any


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` largest values, largest first."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


def _top_continuations(
    log_probs: np.ndarray, scores: np.ndarray, k: int, eos: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sentence's 2K best continuations: (scores, beams, columns), each (A, 2K).

    They lie among each beam's own 2K best, so those are picked per row first. A model
    with fewer than 2K output columns gets the missing ones as EOS at -inf (dead)."""
    active, width = scores.shape
    row_columns = _top_k(log_probs, 2 * k)  # (A*W, min(2K, M))
    row_scores = np.take_along_axis(log_probs, row_columns, axis=1)
    missing = 2 * k - row_columns.shape[1]
    if missing > 0:  # (A*W, 2K) after padding
        row_columns = np.pad(row_columns, ((0, 0), (0, missing)), constant_values=eos)
        row_scores = np.pad(row_scores, ((0, 0), (0, missing)), constant_values=-np.inf)
    candidates = (scores[:, :, None] + row_scores.reshape(active, width, 2 * k)).reshape(active, -1)
    top = _top_k(candidates, 2 * k)  # (A, 2K)
    columns = np.take_along_axis(row_columns.reshape(active, -1), top, axis=1)
    return np.take_along_axis(candidates, top, axis=1), top // (2 * k), columns


def beam_search(
    model: ExportedModel, src: np.ndarray, lengths: np.ndarray, options: RuntimeOptions
) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of each of B sentences, best first."""
    k, batch, eos = options.beam_size, src.shape[0], eos_column(model)
    enc = model.encode(src, lengths)
    beams = _Beams(
        sentences=np.arange(batch),
        scores=np.zeros((batch, 1), dtype=np.float32),
        history=np.zeros((batch, 0), dtype=np.int64),
        limits=max_lengths(lengths, options),
        state=model.init_state(enc),
        enc=enc,
    )
    finished: list[Finished] = [[] for _ in range(batch)]
    prev = np.full(batch, BOS_ID, dtype=np.int64)
    for t in range(int(beams.limits.max()) + 1):
        log_probs, beams.state = model.step(prev, beams.state, beams.enc)
        limit_length(log_probs, t, beams.limits <= t, options.min_len, eos)
        top = _top_continuations(log_probs, beams.scores, k, eos)
        _finish(finished, beams, top, t, eos, model.output_ids, options)
        done = np.array([len(finished[s]) >= k for s in beams.sentences.tolist()])
        if done.all():
            break
        chosen = _extend(beams, top, done, k, eos)
        if done.any():
            keep = np.flatnonzero(~done)
            rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            beams.sentences, beams.scores = beams.sentences[keep], beams.scores[keep]
            beams.history, beams.limits = beams.history[rows], beams.limits[rows]
            beams.state, beams.enc = select(beams.state, rows), select(beams.enc, rows)
            chosen = chosen[rows]
        prev = model.output_ids[chosen]
    return [_best(f, options.nbest) for f in finished]


def _finish(
    finished: list[Finished],
    beams: _Beams,
    top: tuple[np.ndarray, np.ndarray, np.ndarray],
    step: int,
    eos: int,
    output_ids: np.ndarray,
    options: RuntimeOptions,
) -> None:
    """Move EOS candidates ranked within the top K of their sentence to ``finished``."""
    scores, origins, columns = top
    k = scores.shape[1] // 2
    is_eos = (columns[:, :k] == eos) & np.isfinite(scores[:, :k])
    width = beams.scores.shape[1]
    for a, rank in zip(*np.nonzero(is_eos), strict=True):  # sentence-major, best rank first
        sentence = finished[int(beams.sentences[a])]
        if len(sentence) >= k:
            continue
        row = a * width + origins[a, rank]
        tokens = output_ids[beams.history[row]].tolist()
        sentence.append((final_score(float(scores[a, rank]), step + 1, options), tokens))


def _extend(
    beams: _Beams, top: tuple[np.ndarray, np.ndarray, np.ndarray], done: np.ndarray, k: int,
    eos: int,
) -> np.ndarray:  # fmt: skip
    """Keep each sentence's K best continuations that do not end in EOS; their columns (A*K,).

    Beams of finished sentences (``done`` (A,)) score -inf until they leave."""
    scores, origins, columns = top
    active, width = beams.scores.shape
    ends = columns == eos
    rank = ends * 10_000 + np.arange(2 * k)
    keep = np.argsort(rank, axis=1, kind="stable")[:, :k]  # (A, K)
    kept_scores = np.take_along_axis(scores, keep, axis=1)
    dead = done[:, None] | np.take_along_axis(ends, keep, axis=1)
    beams.scores = np.where(dead, np.float32(-np.inf), kept_scores).astype(np.float32)
    origin = np.take_along_axis(origins, keep, axis=1) + np.arange(active)[:, None] * width
    chosen = np.take_along_axis(columns, keep, axis=1).reshape(-1)
    rows = origin.reshape(-1)
    beams.history = np.concatenate([beams.history[rows], chosen[:, None]], axis=1)
    beams.state = select(beams.state, rows)
    if width == 1:
        beams.enc = select(beams.enc, np.repeat(np.arange(active), k))
        beams.limits = np.repeat(beams.limits, k)
    return chosen


def _best(finished: Finished, nbest: int) -> list[Hypothesis]:
    ranked = sorted(finished, key=lambda item: -item[0])[:nbest]
    return [Hypothesis("", tokens, score) for score, tokens in ranked]
