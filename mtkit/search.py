"""Greedy and beam search over a model's step function, batched over sentences and beams.

The search only knows the step API (:class:`StepModel`): ``encode``, ``init_state`` and
``step``, with encoder outputs and decoder states that reorder themselves through
``select(index)``. It never looks inside a state, so GRU, LSTM and scripted test models
are searched by the same code. A model whose output layer covers only part of the
vocabulary says so with an ``output_ids`` tensor (column -> token id); search works in
columns and hands token ids to ``step`` and to the caller.

Beams live in fixed-shape (B, K) tensors. A hypothesis that emits EOS is moved to its
sentence's finished list (never dropped); a sentence is done once it holds K finished
hypotheses or reaches its maximum length, where EOS is forced. Finished sentences are
dropped from the batch in chunks (``_COMPACT``), so the tail of a batch does not pay for
the sentences that ended early. Shapes: B sentences, A active sentences, K beams,
M output columns, S source length, T steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mtkit.tokenizer import BOS_ID, EOS_ID

_COMPACT = 0.10  # drop finished sentences once they are this share of the active batch


class StepModel(Protocol):
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any: ...

    def init_state(self, enc: Any) -> Any: ...

    def step(
        self, prev_ids: torch.Tensor, state: Any, enc: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]: ...


@dataclass
class SearchOptions:
    """Search settings (the ``decode`` config group carries the same names)."""

    beam_size: int = 5
    nbest: int = 1
    length_norm: str = "gnmt"  # none | average | gnmt
    length_penalty: float = 0.6
    max_len_a: float = 1.5
    max_len_b: int = 10
    min_len: int = 0
    coverage_penalty: float = 0.0
    no_repeat_ngram: int = 0


@dataclass
class Hypothesis:
    """One translation: detokenized text, target ids (without EOS), score and attention."""

    text: str
    tokens: list[int]
    score: float
    # (T, S): T output steps incl. EOS, S real source positions in model order (+ EOS)
    attention: torch.Tensor | None = field(default=None, repr=False)


class OutputColumns:
    """Maps a model's output columns to token ids (identity when it covers every id)."""

    def __init__(self, model: StepModel, device: torch.device) -> None:
        ids = getattr(model, "output_ids", None)
        self.ids = None if ids is None else ids.to(device)
        self.eos = EOS_ID if self.ids is None else int(torch.searchsorted(self.ids, EOS_ID))

    def tokens(self, columns: torch.Tensor) -> torch.Tensor:
        return columns if self.ids is None else self.ids[columns]

    def columns(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns of token ids, and whether each token has one."""
        if self.ids is None:
            return tokens, torch.ones_like(tokens, dtype=torch.bool)
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
    return log_prob / length_normalizer(length, options) + coverage_score(attention, options)


def max_lengths(src_lengths: torch.Tensor, options: SearchOptions) -> torch.Tensor:
    """Maximum number of target tokens (before EOS): ``a * source length + b``."""
    words = (src_lengths - 1).clamp(min=0).float()  # source lengths include EOS
    return (options.max_len_a * words + options.max_len_b).floor().long().clamp(min=1)


def _constrain(
    log_probs: torch.Tensor, step: int, limits: torch.Tensor, min_len: int, eos: int
) -> None:
    """In place: no EOS before ``min_len``; only EOS once a row reaches its limit."""
    if step < min_len:
        log_probs[:, eos] = float("-inf")
    at_limit = limits <= step
    if bool(at_limit.any()):
        eos_scores = log_probs[:, eos].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[at_limit, eos] = eos_scores[at_limit].nan_to_num(neginf=0.0)


def _block_repeats(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """In place: forbid any column that would repeat an n-gram already in the row's history."""
    length = history.size(1)
    if n <= 0 or length < n:
        return
    windows = history.unfold(1, n, 1)  # (R, W, n)
    prefix = history[:, length - n + 1 :] if n > 1 else history[:, :0]  # (R, n-1)
    matches = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(-1)  # (R, W)
    rows, positions = matches.nonzero(as_tuple=True)
    if len(rows):
        log_probs[rows, windows[rows, positions, n - 1]] = float("-inf")


@torch.inference_mode()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    return_attention: bool = False,
) -> list[Hypothesis]:
    """The most likely token at every step, for a batch of B sentences."""
    options = options or SearchOptions()
    batch, device = src.size(0), src.device
    out = OutputColumns(model, device)
    enc = model.encode(src, src_lengths)
    state = model.init_state(enc)
    limits_all = max_lengths(src_lengths, options).to(device)
    steps = int(limits_all.max()) + 1
    chosen = torch.full((batch, steps), out.eos, dtype=torch.long, device=device)  # columns
    totals = torch.zeros(batch, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    attention_all: torch.Tensor | None = None  # (B, T, S)
    active = torch.arange(batch, device=device)  # original rows still decoding
    done = torch.zeros(batch, dtype=torch.bool, device=device)  # over active rows
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(steps):
        log_probs, state, attention = model.step(prev, state, enc)  # (A, M)
        _constrain(log_probs, t, limits_all[active], options.min_len, out.eos)
        if options.no_repeat_ngram and t:
            _block_repeats(log_probs, chosen[active, :t], options.no_repeat_ngram)
        best_lp, best = log_probs.max(dim=-1)
        live = ~done
        best = best.masked_fill(done, out.eos)
        totals[active] += best_lp.masked_fill(done, 0.0)
        lengths[active] += live.long()
        chosen[active, t] = best
        if return_attention and attention is not None:
            if attention_all is None:
                attention_all = torch.zeros(batch, steps, attention.size(-1), device=device)
            attention_all[active, t] = attention.float() * live.unsqueeze(1)
        done |= best == out.eos
        if bool(done.all()):
            break
        prev = out.tokens(best)
        if int(done.sum()) >= _COMPACT * len(done):
            keep = (~done).nonzero().squeeze(1)
            active, done, prev = active[keep], done[keep], prev[keep]
            enc, state = enc.select(keep), state.select(keep)
    token_matrix = out.tokens(chosen).tolist()
    attention_cpu = None if attention_all is None else attention_all.cpu()
    source_lengths = src_lengths.tolist()
    results = []
    for b in range(batch):
        length = int(lengths[b])
        attention_b = (
            None if attention_cpu is None else attention_cpu[b, :length, : source_lengths[b]]
        )
        score = final_score(float(totals[b]), length, attention_b, options)
        results.append(Hypothesis("", token_matrix[b][: length - 1], score, attention_b))
    return results


@dataclass
class _Beams:
    """The live part of a beam search: A active sentences x K beams."""

    sentences: list[int]  # original index of each active sentence
    scores: torch.Tensor  # (A, W) cumulative log-probs, -inf for dead beams; W = 1, then K
    history: torch.Tensor  # (A*W, t) columns chosen so far
    attention: torch.Tensor | None  # (A*W, t, S)
    limits: torch.Tensor  # (A*W,) maximum lengths
    source_lengths: torch.Tensor  # (A*W,) real source positions (attention columns)
    state: Any
    enc: Any

    def select_rows(self, rows: torch.Tensor) -> None:
        """Reorder beams: row r of the new beam is row ``rows[r]`` of the old one."""
        self.history = self.history.index_select(0, rows)
        if self.attention is not None:
            self.attention = self.attention.index_select(0, rows)
        self.state = self.state.select(rows)

    def widen(self, k: int) -> None:
        """From one beam per sentence to K: repeat what every beam of a sentence shares."""
        rows = torch.arange(len(self.sentences), device=self.limits.device).repeat_interleave(k)
        self.enc = self.enc.select(rows)
        self.limits, self.source_lengths = self.limits[rows], self.source_lengths[rows]

    def keep_sentences(self, keep: torch.Tensor, k: int) -> None:
        """Drop finished sentences: ``keep`` indexes the active sentences to retain."""
        rows = (keep.unsqueeze(1) * k + torch.arange(k, device=keep.device)).view(-1)
        self.sentences = [self.sentences[i] for i in keep.tolist()]
        self.scores = self.scores[keep]
        self.limits, self.source_lengths = self.limits[rows], self.source_lengths[rows]
        self.enc = self.enc.select(rows)
        self.select_rows(rows)


@torch.inference_mode()
def beam_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of each of B sentences, best first."""
    options = options or SearchOptions()
    batch, k, device = src.size(0), options.beam_size, src.device
    out = OutputColumns(model, device)
    keep_attention = return_attention or options.coverage_penalty != 0.0
    enc = model.encode(src, src_lengths)
    # Every sentence starts with one beam (width 1); after the first step it has K.
    beams = _Beams(
        sentences=list(range(batch)),
        scores=torch.zeros(batch, 1, device=device),
        history=torch.empty(batch, 0, dtype=torch.long, device=device),
        attention=None,
        limits=max_lengths(src_lengths, options).to(device),
        source_lengths=src_lengths.to(device),
        state=model.init_state(enc),
        enc=enc,
    )
    finished: list[list[tuple[float, list[int], torch.Tensor | None]]] = [[] for _ in range(batch)]
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    for t in range(int(beams.limits.max()) + 1):
        log_probs, beams.state, attention = model.step(prev, beams.state, beams.enc)
        log_probs = log_probs.float()  # (A*W, M)
        _constrain(log_probs, t, beams.limits, options.min_len, out.eos)
        if options.no_repeat_ngram:
            _block_repeats(log_probs, beams.history, options.no_repeat_ngram)
        # The 2K best of a sentence's W*M continuations lie among each beam's own 2K best:
        # pick those per row first, so only (A, W*2K) candidates are ranked, not (A, W*M).
        active, width = beams.scores.shape
        row_scores, row_columns = log_probs.topk(2 * k, dim=-1)  # (A*W, 2K)
        candidates = (beams.scores.unsqueeze(-1) + row_scores.view(active, width, 2 * k)).view(
            active, -1
        )
        top_scores, top_ids = candidates.topk(2 * k, dim=-1)  # (A, 2K)
        top_beams = top_ids // (2 * k)
        top_columns = row_columns.view(active, -1).gather(1, top_ids)
        if keep_attention and attention is not None:
            step_attention = attention.float().unsqueeze(1)
            beams.attention = (
                step_attention
                if beams.attention is None
                else torch.cat([beams.attention, step_attention], 1)
            )
        _finalize(finished, beams, top_scores, top_beams, top_columns, k, t, out, options)
        done = torch.tensor([len(finished[s]) >= k for s in beams.sentences], device=device)
        if bool(done.all()):
            break
        # The K best continuations that do not end in EOS stay on the beam.
        ends = top_columns == out.eos
        rank = ends.float() * 1e4 + torch.arange(2 * k, device=device).float()
        keep = rank.topk(k, dim=-1, largest=False).indices  # (A, K)
        beams.scores = top_scores.gather(1, keep).masked_fill(
            done.unsqueeze(1) | ends.gather(1, keep), float("-inf")
        )
        origin = (
            top_beams.gather(1, keep) + torch.arange(active, device=device).unsqueeze(1) * width
        )
        chosen = top_columns.gather(1, keep).view(-1)
        beams.select_rows(origin.view(-1))
        if width == 1:
            beams.widen(k)
        beams.history = torch.cat([beams.history, chosen.unsqueeze(1)], 1)
        prev = out.tokens(chosen)
        if int(done.sum()) >= _COMPACT * active:
            keep_sentences = (~done).nonzero().squeeze(1)
            beams.keep_sentences(keep_sentences, k)
            prev = prev.view(active, k)[keep_sentences].view(-1)
    return [_best(f, options.nbest, return_attention) for f in finished]


def _finalize(
    finished: list[list[tuple[float, list[int], torch.Tensor | None]]],
    beams: _Beams,
    top_scores: torch.Tensor,
    top_beams: torch.Tensor,
    top_columns: torch.Tensor,
    k: int,
    step: int,
    out: OutputColumns,
    options: SearchOptions,
) -> None:
    """Move EOS candidates ranked within the top K of their sentence to ``finished``."""
    is_eos = (top_columns[:, :k] == out.eos) & torch.isfinite(top_scores[:, :k])
    if not bool(is_eos.any()):
        return
    active, ranks = is_eos.nonzero(as_tuple=True)  # sentence-major, best rank first
    rows = active * beams.scores.size(1) + top_beams[active, ranks]
    # One transfer for all hypotheses that end here, not one per hypothesis.
    scores = top_scores[active, ranks].tolist()
    histories = out.tokens(beams.history[rows]).tolist()
    for j, (a, row) in enumerate(zip(active.tolist(), rows.tolist(), strict=True)):
        sentence = finished[beams.sentences[a]]
        if len(sentence) >= k:
            continue
        attention = None
        if beams.attention is not None:
            attention = beams.attention[row, :, : int(beams.source_lengths[row])].cpu()
        score = final_score(scores[j], step + 1, attention, options)
        sentence.append((score, histories[j], attention))


def _best(
    finished: list[tuple[float, list[int], torch.Tensor | None]], nbest: int, with_attention: bool
) -> list[Hypothesis]:
    ranked = sorted(finished, key=lambda item: -item[0])[:nbest]
    return [
        Hypothesis("", tokens, score, attention if with_attention else None)
        for score, tokens, attention in ranked
    ]


@torch.inference_mode()
def forced_scores(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    targets: list[list[int]],
    options: SearchOptions | None = None,
) -> list[float]:
    """The score search would report for each given target (pieces, without EOS).

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
