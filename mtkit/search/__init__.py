"""Search over a model's step function: greedy search, beam search and forced decoding.

The public face of search::

    from mtkit.search import SearchOptions, beam_search, greedy_search, forced_scores

Both searches take a :class:`StepModel` (see :mod:`mtkit.search.hypothesis`), source ids
(B, S) and lengths (B,), and return ``list[list[Hypothesis]]``: for each sentence its
hypotheses, best first (greedy search: exactly one).
"""

from mtkit.config import SearchOptions
from mtkit.search.beam import beam_search
from mtkit.search.greedy import forced_scores, greedy_search
from mtkit.search.hypothesis import Hypothesis, StepModel

__all__ = [
    "Hypothesis",
    "SearchOptions",
    "StepModel",
    "beam_search",
    "forced_scores",
    "greedy_search",
]
