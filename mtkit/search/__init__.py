"""Search over a model's step function: greedy search, beam search and forced decoding.

The public face of search::

    from mtkit.search import SearchOptions, beam_search, greedy_search, forced_scores

Both searches take a :class:`StepModel` (see :mod:`mtkit.search.hypothesis`), source ids
(B, S) and lengths (B,), and return ``list[list[Hypothesis]]``: for each sentence its
hypotheses, best first (greedy search: exactly one). Both take ``prefixes``, target ids
that each output must begin with (:mod:`mtkit.search.prefix`); greedy search draws each
token instead of taking the best when ``options.sampling`` (:mod:`mtkit.search.sampling`).

Names are imported on first use: importing a module of this package (the decoding pool's
launcher, say) must not load torch before it has to, so that helper processes start while
the parent is still loading it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Hypothesis": "mtkit.search.hypothesis",
    "SearchOptions": "mtkit.config",
    "StepModel": "mtkit.search.hypothesis",
    "beam_search": "mtkit.search.beam",
    "forced_scores": "mtkit.search.greedy",
    "greedy_search": "mtkit.search.greedy",
}

__all__ = [
    "Hypothesis",
    "SearchOptions",
    "StepModel",
    "beam_search",
    "forced_scores",
    "greedy_search",
]

if TYPE_CHECKING:
    from mtkit.config import SearchOptions
    from mtkit.search.beam import beam_search
    from mtkit.search.greedy import forced_scores, greedy_search
    from mtkit.search.hypothesis import Hypothesis, StepModel


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtkit.search' has no attribute {name!r}")
