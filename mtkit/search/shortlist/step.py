"""Decoding over a sentence's shortlist: a StepModel wrapping a Seq2Seq, as Marian does on CPUs.

``encode`` also works out each sentence's allowed columns (:mod:`mtkit.search.shortlist.table`),
and ``step`` computes logits, for each group of ``GROUP_ROWS`` rows, over the union of
the group's allowed columns only, masks each row to its own set and log-softmaxes over
it. A sentence's result therefore never depends on its batch, and with every column
allowed it equals the plain model's. Shapes: B sentences (rows), S source length, M
output columns, R rows in a group, U columns in its union, H features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtkit.corpus.layout import CorpusSplit
from mtkit.corpus.tokenizer import EOS_ID, UNK_ID
from mtkit.errors import CheckpointError
from mtkit.model.decoder import DecoderState
from mtkit.model.encoder import EncoderOutput
from mtkit.model.seq2seq import Seq2Seq
from mtkit.search.shortlist.table import SPECIALS, Shortlist

GROUP_ROWS = 64  # rows whose allowed columns are scored together


@dataclass
class RowGroup:
    """Rows ``start:end`` of the batch, the union U of their allowed columns, and the output
    layer's rows for it: weight (U, H), bias (U,) or, where a row's own set ends, (R, U)
    with -inf (the mask rides on the bias, costing no extra pass per step)."""

    start: int
    end: int
    columns: torch.Tensor  # (U,) ascending
    weight: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, allowed: torch.Tensor, start: int, layer: nn.Linear) -> RowGroup:
        columns = allowed.any(0).nonzero().squeeze(1)
        weight: torch.Tensor = layer.weight
        bias: torch.Tensor | None = layer.bias
        if len(columns) < allowed.size(1):
            weight = weight.index_select(0, columns)
            bias = None if bias is None else bias.index_select(0, columns)
        blocked = ~allowed.index_select(1, columns)  # (R, U)
        if bool(blocked.any()):
            rows = weight.new_zeros(len(columns)) if bias is None else bias
            bias = rows.expand(len(blocked), -1).masked_fill(blocked, float("-inf"))
        return cls(start, start + len(allowed), columns, weight, bias)

    def log_probs(self, features: torch.Tensor, out: torch.Tensor) -> None:
        """Write the rows' log-probs over their allowed columns into ``out`` (B, M)."""
        rows = features[self.start : self.end]
        if self.bias is not None and self.bias.dim() == 2:
            logits = torch.addmm(self.bias, rows, self.weight.t())  # (R, U)
        else:
            logits = F.linear(rows, self.weight, self.bias)
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        out[self.start : self.end].index_copy_(1, self.columns, log_probs)


@dataclass
class ShortlistEncoding:
    """The encoder output with each row's allowed columns, in groups of ``GROUP_ROWS`` rows.

    A union over the whole batch would cover most columns for a large batch; over a few
    dozen rows it stays small. Beam search repeats a sentence's rows next to each other.
    """

    inner: EncoderOutput
    allowed: torch.Tensor  # (B, M) bool
    groups: list[RowGroup]
    layer: nn.Linear

    @classmethod
    def narrow(
        cls, inner: EncoderOutput, allowed: torch.Tensor, layer: nn.Linear
    ) -> ShortlistEncoding:
        starts = range(0, len(allowed), GROUP_ROWS)
        groups = [RowGroup.of(allowed[s : s + GROUP_ROWS], s, layer) for s in starts]
        return cls(inner, allowed, groups, layer)

    def select(self, index: torch.Tensor) -> ShortlistEncoding:
        """Rows picked by ``index``; the unions shrink as sentences leave the batch."""
        allowed = self.allowed.index_select(0, index)
        return ShortlistEncoding.narrow(self.inner.select(index), allowed, self.layer)

    def cat(self, other: ShortlistEncoding) -> ShortlistEncoding:
        """These rows, then ``other``'s: for a service that joins batches while decoding."""
        allowed = torch.cat([self.allowed, other.allowed])
        return ShortlistEncoding.narrow(self.inner.cat(other.inner), allowed, self.layer)


class Shortlisted(nn.Module):
    """A Seq2Seq whose steps score only the columns its sources' shortlist allows."""

    def __init__(self, model: Seq2Seq, shortlist: Shortlist) -> None:
        super().__init__()
        self.model = model
        self.shortlist = shortlist
        column_of = model.column_of
        eos = column_of[EOS_ID]
        ids = shortlist.candidates.long().to(column_of.device)
        table = torch.where(ids >= 0, column_of[ids.clamp(min=0)], eos)  # (V_src, k)
        table[:SPECIALS] = eos  # padding and specials add nothing
        extra = torch.tensor([EOS_ID, UNK_ID], device=column_of.device)
        base = column_of[torch.cat([shortlist.frequent.long().to(column_of.device), extra])]
        self.table: torch.Tensor
        self.base: torch.Tensor
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("base", torch.unique(base), persistent=False)

    @property
    def output_ids(self) -> torch.Tensor:
        return self.model.output_ids

    def allowed(self, src: torch.Tensor) -> torch.Tensor:
        """Source ids (B, S) -> each sentence's allowed output columns (B, M) as a mask."""
        mask = torch.zeros(src.size(0), len(self.output_ids), dtype=torch.bool, device=src.device)
        mask[:, self.base] = True
        return mask.scatter_(1, self.table[src].flatten(1), True)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> ShortlistEncoding:
        enc = self.model.encode(src, src_lengths)
        return ShortlistEncoding.narrow(enc, self.allowed(src), self.model.output)

    def init_state(self, enc: ShortlistEncoding) -> DecoderState:
        return self.model.init_state(enc.inner)

    def step(
        self, prev_ids: torch.Tensor, state: DecoderState, enc: ShortlistEncoding
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Previous ids (B,) -> (log-probs (B, M) fp32, -inf off its list, state, attention)."""
        features, state, attention = self.model.decoder.step(prev_ids, state, enc.inner)
        out = features.new_full(
            (len(features), len(self.output_ids)), float("-inf"), dtype=torch.float32
        )
        for group in enc.groups:
            group.log_probs(features, out)
        return out, state, attention


def with_shortlist(model: Seq2Seq, payload: dict[str, Any], source: str) -> Shortlisted:
    """``model`` decoding through its checkpoint's shortlist (a one-line error if it has none)."""
    shortlist = Shortlist.from_payload(payload, source, model.decoder.embed.num_embeddings)
    if shortlist.candidates.size(0) != model.encoder.embed.num_embeddings:
        raise CheckpointError(f"{source}: its shortlist does not match the source vocabulary")
    return Shortlisted(model, shortlist)


def coverage(shortlisted: Shortlisted, split: CorpusSplit, batch: int = 256) -> tuple[float, float]:
    """Share of ``split``'s reference target pieces (and EOS) inside their sentence's allowed
    set, and the mean allowed set size as a share of the M columns."""
    from mtkit.corpus.batching import pad_sequences

    column_of = shortlisted.model.column_of
    covered = total = 0
    size = 0.0
    for start in range(0, len(split), batch):
        numbers = range(start, min(start + batch, len(split)))
        src, _ = pad_sequences([split.source(i).tolist() for i in numbers])
        allowed = shortlisted.allowed(src)
        for row, i in enumerate(numbers):
            targets = column_of[torch.from_numpy(np.append(split.target(i), EOS_ID)).long()]
            covered += int(allowed[row, targets].sum())
            total += len(targets)
        size += float(allowed.float().mean(1).sum())
    return covered / max(total, 1), size / max(len(split), 1)
