"""The JSON of the HTTP API: request and response shapes (pydantic) and how results fill them.

Requests are validated strictly (``"beam_size": "5"``, ``NaN`` or an unknown key is a
422, not a guess), and every string must be valid Unicode: JSON can spell a lone UTF-16
surrogate (``"\\ud800"``), which no text may hold (:func:`unicode_problem`). A 422 names
the field and what was expected, never echoes the input (which may be NaN, huge or
nested deep: :func:`validation_detail`). Responses are built as plain dicts and sent as
they are; the pydantic response models describe them in the OpenAPI schema
(``/openapi.json``, ``/docs``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
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
    target_prefix: str | list[str | None] | None = Field(
        default=None,
        description="target text each translation must begin with: a string for a string "
        'text, a list of the same length for a list (null or "": none)',
    )


SURROGATE = re.compile("[\ud800-\udfff]")  # UTF-16 halves: no valid text holds one alone
SHOWN = 60  # characters of a field name shown in an error
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # as JSON spells them


def unicode_problem(body: TranslateBody) -> str | None:
    """The first string field (or list item) holding a lone surrogate, as a one-line
    error naming it and the character index; None when every string is valid."""
    for name, text in _strings(body):
        found = SURROGATE.search(text)
        if found is not None:
            code = ord(found.group())
            return (
                f"{name}: character {found.start()} is a lone surrogate (U+{code:04X}); "
                "expected valid Unicode text"
            )
    return None


def _strings(body: TranslateBody) -> Iterator[tuple[str, str]]:
    """(field name, string) for every string of the request, list items as ``name[i]``."""
    for name in type(body).model_fields:
        value = getattr(body, name)
        if isinstance(value, str):
            yield name, value
        elif isinstance(value, list):
            yield from ((f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))


def validation_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors as JSON that always encodes: where (``loc``), what (``msg``) and
    ``type``; a non-finite number is named in ``msg``; the input itself is left out."""
    return [
        {
            "loc": [_printable(part, SHOWN) for part in error.get("loc", ())],
            "msg": _printable(_message(error)),
            "type": _printable(error.get("type", "")),
        }
        for error in errors
    ]


def _message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid"))
    value, context = error.get("input"), error.get("ctx") or {}
    if isinstance(value, float) and not math.isfinite(value):
        message += f" (got {NON_FINITE[repr(value)]})"
    elif error.get("type") == "json_invalid" and "error" in context:
        message += f": {context['error']}"
    return message


def _printable(part: object, longest: int = 1000) -> int | str:
    """A location part or message that JSON encodes: lone surrogates escaped, cut after
    ``longest`` characters (a field name is the client's, of any length)."""
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= longest else text[:longest] + "..."


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
    translator: Translator | None, source: str, hyps: list[Hypothesis], with_attention: bool
) -> dict[str, Any]:
    """One text's result: the best translation and score, its n-best list, its attention
    (``translator`` None: a model without attention, which no request may ask of)."""
    best = hyps[0]
    result: dict[str, Any] = {
        "text": best.text,
        "score": best.score,
        "nbest": [{"text": h.text, "score": h.score} for h in hyps],
    }
    if with_attention and translator is not None:
        result["attention"] = attention_json(translator, source, best)
    return result
