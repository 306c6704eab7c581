"""A request's ``target_prefix`` checked against the model, per request, before it joins a batch.

The search refuses a prefix it cannot force (:mod:`mtkit.search.prefix`) for the whole
batch it is in, so the worker checks each request's prefixes alone first: a request
whose prefix the model cannot write fails with :class:`~mtkit.serve.jobs.BadPrefix`
(a 422 naming ``target_prefix[i]``) and the requests of its group are searched without
it. The checks are those of :func:`~mtkit.search.prefix.encode_prefixes` and
:func:`~mtkit.search.prefix.check_shortlist`, with the service's field names and
without echoing the client's text: every piece known to the target sentencepiece model
(no unknown character), none EOS, each in the model's output vocabulary, and, for a
model served through a lexical shortlist, each in its sentence's shortlist.
"""

from __future__ import annotations

from mtkit.corpus.tokenizer import EOS_ID, UNK_ID
from mtkit.search.prefix import PrefixError, check_shortlist
from mtkit.search.translator import Translator
from mtkit.serve.jobs import BadPrefix, Request


def has_prefix(request: Request) -> bool:
    """Whether any text of ``request`` has a prefix with a character other than space."""
    return request.prefixes is not None and any(p and p.strip() for p in request.prefixes)


def prefixes_of(request: Request) -> tuple[str | None, ...]:
    """One prefix (or None) per text of ``request``."""
    return request.prefixes or (None,) * len(request.texts)


def field(request: Request, index: int) -> str:
    """The body's name of text ``index``'s prefix, as errors give it."""
    return "target_prefix" if request.single else f"target_prefix[{index}]"


class PrefixCheck:
    """Encodes and checks requests' prefixes for one Translator (the worker's)."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        self._writable: set[int] | None = None  # the output vocabulary, read once

    def ids(self, request: Request) -> list[list[int]] | None:
        """Each text's prefix as target ids (no EOS; [] for none), in text order; None
        when no text has one. A prefix the model cannot write is a BadPrefix naming its
        field, checked for every text (an empty text's too, as the Translator does)."""
        if request.prefixes is None or not has_prefix(request):
            return None
        texts = [(p or "").strip() for p in request.prefixes]
        ids = self.translator.codec.encode_target(texts)
        for index, pieces in enumerate(ids):
            problem = self._problem(pieces)
            if problem is not None:
                raise BadPrefix(f"{field(request, index)}: {problem}")
        self._check_shortlist(request, ids)
        return ids

    def _problem(self, pieces: list[int]) -> str | None:
        """Why the model cannot write ``pieces``; None when it can."""
        if UNK_ID in pieces:
            return (
                "the target sentencepiece model does not know some of its characters; "
                "expected text the model can write"
            )
        if EOS_ID in pieces:
            return "it holds the end-of-sentence piece, which may not be forced"
        if self._writable is None:
            self._writable = set(self.translator.stepper.output_ids.tolist())
        missing = [p for p in pieces if p not in self._writable]
        if missing:
            piece = self.translator.codec.tgt.id_to_piece(missing[0])
            return f"the model never writes its piece {piece!r} (not in its output vocabulary)"
        return None

    def _check_shortlist(self, request: Request, ids: list[list[int]]) -> None:
        """Through a lexical shortlist (``--shortlist``): each prefix piece must be in its
        sentence's shortlist, checked one sentence at a time to name the field."""
        model = self.translator.model
        if not hasattr(model, "shortlist"):  # a Shortlisted wrapper, as setup tells it
            return
        for index, (text, pieces) in enumerate(zip(request.texts, ids, strict=True)):
            if not pieces or not text.strip():
                continue
            source = self.translator.codec.encode_source([text.strip()])
            try:
                with self.translator.inference():
                    check_shortlist(model, source, [pieces], [index + 1])
            except PrefixError:
                raise BadPrefix(
                    f"{field(request, index)}: a piece is outside the sentence's lexical "
                    "shortlist (the service decodes with --shortlist), so the model cannot "
                    "write it"
                ) from None
