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


def _score(
    metric: BLEU | CHRF | TER, name: str, hypotheses: Sequence[str], references: Sequence[str]
) -> Score:
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return Score(name, float(result.score), str(metric.get_signature()), str(result))


def perplexity(mean_nll: float) -> float:
    """exp of a mean token NLL, capped so that an untrained model does not overflow."""
    return math.exp(min(mean_nll, 50.0))


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """Cased BLEU with sacrebleu's default 13a tokenization."""
    return _score(BLEU(), "BLEU", hypotheses, references)


def all_scores(hypotheses: Sequence[str], references: Sequence[str]) -> list[Score]:
    """BLEU, chrF and TER."""
    return [
        bleu(hypotheses, references),
        _score(CHRF(), "chrF", hypotheses, references),
        _score(TER(), "TER", hypotheses, references),
    ]
