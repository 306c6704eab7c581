"""Greedy search: all B sentences advance together, each taking its most likely column.

Those that have emitted EOS leave the batch in chunks (``COMPACT``). Shapes: B sentences,
A active, M output columns, S source length, T steps. Beam search lives in
:mod:`mtkit.search.beam`; :mod:`mtkit.search` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mtkit.config import SearchOptions
from mtkit.corpus.tokenizer import BOS_ID, EOS_ID
from mtkit.search.hypothesis import (
    COMPACT,
    Hypothesis,
    OutputColumns,
    StepModel,
    block_repeats,
    final_score,
    limit_length,
    max_lengths,
)

__all__ = ["forced_scores", "greedy_search"]


@dataclass
class _Active:
    """The sentences greedy search is still decoding: A of the batch's B."""

    rows: torch.Tensor  # (A,) each one's row in the batch
    done: torch.Tensor  # (A,) has emitted EOS (leaves at the next compaction)
    enc: Any
    state: Any

    def drop_finished(self, prev: torch.Tensor) -> torch.Tensor:
        """Remove the finished sentences; returns ``prev`` (A,) for those that remain."""
        keep = (~self.done).nonzero().squeeze(1)
        self.rows, self.done = self.rows[keep], self.done[keep]
        self.enc, self.state = self.enc.select(keep), self.state.select(keep)
        return prev[keep]


@dataclass
class _Paths:
    """What greedy search has emitted for each of the B sentences."""

    columns: torch.Tensor  # (B, T) chosen column per step; EOS's column after the end
    totals: torch.Tensor  # (B,) summed log-probs
    lengths: torch.Tensor  # (B,) pieces emitted, EOS included
    eos: int  # EOS's column
    attention: torch.Tensor | None = None  # (B, T, S), kept only when asked for

    @classmethod
    def empty(cls, batch: int, steps: int, eos: int, device: torch.device) -> _Paths:
        columns = torch.full((batch, steps), eos, dtype=torch.long, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        return cls(columns, torch.zeros(batch, device=device), lengths, eos)

    def extend(
        self, log_probs: torch.Tensor, active: _Active, step: int, attention: torch.Tensor | None
    ) -> torch.Tensor:
        """Append each active sentence's most likely column (EOS again once it has ended)."""
        best_lp, best = log_probs.max(dim=-1)  # (A,)
        live = ~active.done
        best = best.masked_fill(active.done, self.eos)
        self.totals[active.rows] += best_lp.masked_fill(active.done, 0.0)
        self.lengths[active.rows] += live.long()
        self.columns[active.rows, step] = best
        if attention is not None:
            if self.attention is None:
                shape = (*self.columns.shape, attention.size(-1))
                self.attention = torch.zeros(shape, device=self.columns.device)
            self.attention[active.rows, step] = attention.float() * live.unsqueeze(1)
        return best

    def hypotheses(
        self, out: OutputColumns, src_lengths: torch.Tensor, options: SearchOptions
    ) -> list[list[Hypothesis]]:
        """One hypothesis per sentence: its ids up to EOS, scored like beam search's."""
        tokens = out.tokens(self.columns).tolist()
        attention = None if self.attention is None else self.attention.cpu()
        rows = zip(self.lengths.tolist(), self.totals.tolist(), src_lengths.tolist(), strict=True)
        results = []
        for b, (length, total, source_length) in enumerate(rows):
            weights = None if attention is None else attention[b, :length, :source_length]
            score = final_score(total, length, weights, options)
            results.append([Hypothesis("", tokens[b][: length - 1], score, weights)])
        return results


@torch.inference_mode()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """The most likely token at every step, for B sentences: one hypothesis each."""
    options = options or SearchOptions()
    batch, device = src.size(0), src.device
    out = OutputColumns(model, device)
    limits = max_lengths(src_lengths, options).to(device)  # (B,)
    paths = _Paths.empty(batch, int(limits.max()) + 1, out.eos, device)
    enc = model.encode(src, src_lengths)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    active = _Active(torch.arange(batch, device=device), done, enc, model.init_state(enc))
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(paths.columns.size(1)):
        log_probs, active.state, attention = model.step(prev, active.state, active.enc)
        limit_length(log_probs, t, limits[active.rows], options.min_len, out.eos)
        if options.no_repeat_ngram and t:
            block_repeats(log_probs, paths.columns[active.rows, :t], options.no_repeat_ngram)
        best = paths.extend(log_probs, active, t, attention if return_attention else None)
        active.done |= best == out.eos
        if bool(active.done.all()):
            break
        prev = out.tokens(best)
        if int(active.done.sum()) >= COMPACT * len(active.done):
            prev = active.drop_finished(prev)
    return paths.hypotheses(out, src_lengths, options)


@torch.inference_mode()
def forced_scores(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    targets: list[list[int]],
    options: SearchOptions | None = None,
) -> list[float]:
    """The score search would report for each given target (ids, without EOS).

    A token outside the model's output vocabulary has probability 0 (score -inf).
    """
    options = options or SearchOptions()
    device = src.device
    out = OutputColumns(model, device)
    enc = model.encode(src, src_lengths)
    state = model.init_state(enc)
    steps = max(len(t) for t in targets) + 1
    padded = torch.full((len(targets), steps), EOS_ID, dtype=torch.long, device=device)
    for row, target in enumerate(targets):
        padded[row, : len(target)] = torch.tensor(target, dtype=torch.long)
    columns, known = out.columns(padded)
    prev = torch.full((len(targets),), BOS_ID, dtype=torch.long, device=device)
    totals = [0.0] * len(targets)
    attentions: list[list[torch.Tensor]] = [[] for _ in targets]
    for t in range(steps):
        log_probs, state, attention = model.step(prev, state, enc)
        gathered = log_probs.float().gather(1, columns[:, t : t + 1]).squeeze(1)
        picked = gathered.masked_fill(~known[:, t], float("-inf")).tolist()
        for row, target in enumerate(targets):
            if t <= len(target):
                totals[row] += picked[row]
                if attention is not None:
                    real = int(src_lengths[row])
                    attentions[row].append(attention[row, :real].float().cpu())
        prev = padded[:, t]
    results = []
    for row, target in enumerate(targets):
        attention = torch.stack(attentions[row]) if attentions[row] else None
        results.append(final_score(totals[row], len(target) + 1, attention, options))
    return results
