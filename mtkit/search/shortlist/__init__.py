"""Lexical shortlists: decode over the output columns a sentence's source pieces suggest.

Building (``python -m mtkit.shortlist CKPT -o OUT.pt [data overrides]``): count, over
the training pairs, in how many pairs each source piece s and target piece t occur
together; keep for each source piece the ``k`` targets of highest Dice score
``2 c(s, t) / (c(s) + c(t))`` seen together at least ``MIN_COUNT`` times, besides the
``frequent`` most frequent target pieces, which every sentence may always use (with EOS
and UNK). The table is a few int32 tensors under the checkpoint's ``shortlist`` key.
Counting streams over the pairs in chunks and keeps only the (s, t) pairs seen, so
memory grows with their number; only the first ``max_pairs`` pairs are counted.

Dice was chosen by measurement: at the same allowed-set size it covers the validation
references about as well as p(t | s) (the frequent pieces set aside) and better than a
smoothed PMI; a count floor of 2 keeps one-off pairings out.

Using (:class:`Shortlisted`, a StepModel wrapping a Seq2Seq, as Marian does on CPUs):
``encode`` also works out each sentence's allowed columns, and ``step`` computes logits,
for each group of ``GROUP_ROWS`` rows, over the union of the group's allowed columns
only, masks each row to its own set and log-softmaxes over it. A sentence's result
therefore never depends on its batch, and with every column allowed it equals the plain
model's. Shapes: B sentences (rows), S source length, M output columns, R rows in a
group, U columns in its union, H features, k candidates per source piece.
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
