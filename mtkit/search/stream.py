"""Greedy search as a stream: sentences join and leave the running batch between steps.

This is the one greedy loop. :func:`mtkit.search.greedy_search` adds its B sentences to
an empty stream and steps it until every one has ended. A service adds sentences while
others are being decoded (iteration-level, or continuous, batching): :meth:`add`
encodes them on their own and appends them to the running encoder outputs and decoder
states (their ``cat`` methods), so the number of steps follows the total number of
target tokens over the batch, not the longest sentence of each batch.

A sentence's hypothesis comes out of the step that ends it. Its row stays in the batch,
feeding EOS, until the ended rows are ``compact`` of it
(:func:`~mtkit.search.hypothesis.unfinished`): dropping rows copies every encoder output
and state, so a fixed batch drops them in chunks (``COMPACT``), a service (``compact=0``)
at once to make room.

Each sentence gets what greedy search gives it alone: its own step count drives the
length limits (``max_lengths``/``force_eos``), ``min_len`` and ``no_repeat_ngram``, its
forced prefix (:mod:`~mtkit.search.prefix`) and its sampled draws
(:mod:`~mtkit.search.sampling`, keyed by its source and its own step), and its score is
:func:`~mtkit.search.hypothesis.final_score` of its summed log-probabilities.
Padding is masked in attention, so a row's source is read alike in any batch. Shapes:
A active rows, M output columns, W columns of history, S source length (padded).
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
    RowState,
    StepModel,
    block_repeats,
    final_score,
    force_eos,
    max_lengths,
    unfinished,
)
from mtkit.search.prefix import (
    Forced,
    Prefixes,
    cat_tables,
    impossible,
    prefix_lengths,
    prefix_table,
)
from mtkit.search.sampling import row_keys, sample

Ended = list[tuple[int, Hypothesis]]  # (ticket, hypothesis) of the sentences that ended


@dataclass
class _Rows(RowState):
    """The active sentences' search state, one row each (the model's parts are opaque)."""

    tickets: list[int]  # the caller's handle of each row
    keep_attention: list[bool]
    src_lengths: torch.Tensor  # (A,) with EOS
    limits: torch.Tensor  # (A,) most tokens before EOS
    steps: torch.Tensor  # (A,) steps taken so far
    totals: torch.Tensor  # (A,) summed log-probs (fp32)
    columns: torch.Tensor  # (A, W) chosen column per step; EOS's column beyond
    prev: torch.Tensor  # (A,) the token each row feeds next
    slot: torch.Tensor  # (A,) the row's place in the kept attention; -1: keeps none
    done: torch.Tensor | None  # (A,) ended and waiting to leave; None while none waits
    prefix: torch.Tensor | None  # (A, P) forced columns (mtkit.search.prefix); None: none left
    keys: torch.Tensor | None  # (A,) sampling keys (mtkit.search.sampling); None: argmax
    enc: Any
    state: Any

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
            torch.cat([self.slot, other.slot]),
            None if self.done is None else torch.cat([self.done, other.steps < 0]),  # not ended
            cat_tables(self.prefix, len(self.tickets), other.prefix, len(other.tickets)),
            None if self.keys is None or other.keys is None else torch.cat([self.keys, other.keys]),
            self.enc.cat(other.enc),
            self.state.cat(other.state),
        )


class _KeptAttention:
    """The attention of the rows that keep theirs: (N + 1, W, S), a slot (row) each.

    A row keeps its slot when others leave, so compaction copies none of it. Every row
    writes at each step, those that keep nothing into the last slot (-1). Rows that
    join rebuild it from the slots still in use: it holds the active rows' only.
    """

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None

    def join(self, active: _Rows | None, new: _Rows, source_width: int) -> None:
        """Slots for ``new``'s rows that keep attention, after ``active``'s (renumbered).

        The buffer spans the history of both (W) and their sources (S, at least).
        """
        old = self.buffer
        if old is None and not any(new.keep_attention):
            return
        wanted = torch.tensor(new.keep_attention, device=new.slot.device)
        live = torch.empty(0, dtype=torch.long, device=new.slot.device)
        if active is not None:
            using = active.slot >= 0
            live = active.slot[using]
            active.slot[using] = torch.arange(len(live), device=live.device)
        count = int(wanted.sum())
        new.slot[wanted] = torch.arange(len(live), len(live) + count, device=live.device)
        if not len(live) + count:
            self.buffer = None
            return
        width = max(new.columns.size(1), 0 if active is None else active.columns.size(1))
        length = max(source_width, 0 if old is None else old.size(2))
        self.buffer = new.totals.new_zeros(len(live) + count + 1, width, length)
        if old is not None and len(live):
            self.buffer[: len(live), : old.size(1), : old.size(2)] = old[live]

    def record(
        self, slot: torch.Tensor, position: int | torch.Tensor, attention: torch.Tensor
    ) -> None:
        """Write one step's attention (A, S') of the rows in ``slot`` (A,) at ``position``."""
        assert self.buffer is not None
        width = min(attention.size(1), self.buffer.size(2))
        self.buffer[slot, position, :width] = attention[:, :width].float()


class GreedyStream:
    """A running greedy search that sentences join (:meth:`add`) and leave (:meth:`step`).

    ``model`` is a :class:`~mtkit.search.hypothesis.StepModel`; to join a running batch
    its encoder outputs and decoder states need ``cat`` as well as ``select`` (a Seq2Seq
    or an Ensemble). ``compact``: the share of ended rows at which they leave the batch
    (0: at once). Call it inside the model's inference settings (the service uses the
    Translator's dtype and device); each public method runs under ``torch.inference_mode``.
    """

    def __init__(
        self, model: StepModel, options: SearchOptions, device: torch.device, compact: float = 0.0
    ) -> None:
        self.model = model
        self.options = options
        self.device = device
        self.compact = compact
        self.out = OutputColumns(model, device)
        self._rows: _Rows | None = None
        self._kept = _KeptAttention()
        self._next_ticket = 0
        self._youngest = 0  # steps taken by the rows added last: the fewest of any row
        self._aligned = True  # every row has taken ``_youngest`` steps (added together)
        self._index = torch.arange(0, device=device)  # (A,) row numbers, cached

    def __len__(self) -> int:
        """Active sentences (with rows that have ended and wait to leave)."""
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
    def add(
        self, sources: Sequence[list[int]], attention: Sequence[bool], prefixes: Prefixes = None
    ) -> list[int]:
        """Encode source ids (each ending in EOS) and append them; returns their tickets.

        ``attention[i]``: whether sentence i's hypothesis keeps its (T, S) attention.
        ``prefixes[i]``: target ids that sentence i's output must begin with (None or
        empty: none; :mod:`mtkit.search.prefix` has the rules).
        """
        if not sources:
            return []
        src, lengths = pad_sequences(list(sources))
        return self.add_batch(src.to(self.device), lengths.to(self.device), attention, prefixes)

    @torch.inference_mode()
    def add_batch(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        attention: Sequence[bool],
        prefixes: Prefixes = None,
    ) -> list[int]:
        """:meth:`add` for a padded batch: source ids (B, S) ending in EOS, lengths (B,)."""
        count, device = src.size(0), self.device
        if not count:
            return []
        table = prefix_table(prefixes, self.out, count)  # checked before anything runs
        enc = self.model.encode(src, src_lengths)
        tickets = list(range(self._next_ticket, self._next_ticket + count))
        self._next_ticket += count
        limits = max_lengths(src_lengths, self.options).to(device)
        if table is not None:  # a prefix longer than the limit raises it
            limits = torch.maximum(limits, prefix_lengths(table).to(device))
        width = int(limits.max()) + 1
        keys = None
        if self.options.sampling:
            keys = row_keys(src, src_lengths, self.options.seed).to(device)
        new = _Rows(
            tickets,
            list(attention),
            src_lengths.to(device),
            limits,
            torch.zeros(count, dtype=torch.long, device=device),
            torch.zeros(count, device=device),
            torch.full((count, width), self.out.eos, dtype=torch.long, device=device),
            torch.full((count,), BOS_ID, dtype=torch.long, device=device),
            torch.full((count,), -1, dtype=torch.long, device=device),
            None,
            None if table is None else table.to(device),
            keys,
            enc,
            self.model.init_state(enc),
        )
        self._kept.join(self._rows, new, src.size(1))
        self._aligned, self._youngest = self._rows is None, 0
        self._rows = new if self._rows is None else self._rows.cat(new, self.out.eos)
        return tickets

    @torch.inference_mode()
    def step(self) -> Ended:
        """One step for every active sentence; returns (ticket, hypothesis) of those that ended.

        Hypotheses have empty ``text`` (the caller detokenizes).
        """
        return self._step()

    @torch.inference_mode()
    def finish(self) -> dict[int, Hypothesis]:
        """Step until every active sentence has ended: their hypotheses by ticket."""
        ended: dict[int, Hypothesis] = {}
        while self._rows is not None:
            ended.update(self._step())
        return ended

    def _step(self) -> Ended:
        rows = self._rows
        if rows is None:
            return []
        log_probs, rows.state, attention = self.model.step(rows.prev, rows.state, rows.enc)
        forced = None if rows.prefix is None else self._forced(log_probs, rows)
        self._constrain(log_probs, rows)
        if forced is not None:
            forced.apply(log_probs)
        if rows.keys is None:
            best_lp, best = log_probs.max(dim=-1)  # (A,)
        else:
            best = sample(log_probs, rows.keys, rows.steps, self.options)
            best_lp = log_probs.gather(1, best.unsqueeze(1)).squeeze(1)
        if rows.done is not None:  # rows that ended feed EOS until they leave
            best = best.masked_fill(rows.done, self.out.eos)
        rows.totals += best_lp
        column = self._column(rows)
        rows.columns[column] = best
        if attention is not None and self._kept.buffer is not None:
            self._kept.record(rows.slot, column[1], attention)
        rows.steps += 1
        self._youngest += 1
        rows.prev = self.out.tokens(best)
        ended = best == self.out.eos
        if rows.done is not None:
            ended &= ~rows.done
        if not bool(ended.any()):
            return []
        return self._leave(rows, ended, attention is not None)

    def _column(self, rows: _Rows) -> tuple[slice | torch.Tensor, int | torch.Tensor]:
        """Where each row's pick of this step goes in ``columns`` (A, W): one column while
        the rows step together, else the row's step (rows that wait to leave: within W)."""
        if self._aligned:
            return slice(None), self._youngest
        if self._index.size(0) != len(rows.tickets):
            self._index = torch.arange(len(rows.tickets), device=self.device)
        if rows.done is None:
            return self._index, rows.steps
        return self._index, rows.steps.clamp(max=rows.columns.size(1) - 1)

    def _forced(self, log_probs: torch.Tensor, rows: _Rows) -> Forced | None:
        """The rows that a prefix forces at their step; the table goes once none is."""
        assert rows.prefix is not None
        forced = Forced.at(rows.prefix, rows.steps, log_probs)
        if forced is None:
            rows.prefix = None
        elif forced.impossible is not None:
            raise impossible(rows.tickets[forced.impossible])
        return forced

    def _constrain(self, log_probs: torch.Tensor, rows: _Rows) -> None:
        """In place on (A, M), each row at its own step: min_len, limits, n-gram blocking."""
        options, eos, n = self.options, self.out.eos, self.options.no_repeat_ngram
        if self._youngest < options.min_len:
            log_probs[:, eos].masked_fill_(rows.steps < options.min_len, float("-inf"))
        force_eos(log_probs, rows.steps >= rows.limits, eos)
        if n and self._aligned:  # one history length
            block_repeats(log_probs, rows.columns[:, : self._youngest], n)
        elif n:
            _block_repeats(log_probs, rows, n)

    def _leave(self, rows: _Rows, ended: torch.Tensor, attended: bool) -> Ended:
        """Hypotheses of the rows ``ended`` (A,); the ended rows leave once they are due."""
        finished = self._hypotheses(ended.nonzero().squeeze(1), rows, attended)
        done = ended if rows.done is None else rows.done | ended
        keep = unfinished(done, self.compact)
        if keep is None:
            rows.done = done
        elif len(keep):
            self._rows = rows.keep(keep)
            self._rows.done = None
        else:
            self._rows = None
            self._kept = _KeptAttention()
        return finished

    def _hypotheses(self, ended: torch.Tensor, rows: _Rows, attended: bool) -> Ended:
        """The hypotheses of rows ``ended`` (E,): ids up to EOS, score, attention (T, S)."""
        lengths = rows.steps[ended].tolist()
        totals = rows.totals[ended].tolist()
        tokens = self.out.tokens(rows.columns[ended]).tolist()
        attention, sources = None, []
        if attended and self._kept.buffer is not None:
            attention = self._kept.buffer[rows.slot[ended]].cpu()  # (E, W, S)
            sources = rows.src_lengths[ended].tolist()
        results = []
        for j, i in enumerate(ended.tolist()):
            length, weights = lengths[j], None
            if attention is not None and rows.keep_attention[i]:
                weights = attention[j, :length, : sources[j]]
            score = final_score(totals[j], length, weights, self.options)
            hypothesis = Hypothesis("", tokens[j][: length - 1], score, weights)
            results.append((rows.tickets[i], hypothesis))
        return results


def _block_repeats(log_probs: torch.Tensor, rows: _Rows, n: int) -> None:
    """``block_repeats`` on each group of rows with equal step counts (history lengths)."""
    for step in rows.steps.unique().tolist():
        if step:
            same = (rows.steps == step).nonzero().squeeze(1)
            part = log_probs[same]
            block_repeats(part, rows.columns[same, :step], n)
            log_probs[same] = part
