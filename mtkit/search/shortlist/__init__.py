"""Lexical shortlists: decode over the output columns a sentence's source pieces suggest.

Building (``python -m mtkit.shortlist CKPT -o OUT.pt [data overrides]``,
:mod:`mtkit.search.shortlist.table`): for each source piece, the ``k`` target pieces of
highest Dice score over the training pairs, besides the ``frequent`` most frequent target
pieces that every sentence may use; the table is stored under the checkpoint's
``shortlist`` key.

Using (:class:`Shortlisted`, :mod:`mtkit.search.shortlist.step`): a StepModel wrapping a
Seq2Seq, as Marian does on CPUs, whose steps score only the columns each sentence's
shortlist allows. A sentence's result never depends on its batch, and with every column
allowed it equals the plain model's.
"""

from __future__ import annotations

from mtkit.search.shortlist.step import (
    GROUP_ROWS,
    Shortlisted,
    ShortlistEncoding,
    coverage,
    with_shortlist,
)
from mtkit.search.shortlist.table import Shortlist, build_shortlist

__all__ = [
    "GROUP_ROWS",
    "Shortlist",
    "ShortlistEncoding",
    "Shortlisted",
    "build_shortlist",
    "coverage",
    "with_shortlist",
]
