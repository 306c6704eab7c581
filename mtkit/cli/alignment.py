"""Word alignments from attention, in Marian's convention (``--alignment``).

Positions are sentencepiece piece positions, 0-based: source pieces in reading order
(also for a model that reads its source reversed: :meth:`Translator.source_axis` undoes
it), target pieces in output order. A pair ``s-t`` links source piece s to target piece
t; pairs are sorted by source, then target position, as Marian writes them.

- ``hard``: each target piece is linked to the source piece it attends to most;
- a threshold ``p`` in (0, 1]: each target piece is linked to every source piece whose
  weight is at least ``p`` (none, one or several);
- ``soft``: the whole attention matrix, one row per target piece, ``</s>`` included,
  one comma-separated weight per source piece, ``</s>`` included: rows are separated by
  spaces.

Hard and threshold alignments leave out both ``</s>``: the end-of-sentence row is no
target piece and the ``</s>`` column no source piece, so a target piece whose largest
weight is on ``</s>`` is linked to the source piece with the largest of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtkit.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mtkit.search.hypothesis import Hypothesis
    from mtkit.search.translator import Translator

ALIGNMENT_HELP = "hard, soft or a threshold in (0, 1]"

Alignment = str | float  # "hard", "soft" or a threshold


def parse_alignment(text: str) -> Alignment:
    """``--alignment`` as given: ``hard``, ``soft`` or a threshold in (0, 1] (else a
    one-line ConfigError naming the flag)."""
    if text in ("hard", "soft"):
        return text
    try:
        threshold = float(text)
    except ValueError:
        threshold = float("nan")
    if not 0.0 < threshold <= 1.0:  # also false for NaN
        raise ConfigError(f"--alignment must be {ALIGNMENT_HELP}, not {text!r}")
    return threshold


@dataclass
class AttentionGrid:
    """A hypothesis's attention in reading order: ``weights`` (T + 1, S + 1), T target
    pieces and S source pieces, each axis ending in ``</s>`` (T rows only, without
    ``</s>``, for an output that the length limit cut before it ended)."""

    source: list[str]  # S source pieces, then "</s>"
    target: list[str]  # T target pieces, then "</s>"
    weights: torch.Tensor  # (T + 1, S + 1)
    tokens: int  # T


def attention_grid(translator: Translator, source: str, hyp: Hypothesis) -> AttentionGrid | None:
    """``hyp``'s attention over ``source`` in reading order; None for an empty line."""
    if hyp.attention is None or not source.strip():
        return None
    source_pieces, columns = translator.source_axis(source, hyp.attention)
    target_pieces = [translator.codec.tgt.id_to_piece(t) for t in hyp.tokens]
    rows = columns[: len(target_pieces) + 1].float()
    if rows.size(0) > len(target_pieces):  # no </s> row when the length limit cut it
        target_pieces.append("</s>")
    return AttentionGrid(source_pieces, target_pieces, rows, len(hyp.tokens))


def links(grid: AttentionGrid, alignment: Alignment) -> list[tuple[int, int]]:
    """The ``(source, target)`` pairs of a hard or threshold alignment, sorted."""
    pieces = grid.weights[: grid.tokens, :-1]  # (T, S): no </s> row or column
    if pieces.numel() == 0:
        return []
    if alignment == "hard":
        found = [(int(s), t) for t, s in enumerate(pieces.argmax(dim=1).tolist())]
    else:
        chosen = (pieces >= float(alignment)).nonzero().tolist()  # (t, s) rows
        found = [(s, t) for t, s in chosen]
    return sorted(found)


def alignment_text(grid: AttentionGrid | None, alignment: Alignment) -> str:
    """Marian's text: ``0-0 1-2 ...`` (hard, threshold) or the soft matrix; ``""`` for an
    empty line."""
    if grid is None:
        return ""
    if alignment == "soft":
        return " ".join(",".join(f"{w:.6g}" for w in row) for row in grid.weights.tolist())
    return " ".join(f"{s}-{t}" for s, t in links(grid, alignment))


def attention_json(grid: AttentionGrid | None) -> dict[str, object] | None:
    """The service's ``attention`` object (source, target, weights rounded to 4 places)."""
    if grid is None:
        return None
    return {
        "source": grid.source,
        "target": grid.target,
        "weights": [[round(w, 4) for w in row] for row in grid.weights.tolist()],
    }
