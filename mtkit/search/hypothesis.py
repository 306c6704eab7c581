"""What every search shares: the step protocol, output columns, hypotheses and their scores.

Search knows a model only through :class:`StepModel`: ``encode``, ``init_state``,
``step`` and ``output_ids``. Encoder outputs and decoder states reorder themselves
through ``select(index)``; search never looks inside them, so GRU, LSTM, ensembles and
scripted test models are searched by the same code. Log-probabilities come in output
columns (M of them); :class:`OutputColumns` maps columns to token ids and back.

The score of a finished hypothesis and the rules on what it may emit next are those of
docs/model.md ("Scores", "Length limits and constraints"). Shapes: B sentences, R rows
(sentences x beams), M output columns, S source length, t steps so far.

Both searches drop finished rows the same way (:class:`RowState`, :func:`unfinished`):
their encoder outputs, decoder states and bookkeeping leave the batch together, in
chunks, so a batch's tail does not pay for the sentences that ended early.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from mtkit.config import SearchOptions
from mtkit.corpus.tokenizer import EOS_ID

COMPACT = 0.10  # drop finished sentences once they are this share of the active batch

_State = TypeVar("_State", bound="RowState")


class StepModel(Protocol):
    """A model as search sees it (``mtkit.model.seq2seq.Seq2Seq`` is one)."""

    @property
    def output_ids(self) -> torch.Tensor:
        """(M,) the token id of each output column, sorted; it includes EOS."""
        ...

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any:
        """Source ids (B, S) ending in EOS and lengths (B,) incl. EOS -> encoder output."""
        ...

    def init_state(self, enc: Any) -> Any:
        """The decoder state before the first step."""
        ...

    def step(
        self, prev_ids: torch.Tensor, state: Any, enc: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """Previous ids (B,) -> (log-probs (B, M) in fp32, state, attention (B, S) or None)."""
        ...


@dataclass
class Hypothesis:
    """One translation: detokenized text, target ids (without EOS), score and attention."""

    text: str
    tokens: list[int]
    score: float
    # (T, S): T output steps incl. EOS, S real source positions in model order (+ EOS)
    attention: torch.Tensor | None = field(default=None, repr=False)


# Hypotheses as plain tuples, for a pipe to another process: pickling a torch tensor
# through multiprocessing moves it to shared memory, one file per tensor.
Packed = list[list[tuple[str, list[int], float, "np.ndarray | None"]]]


def pack(results: list[list[Hypothesis]]) -> Packed:
    """n-best lists as plain tuples (attention as a NumPy array)."""
    return [
        [
            (h.text, h.tokens, h.score, None if h.attention is None else h.attention.numpy())
            for h in hyps
        ]
        for hyps in results
    ]


def unpack(packed: Packed) -> list[list[Hypothesis]]:
    """The inverse of :func:`pack`."""
    return [
        [
            Hypothesis(text, tokens, score, None if att is None else torch.from_numpy(att))
            for text, tokens, score, att in hyps
        ]
        for hyps in packed
    ]


class OutputColumns:
    """Maps a model's output columns to token ids and back."""

    def __init__(self, model: StepModel, device: torch.device) -> None:
        self.ids = model.output_ids.to(device)  # (M,) sorted token ids
        self.eos = int(torch.searchsorted(self.ids, EOS_ID))  # EOS's column
        if self.eos >= len(self.ids) or int(self.ids[self.eos]) != EOS_ID:
            raise ValueError("a StepModel's output_ids must include EOS")

    def tokens(self, columns: torch.Tensor) -> torch.Tensor:
        return self.ids[columns]

    def columns(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns of token ids, and whether each token has one."""
        columns = torch.searchsorted(self.ids, tokens).clamp(max=len(self.ids) - 1)
        return columns, self.ids[columns] == tokens


def length_normalizer(length: int, options: SearchOptions) -> float:
    """Divisor of a hypothesis's log-probability; ``length`` counts its EOS."""
    if options.length_norm == "gnmt":  # Wu et al. (2016)
        return ((5.0 + length) / 6.0) ** options.length_penalty
    if options.length_norm == "average":
        return float(length) ** options.length_penalty
    return 1.0


def coverage_score(attention: torch.Tensor | None, options: SearchOptions) -> float:
    """GNMT coverage penalty: beta * sum_i log(min(sum_t a_ti, 1)) over source positions.

    ``attention`` (T, S) covers the real source positions only, never padding.
    """
    if options.coverage_penalty == 0.0 or attention is None:
        return 0.0
    coverage = attention.sum(0).clamp(min=1e-10, max=1.0)
    return options.coverage_penalty * float(coverage.log().sum())


def final_score(
    log_prob: float, length: int, attention: torch.Tensor | None, options: SearchOptions
) -> float:
    """S(Y) = log P(Y | X) / lp(|Y|) + cp(X, Y), the score every hypothesis reports."""
    return log_prob / length_normalizer(length, options) + coverage_score(attention, options)


def output_cap(options: SearchOptions, train_max_len: int) -> int:
    """``a * train_max_len + b``: the output limit of the longest training sentence.

    No training target was longer than ``data.max_len``, so a longer output is the model
    running on, and a 100,000-character input must not search for thousands of steps.
    Only inputs longer than any training sentence reach it.
    """
    return int(options.max_len_a * train_max_len) + options.max_len_b


def max_lengths(src_lengths: torch.Tensor, options: SearchOptions) -> torch.Tensor:
    """Maximum number of target tokens (before EOS): ``a * source length + b``, capped."""
    words = (src_lengths - 1).clamp(min=0).float()  # source lengths include EOS
    limits = (options.max_len_a * words + options.max_len_b).floor().long().clamp(min=1)
    return limits if options.max_len_cap is None else limits.clamp(max=options.max_len_cap)


def limit_length(
    log_probs: torch.Tensor, step: int, limits: torch.Tensor, min_len: int, eos: int
) -> None:
    """In place on (R, M): no EOS before ``min_len``; only EOS once a row reaches its limit."""
    if step < min_len:
        log_probs[:, eos] = float("-inf")
    force_eos(log_probs, limits <= step, eos)


def force_eos(log_probs: torch.Tensor, at_limit: torch.Tensor, eos: int) -> None:
    """In place on (R, M): rows ``at_limit`` (R,) may emit only EOS, at its log-prob
    (0 where ``min_len`` has blocked it: the limit wins)."""
    if bool(at_limit.any()):
        eos_scores = log_probs[:, eos].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[at_limit, eos] = eos_scores[at_limit].nan_to_num(neginf=0.0)


def block_repeats(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """In place on (R, M): forbid any column that would repeat an n-gram of ``history`` (R, t)."""
    length = history.size(1)
    if n <= 0 or length < n:
        return
    windows = history.unfold(1, n, 1)  # (R, W, n)
    prefix = history[:, length - n + 1 :] if n > 1 else history[:, :0]  # (R, n-1)
    matches = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(-1)  # (R, W)
    rows, positions = matches.nonzero(as_tuple=True)
    if len(rows):
        log_probs[rows, windows[rows, positions, n - 1]] = float("-inf")


class RowState:
    """Search bookkeeping, as a dataclass with one entry per row (R) in every field.

    A field is a tensor (rows first), a list, None, or a model part that reorders itself
    with ``select`` (encoder outputs, decoder states). :meth:`keep` picks the same rows
    of every field, so a field added later cannot be left out of the compaction.
    """

    def keep(self: _State, rows: torch.Tensor) -> _State:
        """The rows ``rows`` (R',) of every field, in that order."""
        kept = copy.copy(self)
        chosen: list[int] | None = None
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                value = value.index_select(0, rows)
            elif isinstance(value, list):
                chosen = rows.tolist() if chosen is None else chosen
                value = [value[i] for i in chosen]
            elif value is not None:
                value = value.select(rows)
            setattr(kept, name, value)
        return kept


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    """The field names of dataclass ``kind`` (looked up once: compaction is frequent)."""
    if kind not in _FIELD_NAMES:
        _FIELD_NAMES[kind] = tuple(item.name for item in dataclasses.fields(kind))
    return _FIELD_NAMES[kind]


def unfinished(done: torch.Tensor, share: float = COMPACT) -> torch.Tensor | None:
    """The rows to keep (R',) once the finished rows ``done`` (R,) should leave, else None.

    Dropping rows copies every encoder output and state, so they leave together once
    they are ``share`` of the rows (0: at once, asked only once some row has finished);
    until then they stay in the batch and search ignores what they emit.
    """
    if share and int(done.sum()) < share * done.size(0):
        return None
    return (~done).nonzero().squeeze(1)
