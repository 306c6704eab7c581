"""Prefix-forced decoding: each sentence's output begins with given target pieces.

As Marian's ``--force-decode`` and OpenNMT-py's ``tgt_prefix``: greedy and beam search
(and the greedy stream, hence sampling too) take one prefix of target ids per sentence
and continue it. While a row's step t is below its prefix's length, the prefix's t-th
piece is the only column allowed: every other column is -inf and the forced one keeps the
model's log-probability. A forced piece therefore counts in the score, which equals
:func:`~mtkit.search.greedy.forced_scores` of the output, prefix included.

The rules where a prefix meets the other options:

- a prefix longer than a sentence's length limit raises that limit to the prefix's
  length: the output is the prefix, then EOS;
- ``min_len`` and ``no_repeat_ngram`` do not block a forced piece (the caller asked for
  it); they count the prefix and apply to what follows it;
- a prefix may not hold EOS, and each piece needs an output column (a model whose output
  vocabulary was narrowed to the training targets may lack one): else a ValueError naming
  the sentence and the piece, before anything is searched;
- a forced piece the model gives probability 0 (one outside a sentence's lexical
  shortlist) is a ValueError when search reaches it, naming the sentence (the
  Translator checks shortlists before searching, with line numbers).

Rows hold their prefix as output columns in a (R, P) table, -1 past each prefix's end;
search drops the table once every row is past its prefix, so later steps pay nothing.
Shapes: R rows, M output columns, P the longest prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mtkit.corpus.batching import pad_sequences
from mtkit.corpus.tokenizer import EOS_ID, UNK_ID, TextCodec
from mtkit.errors import ConfigError
from mtkit.search.hypothesis import OutputColumns, StepModel

Prefixes = Sequence[Sequence[int] | None] | None  # one list of target ids per sentence


class PrefixError(ConfigError):
    """A prefix given as text cannot be forced; the message names its line."""


def prefix_table(prefixes: Prefixes, out: OutputColumns, count: int) -> torch.Tensor | None:
    """The prefixes' output columns (B, P), -1 past each prefix's end; None when no
    sentence has a prefix piece. A ValueError for a wrong count, EOS or a piece without
    an output column, naming the sentence (0-based) and the piece."""
    if prefixes is None:
        return None
    if len(prefixes) != count:
        raise ValueError(f"{len(prefixes)} prefixes for {count} sentences; expected one each")
    width = max((len(p) for p in prefixes if p), default=0)
    if not width:
        return None
    ids = torch.full((count, width), EOS_ID, dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        if prefix:
            ids[row, : len(prefix)] = torch.tensor(list(prefix), dtype=torch.long)
    ids = ids.to(out.ids.device)
    lengths = torch.tensor([len(p) if p else 0 for p in prefixes], device=ids.device)
    real = torch.arange(width, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)
    columns, known = out.columns(ids)
    _check(prefixes, real & (ids == EOS_ID), "holds EOS, which may not be forced")
    _check(prefixes, real & ~known, "has no output column in this model")
    return columns.masked_fill(~real, -1)


def encode_prefixes(
    codec: TextCodec, prefix: Sequence[str | None], count: int, model: StepModel
) -> list[list[int]]:
    """Each text's prefix as target ids (no EOS; [] for "" or None), checked: one prefix
    per text, every piece known to the target sentencepiece model and written by
    ``model``. Else a one-line PrefixError naming the 1-based line."""
    if isinstance(prefix, str) or len(prefix) != count:
        given = "a string" if isinstance(prefix, str) else f"{len(prefix)}"
        raise PrefixError(f"prefix: expected one per text ({count}), got {given}")
    texts = [(p or "").strip() for p in prefix]
    ids = codec.encode_target(texts)
    writable = set(model.output_ids.tolist())
    for line, (text, pieces) in enumerate(zip(texts, ids, strict=True), start=1):
        if UNK_ID in pieces:
            raise PrefixError(
                f"prefix of line {line} ({text!r}): the target sentencepiece model does not "
                "know some of its characters"
            )
        missing = [p for p in pieces if p not in writable]
        if missing:
            piece = codec.tgt.id_to_piece(missing[0])
            raise PrefixError(
                f"prefix of line {line} ({text!r}): the model never writes its piece "
                f"{piece!r} (not in its output vocabulary)"
            )
    return ids


def check_shortlist(
    model: object, sources: list[list[int]], prefixes: list[list[int]], lines: list[int]
) -> None:
    """For a model decoding through a lexical shortlist: every prefix piece must be in
    its sentence's shortlist, else a one-line PrefixError naming the line (``lines``, one
    per source). Checked for all sentences before any is searched."""
    from mtkit.search.shortlist import Shortlisted  # the corpus code: only when asked

    if not isinstance(model, Shortlisted):
        return
    out = OutputColumns(model, model.base.device)
    for start in range(0, len(sources), 256):
        chunk = range(start, min(start + 256, len(sources)))
        src, _ = pad_sequences([sources[i] for i in chunk])
        allowed = model.allowed(src.to(model.base.device))  # (C, M)
        for row, i in enumerate(chunk):
            if not prefixes[i]:
                continue
            columns, _ = out.columns(torch.tensor(prefixes[i], device=allowed.device))
            if not bool(allowed[row, columns].all()):
                raise PrefixError(
                    f"prefix of line {lines[i]}: a piece is outside the sentence's lexical "
                    "shortlist, so the model cannot write it; translate without --shortlist"
                )


def prefix_lengths(table: torch.Tensor) -> torch.Tensor:
    """(B,) the number of pieces in each row's prefix."""
    return (table >= 0).sum(1)


def _check(prefixes: Sequence[Sequence[int] | None], bad: torch.Tensor, what: str) -> None:
    """A ValueError naming the first sentence with a ``bad`` (B, P) piece and the piece."""
    if bool(bad.any()):
        row, position = (int(i) for i in bad.nonzero()[0])
        piece = list(prefixes[row] or [])[position]
        raise ValueError(f"the prefix of sentence {row}: piece id {piece} {what}")


def cat_tables(
    first: torch.Tensor | None, rows: int, second: torch.Tensor | None, more: int
) -> torch.Tensor | None:
    """``first``'s ``rows`` rows, then ``second``'s ``more``; a missing table is rows
    without a prefix, and the narrower one is padded with -1."""
    if first is None and second is None:
        return None
    width = max(0 if t is None else t.size(1) for t in (first, second))
    device = (first if first is not None else second).device  # type: ignore[union-attr]
    joined = torch.full((rows + more, width), -1, dtype=torch.long, device=device)
    if first is not None:
        joined[:rows, : first.size(1)] = first
    if second is not None:
        joined[rows:, : second.size(1)] = second
    return joined


@dataclass
class Forced:
    """The rows forced at one step and the forced column's log-prob, taken from the
    model's output before any constraint (so none can block it)."""

    rows: torch.Tensor  # (R, 1) bool: forced at this step
    columns: torch.Tensor  # (R, 1) the forced column (0 where not forced)
    log_probs: torch.Tensor  # (R, 1) the model's log-prob of it
    impossible: int | None  # the first live row forced to a column of probability 0

    @classmethod
    def at(
        cls,
        table: torch.Tensor,
        steps: torch.Tensor | int,
        log_probs: torch.Tensor,
        live: torch.Tensor | None = None,
    ) -> Forced | None:
        """The rows whose prefix (``table`` (R, P)) forces their step ``steps`` ((R,), or
        one step for all), else None: no row is forced any more. One sync.

        ``live`` (R,): the rows whose probability counts (beam search's dead beams, at
        -inf already, may meet a forced piece of probability 0; None: every row)."""
        width = table.size(1)
        if isinstance(steps, int):
            if steps >= width:
                return None
            columns = table[:, steps : steps + 1]
        else:
            columns = table.gather(1, steps.clamp(max=width - 1).unsqueeze(1))
            columns = columns.masked_fill((steps >= width).unsqueeze(1), -1)
        rows = columns >= 0
        columns = columns.clamp(min=0)
        values = log_probs.gather(1, columns)
        zero = rows & values.isneginf()
        if live is not None:
            zero &= live.unsqueeze(1)
        any_forced, any_zero = torch.stack([rows.any(), zero.any()]).tolist()
        if not any_forced:
            return None
        return cls(rows, columns, values, int(zero.nonzero()[0, 0]) if any_zero else None)

    def apply(self, log_probs: torch.Tensor) -> None:
        """In place on (R, M): forced rows may emit only their column, at its log-prob."""
        kept = torch.where(self.rows, self.log_probs, log_probs.gather(1, self.columns))
        log_probs.masked_fill_(self.rows, float("-inf"))
        log_probs.scatter_(1, self.columns, kept)


def impossible(sentence: int) -> ValueError:
    """The error for a sentence whose prefix forces a piece of probability 0."""
    return ValueError(
        f"the prefix of sentence {sentence} forces a piece of probability 0 under the model "
        "(outside its lexical shortlist?)"
    )
