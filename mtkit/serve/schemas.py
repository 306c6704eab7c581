"""The JSON of the HTTP API: request and response shapes (pydantic) and how results fill them.

Requests are validated strictly (``"beam_size": "5"`` or an unknown key is a 422, not a
guess). Responses are built as plain dicts and sent as they are; the pydantic response
models describe them in the OpenAPI schema (``/openapi.json``, ``/docs``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mtkit.search.hypothesis import Hypothesis
from mtkit.search.translator import Translator


class TranslateBody(BaseModel):
    """``POST /v1/translate``: one text or a list of texts, and optional search settings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | list[str] = Field(description="a sentence, or a list of sentences")
    beam_size: int | None = Field(
        default=None, description="beam size (1 = greedy; default: the server's --beam-size)"
    )
    nbest: int = Field(default=1, description="hypotheses per text, at most beam_size")
    attention: bool = Field(
        default=False, description="also return the best hypothesis's attention matrix"
    )


class Candidate(BaseModel):
    text: str
    score: float = Field(description="log-probability after length normalisation")


class Attention(BaseModel):
    source: list[str] = Field(description="source pieces in reading order, then </s>")
    target: list[str] = Field(description="output pieces, then </s>")
    weights: list[list[float]] = Field(
        description="one row per target piece, one column per source piece"
    )


class Translation(Candidate):
    nbest: list[Candidate] = Field(description="the n-best list, best first")
    attention: Attention | None = Field(
        default=None, description="present when asked for; null for an empty text"
    )


class TranslateResponse(BaseModel):
    translations: list[Translation] = Field(description="one per input text, in input order")
    beam_size: int
    nbest: int


def attention_json(translator: Translator, source: str, best: Hypothesis) -> dict[str, Any] | None:
    """Source and target pieces and the (T, S) weights of the best hypothesis (reading order)."""
    if best.attention is None or not source.strip():
        return None
    source_pieces, columns = translator.source_axis(source, best.attention)
    target_pieces = [translator.codec.tgt.id_to_piece(t) for t in best.tokens] + ["</s>"]
    rows = columns[: len(target_pieces)].float()
    return {
        "source": source_pieces,
        "target": target_pieces,
        "weights": [[round(w, 4) for w in row] for row in rows.tolist()],
    }


def translation_json(
    translator: Translator, source: str, hyps: list[Hypothesis], with_attention: bool
) -> dict[str, Any]:
    """One text's result: the best translation and score, its n-best list, its attention."""
    best = hyps[0]
    result: dict[str, Any] = {
        "text": best.text,
        "score": best.score,
        "nbest": [{"text": h.text, "score": h.score} for h in hyps],
    }
    if with_attention:
        result["attention"] = attention_json(translator, source, best)
    return result
