"""mtkit-translate's output formats (``--format``), one block of lines per input line.

- ``text``: the translation; ``--scores``: ``SCORE<TAB>TRANSLATION``; ``--nbest N``:
  ``INDEX<TAB>RANK<TAB>SCORE<TAB>TRANSLATION`` per hypothesis;
- ``tsv``: ``SOURCE<TAB>TRANSLATION``, ``<TAB>SCORE`` added with ``--scores``, one line
  per hypothesis (a tab inside the source or a translation is written as a space);
- ``jsonl``: one JSON object per input line, with the fields of the service's
  translations (``text``, ``score``, ``nbest``: a list of ``{text, score}``), plus
  ``alignment`` (a list of ``[source, target]`` pairs) for a hard or threshold
  ``--alignment`` or ``attention`` (the service's source, target and weights) for a
  soft one;
- ``marian``: the Moses/Marian n-best list, ``INDEX ||| TRANSLATION ||| F0= SCORE |||
  SCORE`` per hypothesis, INDEX the 0-based input line.

With ``--alignment``, the text formats add Marian's alignment of each hypothesis
(:mod:`mtkit.cli.alignment`): ``TRANSLATION ||| ALIGNMENT`` (text), a last column
(tsv), a field after the translation (marian). An empty input line gives one line (one
hypothesis: an empty translation with score 0). Scores are printed with 4 decimals,
except in JSON. A line break inside a translation is written as a space.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mtkit.cli.alignment import Alignment, AttentionGrid, alignment_text, attention_json, links

if TYPE_CHECKING:
    from mtkit.search.hypothesis import Hypothesis

FORMATS = ("text", "tsv", "jsonl", "marian")

# The attention of a hypothesis of the source in reading order (None without one).
GridOf = Callable[[str, "Hypothesis"], AttentionGrid | None]


@dataclass
class Style:
    """How results are written: ``--format``, ``--nbest``, ``--scores``, ``--alignment``."""

    format: str = "text"
    nbest: int = 1
    scores: bool = False
    alignment: Alignment | None = None


def format_block(
    index: int, source: str, hyps: list[Hypothesis], style: Style, grid_of: GridOf
) -> list[str]:
    """The output lines of input line ``index`` (0-based): its n-best ``hyps``."""
    hyps = hyps[: style.nbest]
    if style.format == "jsonl":
        return [_json_line(source, hyps, style, grid_of)]
    aligned = [_aligned(source, hyp, style, grid_of) for hyp in hyps]
    if style.format == "tsv":
        source = _cell(source)
        score = [f"\t{hyp.score:.4f}" if style.scores else "" for hyp in hyps]
        return [f"{source}\t{_cell(h.text)}{s}{a.replace(' ||| ', chr(9))}"
                for h, s, a in zip(hyps, score, aligned, strict=True)]  # fmt: skip
    if style.format == "marian":
        return [
            f"{index} ||| {_one_line(h.text)}{a} ||| F0= {h.score:.4f} ||| {h.score:.4f}"
            for h, a in zip(hyps, aligned, strict=True)
        ]
    if style.nbest > 1:
        return [
            f"{index}\t{rank}\t{h.score:.4f}\t{_one_line(h.text)}{a}"
            for rank, (h, a) in enumerate(zip(hyps, aligned, strict=True))
        ]
    best = _one_line(hyps[0].text) + aligned[0]
    return [f"{hyps[0].score:.4f}\t{best}" if style.scores else best]


def _aligned(source: str, hyp: Hypothesis, style: Style, grid_of: GridOf) -> str:
    """`` ||| ALIGNMENT`` when ``--alignment`` is given, else nothing."""
    if style.alignment is None:
        return ""
    return " ||| " + alignment_text(grid_of(source, hyp), style.alignment)


def _json_line(source: str, hyps: list[Hypothesis], style: Style, grid_of: GridOf) -> str:
    best = hyps[0]
    result: dict[str, Any] = {
        "text": best.text,
        "score": best.score,
        "nbest": [{"text": h.text, "score": h.score} for h in hyps],
    }
    if style.alignment is not None:
        grid = grid_of(source, best)
        if style.alignment == "soft":
            result["attention"] = attention_json(grid)
        else:
            pairs = [] if grid is None else links(grid, style.alignment)
            result["alignment"] = [list(pair) for pair in pairs]
    return json.dumps(result, ensure_ascii=False)


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _cell(text: str) -> str:
    return _one_line(text).replace("\t", " ")
