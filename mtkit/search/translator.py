"""Translator: text in, text out, with exactly the source processing the model was trained with.

Inputs are encoded by the checkpoint's own :class:`~mtkit.corpus.tokenizer.TextCodec`
(sentencepiece, reversal, EOS), sorted by length into token-budget batches for speed,
searched, detokenized and put back in input order. Empty inputs give empty outputs.
Search options are passed by name and checked: ``translate(texts, beam_size=5)``.

Loading (checkpoints, ensembles, precision copies) is :mod:`mtkit.search.load`'s;
sharing each batch with helper processes is :mod:`mtkit.search.pool`'s.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from mtkit.config import DecodeConfig, SearchOptions
from mtkit.corpus.batching import pad_sequences, sorted_batches
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import ConfigError
from mtkit.search.greedy import forced_scores
from mtkit.search.hypothesis import Hypothesis, StepModel, output_cap
from mtkit.search.load import LoadedModel, LoadSpec, prepare
from mtkit.search.pool import DecodePool, load_shared
from mtkit.search.prefix import check_shortlist, encode_prefixes

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


class Translator:
    """A model with its codec and search defaults: texts in, translations out.

    Search options are passed by name (:class:`~mtkit.config.SearchOptions` fields, e.g.
    ``beam_size=5``, ``max_len_a=2.0``) and apply on top of the checkpoint's ``decode``
    defaults (:attr:`defaults`); see :meth:`options`.

    ``Translator(model, codec, ...)`` decodes a model in memory (a Seq2Seq, or anything
    with its step API); :meth:`from_checkpoint` and :meth:`from_checkpoints` load one.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        codec: TextCodec,
        defaults: DecodeConfig | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        train_max_len: int | None = None,
    ) -> None:
        self._use(prepare(model, codec, defaults, device, precision, train_max_len), None)

    @classmethod
    def of(cls, loaded: LoadedModel, pool: DecodePool | None = None) -> Translator:
        """A Translator over a loaded model; with ``pool``, each batch is shared with its
        helpers, which stop with :meth:`close` (or when the Translator is collected)."""
        translator = cls.__new__(cls)
        translator._use(loaded, pool)
        return translator

    def _use(self, loaded: LoadedModel, pool: DecodePool | None) -> None:
        self.loaded = loaded
        self.pool = pool
        self._finalizer = None if pool is None else weakref.finalize(self, pool.close)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        shortlist: bool = False,
        processes: int = 1,
    ) -> Translator:
        """The checkpoint's model; ``shortlist=True`` decodes through its lexical shortlist
        (:mod:`mtkit.search.shortlist`; a one-line CheckpointError if it holds none).

        ``processes`` > 1 searches every batch in that many single-threaded processes
        (:mod:`mtkit.search.pool`; the CPU only); :meth:`close` stops the helpers.
        """
        spec = LoadSpec((str(path),), None, precision, shortlist, device)
        return cls.of(*load_shared(spec, processes))

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        weights: Sequence[float] | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        processes: int = 1,
    ) -> Translator:
        """An ensemble of checkpoints (of one, too): search over the (weighted) mean of
        their log-probs.

        The checkpoints must share the sentencepiece models, the source processing and the
        output vocabulary (else a one-line CheckpointError names the one that differs).
        ``processes`` as for :meth:`from_checkpoint`.
        """
        # Weights make an ensemble of any size; equal ones are what None means.
        given = tuple(weights) if weights is not None else (1.0,) * len(paths)
        spec = LoadSpec(tuple(str(p) for p in paths), given, precision, False, device)
        return cls.of(*load_shared(spec, processes))

    # -- what was loaded ---------------------------------------------------------------------

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def stepper(self) -> StepModel:
        return self.loaded.stepper

    @property
    def codec(self) -> TextCodec:
        return self.loaded.codec

    @property
    def defaults(self) -> DecodeConfig:
        return self.loaded.defaults

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def precision(self) -> str:
        return self.loaded.precision

    @property
    def processes(self) -> int:
        """The processes that search each batch: this one and its helpers."""
        return 1 if self.pool is None else 1 + self.pool.helpers

    def close(self) -> None:
        """Stop the helper processes, if any (the Translator then searches alone)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inference(self) -> AbstractContextManager[None]:
        """The context every search of this Translator runs in (inference mode), for
        callers that drive the step API themselves."""
        return self.loaded.inference()

    # -- search options ----------------------------------------------------------------------

    def options(self, **changes: Any) -> SearchOptions:
        """The checkpoint's search defaults with ``changes`` applied, checked.

        ``changes`` are :class:`SearchOptions` field names; ``None`` keeps the default. An
        unknown name or a bad value is a one-line ConfigError naming it. Without an
        explicit ``nbest``, the default is capped at the beam size. ``sampling=True``
        sets a beam of 1 and no coverage penalty where those are not given (any other
        value given is a ConfigError). Without an explicit
        ``max_len_cap``, a checkpoint's Translator cuts outputs at the length limit of its
        longest training sentence (:func:`~mtkit.search.hypothesis.output_cap`).
        """
        names = [f.name for f in fields(SearchOptions)]
        for name in changes:
            if name not in names:
                valid = ", ".join(names)
                raise ConfigError(f"unknown search option '{name}'; valid options: {valid}")
        given = {name: value for name, value in changes.items() if value is not None}
        if given.get("sampling") is True:  # one draw per sentence, no beams to rank
            given = {"beam_size": 1, "coverage_penalty": 0.0, **given}
        options = replace(self.defaults, **{**given, "nbest": 1})  # checks all but nbest
        nbest = given.get("nbest", min(self.defaults.nbest, options.beam_size))
        cap, longest = options.max_len_cap, self.loaded.train_max_len
        if cap is None and longest is not None:
            cap = output_cap(options, longest)
        return replace(options, nbest=nbest, max_len_cap=cap)

    # -- text in, text out -------------------------------------------------------------------

    def translate(
        self,
        texts: Sequence[str],
        *,
        batch_tokens: int | None = None,
        progress: ProgressCallback | None = None,
        prefix: Sequence[str | None] | None = None,
        **changes: Any,
    ) -> list[str]:
        """One translation per input text (the best hypothesis), in input order.

        ``prefix``: one target prefix per text ("" or None: none) that its translation
        must begin with (:meth:`translate_nbest`). ``changes`` are search options, as for
        :meth:`options` (``sampling=True, temperature=..., top_k=..., seed=...`` samples).
        """
        options = replace(self.options(**changes), nbest=1)
        results = self._translate(texts, options, batch_tokens, False, progress, prefix)
        return [hyps[0].text for hyps in results]

    def translate_nbest(
        self,
        texts: Sequence[str],
        *,
        batch_tokens: int | None = None,
        return_attention: bool = False,
        progress: ProgressCallback | None = None,
        prefix: Sequence[str | None] | None = None,
        **changes: Any,
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each text, best first, in input order.

        ``prefix``: one target prefix per text ("" or None: none), encoded by the target
        sentencepiece model without EOS; every hypothesis begins with its pieces, which
        count in its score (:mod:`mtkit.search.prefix`). An empty text still gives an
        empty translation. A prefix the model cannot write is a one-line ConfigError
        naming its line (:func:`~mtkit.search.prefix.encode_prefixes`). ``changes``
        are search options, as for :meth:`options`.
        """
        options = self.options(**changes)
        return self._translate(texts, options, batch_tokens, return_attention, progress, prefix)

    def score(
        self, sources: Sequence[str], hypotheses: Sequence[Hypothesis], **changes: Any
    ) -> list[float]:
        """Forced-decoding scores of given hypotheses' tokens (as search would report them).

        ``changes`` are search options (length normalisation, coverage), as for :meth:`options`.
        """
        options = self.options(**changes)
        encoded = self.codec.encode_source([s.strip() for s in sources])
        src, lengths = pad_sequences(encoded)
        with self.inference():
            return forced_scores(
                self.stepper,
                src.to(self.device),
                lengths.to(self.device),
                [h.tokens for h in hypotheses],
                options,
            )

    def _translate(
        self,
        texts: Sequence[str],
        options: SearchOptions,
        batch_tokens: int | None,
        return_attention: bool,
        progress: ProgressCallback | None,
        prefix: Sequence[str | None] | None = None,
    ) -> list[list[Hypothesis]]:
        """Encode, batch by length, search, detokenize, and put back in input order."""
        budget = batch_tokens or self.defaults.batch_tokens
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0)] for _ in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        prefixes = self._prefixes(prefix, texts, todo)  # checked before anything is searched
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))  # empty lines are done already
        sources = self.codec.encode_source([texts[i].strip() for i in todo])
        self._warn_long(sources, todo, options)
        if prefixes is not None:
            check_shortlist(self.model, sources, prefixes, [i + 1 for i in todo])
        batches = sorted_batches([len(s) for s in sources], max(1, budget // options.beam_size))
        for batch in batches:
            batch_sources = [sources[j] for j in batch.tolist()]
            given = None if prefixes is None else [prefixes[j] for j in batch.tolist()]
            if self.pool is None:
                hypotheses = self.loaded.search(batch_sources, options, return_attention, given)
            else:
                hypotheses = self.pool.search(
                    self.loaded, batch_sources, options, return_attention, given
                )
            texts_out = iter(self.codec.decode_target([h.tokens for hs in hypotheses for h in hs]))
            for j, hyps in zip(batch.tolist(), hypotheses, strict=True):
                for hyp in hyps:
                    hyp.text = next(texts_out)
                results[todo[j]] = hyps
            if progress is not None:
                progress(len(batch))
        return results

    def _prefixes(
        self, prefix: Sequence[str | None] | None, texts: Sequence[str], todo: list[int]
    ) -> list[list[int]] | None:
        """The target ids of the prefixes of the non-empty texts ``todo``; None when no
        prefix has a piece (search then does no prefix work at all)."""
        if prefix is None:
            return None
        ids = encode_prefixes(self.codec, prefix, len(texts), self.stepper)
        kept = [ids[i] for i in todo]
        return kept if any(kept) else None

    def _warn_long(
        self, sources: list[list[int]], numbers: list[int], options: SearchOptions
    ) -> None:
        """Name the inputs longer than any training sentence (they are still translated).

        ``numbers`` are the 0-based input positions of ``sources``; the warning gives
        1-based line numbers (the first ten) and the output cap that applies to them.
        """
        longest = self.loaded.train_max_len
        if longest is None:
            return
        long = [numbers[j] + 1 for j, s in enumerate(sources) if len(s) - 1 > longest]
        if not long:
            return
        shown = ", ".join(str(n) for n in long[:10]) + (" ..." if len(long) > 10 else "")
        cap = f"; output cut at {options.max_len_cap} subwords" if options.max_len_cap else ""
        log.warning(
            "%d input(s) longer than the longest training sentence (%d subwords), line(s) %s: "
            "translating anyway%s",
            len(long),
            longest,
            shown,
            cap,
        )

    def source_axis(self, text: str, attention: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """Source pieces in reading order (+ EOS) and attention columns to match.

        The model reads ``reversed(pieces) + EOS`` when trained with reversed sources; this
        undoes the reversal so a plot reads left to right.
        """
        pieces = self.codec.source_pieces(text.strip())
        n = len(pieces)
        columns = attention[:, : n + 1]
        if self.codec.reverse_source:
            columns = torch.cat([columns[:, :n].flip(1), columns[:, n:]], dim=1)
        return [*pieces, "</s>"], columns
