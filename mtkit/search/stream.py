"""Greedy search as a stream: sentences join and leave the running batch between steps.

:func:`mtkit.search.greedy_search` decodes a fixed batch for as many steps as its longest
sentence needs, while the rows that have finished wait. A service does not have a fixed
batch: requests arrive while others are being decoded. :class:`GreedyStream` keeps one
running batch of A active sentences (iteration-level, or continuous, batching): after
every step the sentences that emitted EOS leave with their hypotheses, and :meth:`add`
appends new ones, encoded on their own and then padded and concatenated to the running
encoder outputs and decoder states (their ``cat`` methods). The number of steps then
follows the total number of target tokens over A, not the longest sentence of each batch.

Each sentence gets what ``greedy_search`` gives it alone: its own step count drives the
length limits (``max_lengths``/``limit_length``), ``min_len`` and ``no_repeat_ngram``, and
its score is :func:`~mtkit.search.hypothesis.final_score` of its summed log-probabilities.
Padding is masked in attention, so a row's source is read alike in any batch. Shapes:
A active sentences, W columns of history, S source length (the longest active one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mtkit.config import SearchOptions
from mtkit.corpus.batching import pad_sequences
from mtkit.corpus.tokenizer import BOS_ID
from mtkit.search.hypothesis import (
    Hypothesis,
    OutputColumns,
    StepModel,
    block_repeats,
    final_score,
    limit_length,
    max_lengths,
)


@dataclass
class _Rows:
    """The active sentences' search state, one row each (the model's parts are opaque)."""

    tickets: list[int]  # the caller's handle of each row
    keep_attention: list[bool]
    src_lengths: torch.Tensor  # (A,) with EOS
    limits: torch.Tensor  # (A,) most tokens before EOS
    steps: torch.Tensor  # (A,) steps taken so far
    totals: torch.Tensor  # (A,) summed log-probs (fp32)
    columns: torch.Tensor  # (A, W) chosen column per step; EOS's column beyond
    prev: torch.Tensor  # (A,) the token each row feeds next
    enc: Any
    state: Any

    def select(self, keep: torch.Tensor) -> _Rows:
        """The rows ``keep`` (K,) in that order."""
        chosen = keep.tolist()
        return _Rows(
            [self.tickets[i] for i in chosen],
            [self.keep_attention[i] for i in chosen],
            self.src_lengths[keep],
            self.limits[keep],
            self.steps[keep],
            self.totals[keep],
            self.columns[keep],
            self.prev[keep],
            self.enc.select(keep),
            self.state.select(keep),
        )

    def cat(self, other: _Rows, eos: int) -> _Rows:
        """These rows, then ``other``'s; the history widens to the longer limit."""
        width = max(self.columns.size(1), other.columns.size(1))
        columns = self.columns.new_full((len(self.tickets) + len(other.tickets), width), eos)
        columns[: len(self.tickets), : self.columns.size(1)] = self.columns
        columns[len(self.tickets) :, : other.columns.size(1)] = other.columns
        return _Rows(
            self.tickets + other.tickets,
            self.keep_attention + other.keep_attention,
            torch.cat([self.src_lengths, other.src_lengths]),
            torch.cat([self.limits, other.limits]),
            torch.cat([self.steps, other.steps]),
            torch.cat([self.totals, other.totals]),
            columns,
            torch.cat([self.prev, other.prev]),
            self.enc.cat(other.enc),
            self.state.cat(other.state),
        )


class GreedyStream:
    """A running greedy search that sentences join (:meth:`add`) and leave (:meth:`step`).

    ``model`` must be a :class:`~mtkit.search.hypothesis.StepModel` whose encoder outputs and
    decoder states have ``cat`` as well as ``select`` (a Seq2Seq or an Ensemble). Call it
    inside the model's inference settings (the service uses the Translator's dtype and
    device); each method also runs under ``torch.inference_mode``.
    """

    def __init__(self, model: StepModel, options: SearchOptions, device: torch.device) -> None:
        self.model = model
        self.options = options
        self.device = device
        self.out = OutputColumns(model, device)
        self._rows: _Rows | None = None
        self._attention: dict[int, list[torch.Tensor]] = {}  # (S,) per step, when kept
        self._next_ticket = 0

    def __len__(self) -> int:
        """Active sentences."""
        return 0 if self._rows is None else len(self._rows.tickets)

    @property
    def source_tokens(self) -> int:
        """Source pieces (with EOS) of the active sentences: what a token budget counts."""
        return 0 if self._rows is None else int(self._rows.src_lengths.sum())

    @property
    def longest_source(self) -> int:
        """Source pieces (with EOS) of the longest active sentence: every row's attention
        reads at least this many positions, padding included."""
        return 0 if self._rows is None else int(self._rows.src_lengths.max())

    @torch.inference_mode()
    def add(self, sources: Sequence[list[int]], attention: Sequence[bool]) -> list[int]:
        """Encode source ids (each ending in EOS) and append them; returns their tickets.

        ``attention[i]``: whether sentence i's hypothesis keeps its (T, S) attention.
        """
        if not sources:
            return []
        src, lengths = pad_sequences(list(sources))
        src, lengths = src.to(self.device), lengths.to(self.device)
        enc = self.model.encode(src, lengths)
        tickets = list(range(self._next_ticket, self._next_ticket + len(sources)))
        self._next_ticket += len(sources)
        limits = max_lengths(lengths, self.options).to(self.device)
        count, eos = len(sources), self.out.eos
        new = _Rows(
            tickets,
            list(attention),
            lengths,
            limits,
            torch.zeros(count, dtype=torch.long, device=self.device),
            torch.zeros(count, device=self.device),
            torch.full((count, int(limits.max()) + 1), eos, dtype=torch.long, device=self.device),
            torch.full((count,), BOS_ID, dtype=torch.long, device=self.device),
            enc,
            self.model.init_state(enc),
        )
        for ticket, keep in zip(tickets, attention, strict=True):
            if keep:
                self._attention[ticket] = []
        self._rows = new if self._rows is None else self._rows.cat(new, eos)
        return tickets

    @torch.inference_mode()
    def step(self) -> list[tuple[int, Hypothesis]]:
        """One step for every active sentence; returns (ticket, hypothesis) of those that ended.

        Hypotheses have empty ``text`` (the caller detokenizes).
        """
        rows = self._rows
        if rows is None:
            return []
        log_probs, rows.state, attention = self.model.step(rows.prev, rows.state, rows.enc)
        self._constrain(log_probs, rows)
        best_lp, best = log_probs.max(dim=-1)  # (A,)
        rows.totals += best_lp
        rows.columns[torch.arange(len(best), device=best.device), rows.steps] = best
        rows.steps += 1
        if attention is not None and self._attention:
            self._record_attention(attention, rows)
        rows.prev = self.out.tokens(best)
        done = best == self.out.eos
        if not bool(done.any()):
            return []
        finished = self._hypotheses(done.nonzero().squeeze(1), rows)
        keep = (~done).nonzero().squeeze(1)
        self._rows = rows.select(keep) if len(keep) else None
        return finished

    def _constrain(self, log_probs: torch.Tensor, rows: _Rows) -> None:
        """greedy_search's rules, each row at its own step: min_len, limits, n-gram blocking."""
        options, eos = self.options, self.out.eos
        if options.min_len:
            log_probs[rows.steps < options.min_len, eos] = float("-inf")
        # At step 0 of a row whose remaining length is limit - step: the same test.
        limit_length(log_probs, 0, rows.limits - rows.steps, 0, eos)
        if not options.no_repeat_ngram:
            return
        for step in rows.steps.unique().tolist():  # rows with equal histories' lengths
            if step:
                same = (rows.steps == step).nonzero().squeeze(1)
                part = log_probs[same]
                block_repeats(part, rows.columns[same, :step], options.no_repeat_ngram)
                log_probs[same] = part

    def _record_attention(self, attention: torch.Tensor, rows: _Rows) -> None:
        lengths = rows.src_lengths.tolist()
        for i, ticket in enumerate(rows.tickets):
            if rows.keep_attention[i]:
                self._attention[ticket].append(attention[i, : lengths[i]].float().cpu())

    def _hypotheses(self, ended: torch.Tensor, rows: _Rows) -> list[tuple[int, Hypothesis]]:
        """The hypotheses of rows ``ended`` (E,), as greedy_search reports them."""
        lengths = rows.steps[ended].tolist()
        totals = rows.totals[ended].tolist()
        tokens = self.out.tokens(rows.columns[ended]).tolist()
        results = []
        for j, i in enumerate(ended.tolist()):
            ticket, length = rows.tickets[i], lengths[j]
            steps = self._attention.pop(ticket, None)
            weights = torch.stack(steps) if steps else None  # (T, S)
            score = final_score(totals[j], length, weights, self.options)
            results.append((ticket, Hypothesis("", tokens[j][: length - 1], score, weights)))
        return results
