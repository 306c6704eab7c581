"""Beam search over a model's step function, batched over sentences and beams.

Beams live in fixed-shape (A, K) tensors: A active sentences, K beams. Every sentence
starts with one beam (width W = 1), so the first step does not rank K copies of the same
hypothesis; after it, W = K. Each step of the loop is four named steps:

1. :func:`_top_continuations`: each sentence's 2K best continuations over its W beams;
2. :func:`_finish_hypotheses`: those ending in EOS within the top K go to the sentence's
   finished list (never dropped), scored as in docs/model.md;
3. :func:`_extend_beams`: the K best that do not end in EOS stay on the beam;
4. :meth:`_Beams.keep_sentences`: sentences holding K finished hypotheses leave the
   batch, in chunks (``COMPACT``), so the tail of a batch does not pay for those that
   ended early.

Finished sentences leave as the greedy stream's rows do (:func:`unfinished` decides,
:meth:`RowState.keep` keeps the rest of every per-row field), rather than staying in
fixed (B, K) shapes with their rows masked as Sockeye and Hugging Face do: on a CPU a
masked row costs a full step (attention over its source, the output layer), so a batch
whose longest sentence runs on would keep paying for all the others.

At a sentence's maximum length EOS is forced, so every beam ends. Shapes: B sentences,
A active, W beams per sentence now, K beam size, M output columns, S source length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from mtkit.config import SearchOptions
from mtkit.corpus.tokenizer import BOS_ID
from mtkit.search.hypothesis import (
    COMPACT,
    Hypothesis,
    OutputColumns,
    RowState,
    StepModel,
    block_repeats,
    final_score,
    limit_length,
    max_lengths,
    unfinished,
)
from mtkit.search.prefix import Forced, Prefixes, impossible, prefix_lengths, prefix_table

Finished = list[tuple[float, list[int], torch.Tensor | None]]  # (score, ids, attention (T, S))


class _Candidates(NamedTuple):
    """Each active sentence's 2K best continuations, best first: (A, 2K) each."""

    scores: torch.Tensor  # cumulative log-probs
    beams: torch.Tensor  # the beam (0 .. W-1) each one continues
    columns: torch.Tensor  # the output column each one appends


@dataclass
class _Rows(RowState):
    """The A*W beams, one row each (A rows, one per sentence, before the first step)."""

    history: torch.Tensor  # (A*W, t) columns chosen so far
    attention: torch.Tensor | None  # (A*W, t, S)
    limits: torch.Tensor  # (A*W,) maximum lengths
    source_lengths: torch.Tensor  # (A*W,) real source positions (attention columns)
    prefix: torch.Tensor | None  # (A*W, P) forced columns (mtkit.search.prefix); None: none left
    state: Any
    enc: Any

    def reorder(self, rows: torch.Tensor) -> None:
        """Row r of the new beams continues row ``rows[r]``: what differs between a
        sentence's beams follows (its limits and source stay)."""
        self.history = self.history.index_select(0, rows)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, rows)
        self.state = self.state.select(rows)

    def widen(self, k: int) -> None:
        """From one beam per sentence to K: repeat what every beam of a sentence shares."""
        rows = torch.arange(self.limits.size(0), device=self.limits.device).repeat_interleave(k)
        self.enc = self.enc.select(rows)
        self.limits, self.source_lengths = self.limits[rows], self.source_lengths[rows]
        if self.prefix is not None:
            self.prefix = self.prefix[rows]


@dataclass
class _Beams:
    """The live part of a beam search: A active sentences x W beams."""

    sentences: list[int]  # original index of each active sentence
    scores: torch.Tensor  # (A, W) cumulative log-probs, -inf for dead beams
    rows: _Rows

    @classmethod
    def start(
        cls,
        model: StepModel,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        options: SearchOptions,
        prefix: torch.Tensor | None,
    ) -> _Beams:
        """One beam per sentence (W = 1), encoded once; ``prefix`` (B, P) their forced
        columns, whose lengths raise the length limits they exceed."""
        batch, device = src.size(0), src.device
        enc = model.encode(src, src_lengths)
        limits = max_lengths(src_lengths, options).to(device)
        if prefix is not None:
            limits = torch.maximum(limits, prefix_lengths(prefix))
        rows = _Rows(
            history=torch.empty(batch, 0, dtype=torch.long, device=device),
            attention=None,
            limits=limits,
            source_lengths=src_lengths.to(device),
            prefix=prefix,
            state=model.init_state(enc),
            enc=enc,
        )
        return cls(list(range(batch)), torch.zeros(batch, 1, device=device), rows)

    def add_attention(self, attention: torch.Tensor) -> None:
        """Append one step's attention (A*W, S)."""
        step, kept = attention.float().unsqueeze(1), self.rows.attention
        self.rows.attention = step if kept is None else torch.cat([kept, step], 1)

    def keep_sentences(self, keep: torch.Tensor, k: int) -> torch.Tensor:
        """Drop finished sentences: ``keep`` (A',) indexes the active ones to retain.
        Returns their rows (A'*K,)."""
        rows = (keep.unsqueeze(1) * k + torch.arange(k, device=keep.device)).view(-1)
        self.sentences = [self.sentences[i] for i in keep.tolist()]
        self.scores = self.scores[keep]
        self.rows = self.rows.keep(rows)
        return rows


@torch.inference_mode()
def beam_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    return_attention: bool = False,
    prefixes: Prefixes = None,
) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of each of B sentences, best first.

    ``prefixes[i]``: target ids that sentence i's hypotheses must begin with (None or
    empty: none; :mod:`mtkit.search.prefix` has the rules). Sampling is greedy search's:
    ``options.sampling`` is a ValueError here.
    """
    options = options or SearchOptions()
    if options.sampling:
        raise ValueError("beam_search does not sample: use greedy_search (beam_size=1)")
    k, device = options.beam_size, src.device
    out = OutputColumns(model, device)
    keep_attention = return_attention or options.coverage_penalty != 0.0
    table = prefix_table(prefixes, out, src.size(0))
    beams = _Beams.start(model, src, src_lengths, options, table)
    finished: list[Finished] = [[] for _ in range(src.size(0))]
    prev = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=device)
    for t in range(int(beams.rows.limits.max()) + 1):
        rows = beams.rows
        log_probs, rows.state, attention = model.step(prev, rows.state, rows.enc)
        log_probs = log_probs.float()  # (A*W, M)
        forced = None if rows.prefix is None else _forced(log_probs, beams, t)
        limit_length(log_probs, t, rows.limits, options.min_len, out.eos)
        if options.no_repeat_ngram:
            block_repeats(log_probs, rows.history, options.no_repeat_ngram)
        if forced is not None:
            forced.apply(log_probs)
        if keep_attention and attention is not None:
            beams.add_attention(attention)
        top = _top_continuations(log_probs, beams.scores, k, out.eos)
        _finish_hypotheses(finished, beams, top, t, out, options)
        done = torch.tensor([len(finished[s]) >= k for s in beams.sentences], device=device)
        if bool(done.all()):
            break
        prev = out.tokens(_extend_beams(beams, top, done, k, out.eos))
        keep = unfinished(done, COMPACT)
        if keep is not None:
            prev = prev.index_select(0, beams.keep_sentences(keep, k))
    return [_best(f, options.nbest, return_attention) for f in finished]


def _forced(log_probs: torch.Tensor, beams: _Beams, step: int) -> Forced | None:
    """The beams that a prefix forces at ``step``; the table goes once none is."""
    assert beams.rows.prefix is not None
    live = torch.isfinite(beams.scores).view(-1)  # (A*W,) dead beams may be forced anywhere
    forced = Forced.at(beams.rows.prefix, step, log_probs, live)
    if forced is None:
        beams.rows.prefix = None
    elif forced.impossible is not None:
        raise impossible(beams.sentences[forced.impossible // beams.scores.size(1)])
    return forced


def _top_continuations(
    log_probs: torch.Tensor, scores: torch.Tensor, k: int, eos: int
) -> _Candidates:
    """The 2K best of each sentence's W*M continuations of its beams ``scores`` (A, W).

    They lie among each beam's own 2K best: picking those per row first ranks only
    (A, W*2K) candidates, not (A, W*M). A model with fewer than 2K output columns gets
    the missing candidates as EOS at -inf, which neither finish nor stay alive.
    """
    active, width = scores.shape
    row_scores, row_columns = log_probs.topk(min(2 * k, log_probs.size(-1)), dim=-1)
    if row_scores.size(-1) < 2 * k:  # (A*W, 2K) after padding
        missing = 2 * k - row_scores.size(-1)
        row_scores = F.pad(row_scores, (0, missing), value=float("-inf"))
        row_columns = F.pad(row_columns, (0, missing), value=eos)
    candidates = scores.unsqueeze(-1) + row_scores.view(active, width, 2 * k)
    top_scores, top_ids = candidates.view(active, -1).topk(2 * k, dim=-1)  # (A, 2K)
    columns = row_columns.view(active, -1).gather(1, top_ids)
    return _Candidates(top_scores, top_ids // (2 * k), columns)


def _finish_hypotheses(
    finished: list[Finished],
    beams: _Beams,
    top: _Candidates,
    step: int,
    out: OutputColumns,
    options: SearchOptions,
) -> None:
    """Move EOS candidates ranked within the top K of their sentence to ``finished``."""
    k = top.scores.size(1) // 2
    is_eos = (top.columns[:, :k] == out.eos) & torch.isfinite(top.scores[:, :k])
    if not bool(is_eos.any()):
        return
    active, ranks = is_eos.nonzero(as_tuple=True)  # sentence-major, best rank first
    rows = active * beams.scores.size(1) + top.beams[active, ranks]
    # One transfer for all hypotheses that end here, not one per hypothesis.
    scores = top.scores[active, ranks].tolist()
    histories = out.tokens(beams.rows.history[rows]).tolist()
    for j, (a, row) in enumerate(zip(active.tolist(), rows.tolist(), strict=True)):
        sentence = finished[beams.sentences[a]]
        if len(sentence) >= k:
            continue
        attention = None
        if beams.rows.attention is not None:
            kept = beams.rows.attention
            attention = kept[row, :, : int(beams.rows.source_lengths[row])].cpu()
        score = final_score(scores[j], step + 1, attention, options)
        sentence.append((score, histories[j], attention))


def _extend_beams(
    beams: _Beams, top: _Candidates, done: torch.Tensor, k: int, eos: int
) -> torch.Tensor:
    """Keep each sentence's K best continuations that do not end in EOS; their columns (A*K,).

    Each beam adds at most one EOS among the 2K, so at least K others remain. Beams of
    finished sentences (``done`` (A,)) score -inf until they are dropped.
    """
    active, width = beams.scores.shape
    device = top.scores.device
    ends = top.columns == eos
    rank = ends.float() * 1e4 + torch.arange(2 * k, device=device).float()
    keep = rank.topk(k, dim=-1, largest=False).indices  # (A, K)
    beams.scores = top.scores.gather(1, keep).masked_fill(
        done.unsqueeze(1) | ends.gather(1, keep), float("-inf")
    )
    origin = top.beams.gather(1, keep) + torch.arange(active, device=device).unsqueeze(1) * width
    chosen = top.columns.gather(1, keep).view(-1)
    rows = beams.rows
    rows.reorder(origin.view(-1))
    if width == 1:
        rows.widen(k)
    rows.history = torch.cat([rows.history, chosen.unsqueeze(1)], 1)
    return chosen


def _best(finished: Finished, nbest: int, with_attention: bool) -> list[Hypothesis]:
    ranked = sorted(finished, key=lambda item: -item[0])[:nbest]
    return [
        Hypothesis("", tokens, score, attention if with_attention else None)
        for score, tokens, attention in ranked
    ]
