"""Corpus-level scores from sacrebleu on detokenized text, each with its signature."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER


@dataclass
class Score:
    name: str
    score: float
    signature: str
    text: str  # sacrebleu's own one-line summary

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "score": round(self.score, 4),
            "signature": self.signature,
            "text": self.text,
        }


METRICS = ("bleu", "chrf", "ter")


def make_metric(name: str) -> BLEU | CHRF | TER:
    """sacreBLEU's metric for ``bleu`` (cased, 13a tokenization), ``chrf`` or ``ter``,
    each with its defaults."""
    metrics = {"bleu": BLEU, "chrf": CHRF, "ter": TER}
    if name not in metrics:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
    return metrics[name]()


def _score(
    metric: BLEU | CHRF | TER,
    name: str,
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
) -> Score:
    """``references``: one or more reference streams, each aligned with the hypotheses."""
    result = metric.corpus_score(list(hypotheses), [list(stream) for stream in references])
    return Score(name, float(result.score), str(metric.get_signature()), str(result))


def perplexity(mean_nll: float) -> float:
    """exp of a mean token NLL, capped so that an untrained model does not overflow."""
    return math.exp(min(mean_nll, 50.0))


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """Cased BLEU with sacrebleu's default 13a tokenization."""
    return _score(BLEU(), "BLEU", hypotheses, [references])


def all_scores(hypotheses: Sequence[str], references: Sequence[str]) -> list[Score]:
    """BLEU, chrF and TER against one reference."""
    return corpus_scores(hypotheses, [references])


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = METRICS,
) -> list[Score]:
    """The chosen ``metrics`` (names from :data:`METRICS`) against one or more reference
    streams, as sacreBLEU scores several references."""
    names = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}
    return [_score(make_metric(m), names[m], hypotheses, references) for m in metrics]
