"""Greedy search: all B sentences advance together, each taking its most likely column.

Greedy search is the stream's loop (:class:`~mtkit.search.stream.GreedyStream`): the B
sentences join one stream together, and it steps until every one has ended; those that
end leave the batch in chunks (``COMPACT``). :func:`forced_scores` scores given targets
as search would. Shapes: B sentences, M output columns, S source length, T steps. Beam
search lives in :mod:`mtkit.search.beam`; :mod:`mtkit.search` re-exports both.
"""

from __future__ import annotations

import torch

from mtkit.config import SearchOptions
from mtkit.corpus.tokenizer import BOS_ID, EOS_ID
from mtkit.search.hypothesis import COMPACT, Hypothesis, OutputColumns, StepModel, final_score
from mtkit.search.prefix import Prefixes
from mtkit.search.stream import GreedyStream

__all__ = ["forced_scores", "greedy_search"]


@torch.inference_mode()
def greedy_search(
    model: StepModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    options: SearchOptions | None = None,
    return_attention: bool = False,
    prefixes: Prefixes = None,
) -> list[list[Hypothesis]]:
    """The most likely token at every step, for B sentences: one hypothesis each.

    ``src`` (B, S) source ids ending in EOS, ``src_lengths`` (B,) with EOS; a hypothesis
    keeps its (T, S) attention when ``return_attention`` (and the model attends).
    ``prefixes[i]``: target ids that sentence i's output must begin with (None or empty:
    none; :mod:`mtkit.search.prefix`). With ``options.sampling`` each token is drawn
    instead (:mod:`mtkit.search.sampling`).
    """
    stream = GreedyStream(model, options or SearchOptions(), src.device, compact=COMPACT)
    attention = [return_attention] * src.size(0)
    tickets = stream.add_batch(src, src_lengths, attention, prefixes)
    ended = stream.finish()
    return [[ended[ticket]] for ticket in tickets]


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
