"""Greedy and beam search over a model's step function, batched over sentences and beams.

The search only knows the step API (:class:`StepModel`): ``encode``, ``init_state`` and
``step``, with encoder outputs and decoder states that reorder themselves through
``select(index)``. It never looks inside a state, so GRU, LSTM and scripted test models
are searched by the same code.

Beams live in fixed-shape (B, K) tensors. A hypothesis that emits EOS is moved to its
sentence's finished list (never dropped); a sentence is done once it holds K finished
hypotheses or reaches its maximum length, where EOS is forced. Shapes: B sentences,
K beams, V vocabulary, S source length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from mtkit.tokenizer import BOS_ID, EOS_ID


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
    attention: torch.Tensor | None = field(default=None, repr=False)  # (T, S), T incl. EOS


def length_normalizer(length: int, options: SearchOptions) -> float:
    """Divisor of a hypothesis's log-probability; ``length`` counts its EOS."""
    if options.length_norm == "gnmt":  # Wu et al. (2016)
        return ((5.0 + length) / 6.0) ** options.length_penalty
    if options.length_norm == "average":
        return float(length) ** options.length_penalty
    return 1.0


def coverage_score(attention: torch.Tensor | None, options: SearchOptions) -> float:
    """GNMT coverage penalty: beta * sum_i log(min(sum_t a_ti, 1)) over source positions."""
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


def _constrain(log_probs: torch.Tensor, step: int, limits: torch.Tensor, min_len: int) -> None:
    """In place: no EOS before ``min_len``; only EOS once a row reaches its limit."""
    if step < min_len:
        log_probs[:, EOS_ID] = float("-inf")
    at_limit = limits <= step
    if bool(at_limit.any()):
        eos_column = log_probs[:, EOS_ID].clone()
        log_probs[at_limit] = float("-inf")
        log_probs[at_limit, EOS_ID] = eos_column[at_limit].nan_to_num(neginf=0.0)


def _block_repeats(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """In place: forbid any token that would repeat an n-gram already in the row's history."""
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
    batch = src.size(0)
    enc = model.encode(src, src_lengths)
    state = model.init_state(enc)
    limits = max_lengths(src_lengths, options).to(src.device)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    totals = torch.zeros(batch, dtype=torch.float32, device=src.device)
    lengths = torch.zeros(batch, dtype=torch.long, device=src.device)
    tokens: list[torch.Tensor] = []
    attentions: list[torch.Tensor] = []
    for t in range(int(limits.max()) + 1):
        log_probs, state, attention = model.step(prev, state, enc)
        _constrain(log_probs, t, limits, options.min_len)
        if options.no_repeat_ngram and tokens:
            _block_repeats(log_probs, torch.stack(tokens, 1), options.no_repeat_ngram)
        best_lp, best = log_probs.max(dim=-1)
        best = best.masked_fill(done, EOS_ID)
        totals += best_lp.masked_fill(done, 0.0)
        lengths += (~done).long()
        tokens.append(best)
        if return_attention and attention is not None:
            attentions.append(attention.float())
        done |= best == EOS_ID
        prev = best
        if bool(done.all()):
            break
    token_matrix = torch.stack(tokens, 1).tolist()
    attention_all = torch.stack(attentions, 1).cpu() if attentions else None  # (B, T, S)
    results = []
    for b in range(batch):
        length = int(lengths[b])
        attention_b = None if attention_all is None else attention_all[b, :length]
        results.append(
            Hypothesis(
                "",
                token_matrix[b][: length - 1],
                final_score(float(totals[b]), length, attention_b, options),
                attention_b,
            )
        )
    return results


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
    keep_attention = return_attention or options.coverage_penalty != 0.0
    enc = model.encode(src, src_lengths)
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # (B*K,)
    enc = enc.select(rows)
    state = model.init_state(enc)
    limits = max_lengths(src_lengths, options).to(device).repeat_interleave(k)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # only the first beam is live at the start
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)
    attn_history: torch.Tensor | None = None  # (B*K, t, S)
    prev = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int], torch.Tensor | None]]] = [[] for _ in range(batch)]
    sentence_done = torch.zeros(batch, dtype=torch.bool, device=device)
    for t in range(int(limits.max()) + 1):
        log_probs, state, attention = model.step(prev, state, enc)  # (B*K, V)
        log_probs = log_probs.float()
        _constrain(log_probs, t, limits, options.min_len)
        if options.no_repeat_ngram:
            _block_repeats(log_probs, history, options.no_repeat_ngram)
        vocab = log_probs.size(-1)
        candidates = (scores.unsqueeze(-1) + log_probs.view(batch, k, vocab)).view(batch, -1)
        top_scores, top_ids = candidates.topk(2 * k, dim=-1)  # (B, 2K)
        top_beams, top_tokens = top_ids // vocab, top_ids % vocab
        if keep_attention and attention is not None:
            step_attn = attention.float().unsqueeze(1)
            attn_history = (
                step_attn if attn_history is None else torch.cat([attn_history, step_attn], 1)
            )
        _finalize(
            finished,
            top_scores,
            top_beams,
            top_tokens,
            history,
            attn_history,
            sentence_done,
            k,
            t,
            options,
        )
        sentence_done |= torch.tensor([len(f) >= k for f in finished], device=device)
        if bool(sentence_done.all()):
            break
        # The K best continuations that do not end in EOS stay on the beam.
        alive_rank = (top_tokens == EOS_ID).float() * 1e4 + torch.arange(
            2 * k, device=device
        ).float()
        keep = alive_rank.topk(k, dim=-1, largest=False).indices  # (B, K)
        scores = top_scores.gather(1, keep).masked_fill(
            sentence_done.unsqueeze(1) | (top_tokens.gather(1, keep) == EOS_ID), float("-inf")
        )
        origin = (
            top_beams.gather(1, keep) + torch.arange(batch, device=device).unsqueeze(1) * k
        ).view(-1)
        prev = top_tokens.gather(1, keep).view(-1)
        history = torch.cat([history.index_select(0, origin), prev.unsqueeze(1)], 1)
        if attn_history is not None:
            attn_history = attn_history.index_select(0, origin)
        state = state.select(origin)
    return [_best(f, options.nbest, return_attention) for f in finished]


def _finalize(
    finished: list[list[tuple[float, list[int], torch.Tensor | None]]],
    top_scores: torch.Tensor,
    top_beams: torch.Tensor,
    top_tokens: torch.Tensor,
    history: torch.Tensor,
    attn_history: torch.Tensor | None,
    sentence_done: torch.Tensor,
    k: int,
    step: int,
    options: SearchOptions,
) -> None:
    """Move EOS candidates ranked within the top K of their sentence to ``finished``."""
    is_eos = (top_tokens[:, :k] == EOS_ID) & torch.isfinite(top_scores[:, :k])
    is_eos &= ~sentence_done.unsqueeze(1)
    if not bool(is_eos.any()):
        return
    for b, rank in is_eos.nonzero().tolist():
        if len(finished[b]) >= k:
            continue
        row = b * k + int(top_beams[b, rank])
        attention = None if attn_history is None else attn_history[row].cpu()
        score = final_score(float(top_scores[b, rank]), step + 1, attention, options)
        finished[b].append((score, history[row].tolist(), attention))


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
    """The score search would report for each given target (pieces, without EOS)."""
    options = options or SearchOptions()
    enc = model.encode(src, src_lengths)
    state = model.init_state(enc)
    steps = max(len(t) for t in targets) + 1
    padded = torch.full((len(targets), steps), EOS_ID, dtype=torch.long, device=src.device)
    for row, target in enumerate(targets):
        padded[row, : len(target)] = torch.tensor(target, dtype=torch.long)
    prev = torch.full((len(targets),), BOS_ID, dtype=torch.long, device=src.device)
    totals = [0.0] * len(targets)
    attentions: list[list[torch.Tensor]] = [[] for _ in targets]
    for t in range(steps):
        log_probs, state, attention = model.step(prev, state, enc)
        picked = log_probs.float().gather(1, padded[:, t : t + 1]).squeeze(1).tolist()
        for row, target in enumerate(targets):
            if t <= len(target):
                totals[row] += picked[row]
                if attention is not None:
                    attentions[row].append(attention[row].float().cpu())
        prev = padded[:, t]
    results = []
    for row, target in enumerate(targets):
        attention = torch.stack(attentions[row]) if attentions[row] else None
        results.append(final_score(totals[row], len(target) + 1, attention, options))
    return results
