"""Translator: text in, text out, with exactly the source processing the model was trained with.

Inputs are encoded by the checkpoint's own :class:`~mtkit.corpus.tokenizer.TextCodec`
(sentencepiece, reversal, EOS), sorted by length into token-budget batches for speed,
searched, detokenized and put back in input order. Empty inputs give empty outputs.
Search options are passed by name and checked: ``translate(texts, beam_size=5)``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, cast

import torch

from mtkit.config import DecodeConfig, SearchOptions
from mtkit.corpus.batching import pad_sequences, sorted_batches
from mtkit.corpus.tokenizer import TextCodec
from mtkit.errors import ConfigError
from mtkit.model.checkpoint import decode_config_from_payload, load_checkpoint, model_from_payload
from mtkit.runtime import resolve_device, single_thread
from mtkit.search.beam import beam_search
from mtkit.search.greedy import forced_scores, greedy_search
from mtkit.search.hypothesis import Hypothesis, StepModel, output_cap
from mtkit.search.pool import DecodePool, LoadSpec, check_processes
from mtkit.search.quantize import check_int8, quantize_for_inference

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


@contextlib.contextmanager
def _inference(model_dtype: torch.dtype) -> Iterator[None]:
    """``torch.inference_mode``, without cuDNN's note about non-contiguous bf16 RNN weights.

    ``flatten_parameters`` leaves bf16 weights alone (PyTorch only packs fp16/fp32/fp64
    for cuDNN), so cuDNN warns on the first call; the bf16 copy is still the faster choice.
    """
    with torch.inference_mode(), warnings.catch_warnings():
        if model_dtype == torch.bfloat16:
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
        yield


class Translator:
    """A model with its codec and search defaults: texts in, translations out.

    Search options are passed by name (:class:`~mtkit.config.SearchOptions` fields, e.g.
    ``beam_size=5``, ``max_len_a=2.0``) and apply on top of the checkpoint's ``decode``
    defaults (:attr:`defaults`); see :meth:`options`.
    """

    def __init__(
        self,
        model: torch.nn.Module,  # a Seq2Seq, or anything with its step API (an Ensemble)
        codec: TextCodec,
        defaults: DecodeConfig | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        train_max_len: int | None = None,
    ) -> None:
        self.device = resolve_device(device) if isinstance(device, str) else device
        if precision == "bf16":
            # Inference needs no fp32 master weights: a bf16 copy saves autocast's per-step
            # casts (the caller's model, possibly still training, is left as it is).
            model = copy.deepcopy(model).to(torch.bfloat16)
        elif precision == "int8":
            check_int8(self.device)  # a copy with int8 step products (mtkit.search.int8)
            model = quantize_for_inference(model)
        elif precision != "fp32":
            raise ConfigError(f"precision={precision!r}; expected fp32, bf16 or int8")
        self.model = model.to(self.device).eval()
        self.stepper = cast(StepModel, self.model)
        for module in self.model.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()  # cuDNN wants one weight block after a copy
        self.codec = codec
        self.defaults = defaults or DecodeConfig()
        self.precision = precision
        self.dtype = next(self.model.parameters()).dtype
        self.train_max_len = train_max_len  # inputs longer than this get a warning
        self.pool: DecodePool | None = None  # helper processes (see with_helpers)
        self._finalizer: weakref.finalize | None = None  # stops them with this object

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
        (:mod:`mtkit.shortlist`; a one-line CheckpointError if it holds none).

        ``processes`` > 1 searches every batch in that many single-threaded processes
        (:mod:`mtkit.search.pool`; the CPU only); :meth:`close` stops the helpers.
        """
        if check_processes(processes) > 1:
            spec = LoadSpec((str(path),), None, precision, shortlist, device)
            return cls.with_helpers(spec, processes)
        payload = load_checkpoint(path)
        model: torch.nn.Module
        model, codec = model_from_payload(payload, str(path))
        if shortlist:
            from mtkit.search.shortlist import (
                with_shortlist,  # loads the corpus code: only when asked
            )

            model = with_shortlist(model, payload, str(path))
        return cls(
            model,
            codec,
            decode_config_from_payload(payload),
            device,
            precision,
            payload["data"].get("max_len"),
        )

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path],
        weights: Sequence[float] | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        processes: int = 1,
    ) -> Translator:
        """An ensemble of checkpoints: search over the (weighted) mean of their log-probs.

        The checkpoints must share the sentencepiece models, the source processing and the
        output vocabulary (else a one-line CheckpointError names the one that differs).
        ``processes`` as for :meth:`from_checkpoint`.
        """
        from mtkit.search.ensemble import ensemble_translator  # ensemble.py builds on this module

        if check_processes(processes) > 1:
            spec = LoadSpec(
                tuple(str(p) for p in paths),
                None if weights is None else tuple(weights),
                precision,
                False,
                device,
            )
            return cls.with_helpers(spec, processes)
        return ensemble_translator(paths, weights, device, precision)

    @classmethod
    def with_helpers(cls, spec: LoadSpec, processes: int) -> Translator:
        """The Translator ``spec`` loads, searching each batch in ``processes`` processes:
        this one and ``processes - 1`` helpers, one thread each (:mod:`mtkit.search.pool`).

        The helpers start first, so they load while this process loads its own copy.
        """
        check_processes(processes)
        if resolve_device(spec.device).type != "cpu":
            raise ConfigError(
                f"processes={processes} decodes on the CPU only, not on {spec.device}"
            )
        pool = DecodePool(spec, processes - 1)
        try:
            translator = spec.load()
        except BaseException:
            pool.close()
            raise
        translator.attach(pool)
        return translator

    def attach(self, pool: DecodePool) -> None:
        """Search every batch with ``pool``'s helpers too, once they are ready (they load
        this Translator's checkpoints; a helper that fails is an MtkitError). The helpers
        stop with :meth:`close`, or when this Translator is garbage-collected."""
        try:
            pool.wait_ready()
        except BaseException:
            pool.close()
            raise
        self.pool = pool
        self._finalizer = weakref.finalize(self, pool.close)

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

    def inference(self) -> contextlib.AbstractContextManager[None]:
        """The context every search of this Translator runs in (inference mode; see
        :func:`_inference`), for callers that drive the step API themselves."""
        return _inference(self.dtype)

    def options(self, **changes: Any) -> SearchOptions:
        """The checkpoint's search defaults with ``changes`` applied, checked.

        ``changes`` are :class:`SearchOptions` field names; ``None`` keeps the default. An
        unknown name or a bad value is a one-line ConfigError naming it. Without an
        explicit ``nbest``, the default is capped at the beam size. Without an explicit
        ``max_len_cap``, a checkpoint's Translator cuts outputs at the length limit of its
        longest training sentence (see :meth:`output_cap`).
        """
        names = [f.name for f in fields(SearchOptions)]
        for name in changes:
            if name not in names:
                valid = ", ".join(names)
                raise ConfigError(f"unknown search option '{name}'; valid options: {valid}")
        given = {name: value for name, value in changes.items() if value is not None}
        options = replace(self.defaults, **{**given, "nbest": 1})  # checks all but nbest
        nbest = given.get("nbest", min(self.defaults.nbest, options.beam_size))
        cap = options.max_len_cap if options.max_len_cap is not None else self.output_cap(options)
        return replace(options, nbest=nbest, max_len_cap=cap)

    def output_cap(self, options: SearchOptions) -> int | None:
        """:func:`~mtkit.search.hypothesis.output_cap` for this model; None when the
        training limit is unknown."""
        return None if self.train_max_len is None else output_cap(options, self.train_max_len)

    def translate(
        self,
        texts: Sequence[str],
        *,
        batch_tokens: int | None = None,
        progress: ProgressCallback | None = None,
        **changes: Any,
    ) -> list[str]:
        """One translation per input text (the best hypothesis), in input order.

        ``changes`` are search options, as for :meth:`options`.
        """
        options = replace(self.options(**changes), nbest=1)
        results = self._translate(texts, options, batch_tokens, False, progress)
        return [hyps[0].text for hyps in results]

    def translate_nbest(
        self,
        texts: Sequence[str],
        *,
        batch_tokens: int | None = None,
        return_attention: bool = False,
        progress: ProgressCallback | None = None,
        **changes: Any,
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each text, best first, in input order.

        ``changes`` are search options, as for :meth:`options`.
        """
        options = self.options(**changes)
        return self._translate(texts, options, batch_tokens, return_attention, progress)

    def score(
        self, sources: Sequence[str], hypotheses: Sequence[Hypothesis], **changes: Any
    ) -> list[float]:
        """Forced-decoding scores of given hypotheses' tokens (as search would report them).

        ``changes`` are search options (length normalisation, coverage), as for :meth:`options`.
        """
        options = self.options(**changes)
        encoded = self.codec.encode_source([s.strip() for s in sources])
        src, lengths = pad_sequences(encoded)
        with _inference(self.dtype):
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
    ) -> list[list[Hypothesis]]:
        """Encode, batch by length, search, detokenize, and put back in input order."""
        budget = batch_tokens or self.defaults.batch_tokens
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0)] for _ in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))  # empty lines are done already
        sources = self.codec.encode_source([texts[i].strip() for i in todo])
        self._warn_long(sources, todo, options)
        batches = sorted_batches([len(s) for s in sources], max(1, budget // options.beam_size))
        for batch in batches:
            hypotheses = self._search_batch(
                [sources[j] for j in batch.tolist()], options, return_attention
            )
            texts_out = iter(self.codec.decode_target([h.tokens for hs in hypotheses for h in hs]))
            for j, hyps in zip(batch.tolist(), hypotheses, strict=True):
                for hyp in hyps:
                    hyp.text = next(texts_out)
                results[todo[j]] = hyps
            if progress is not None:
                progress(len(batch))
        return results

    def search_ids(
        self, sources: list[list[int]], options: SearchOptions, return_attention: bool = False
    ) -> list[list[Hypothesis]]:
        """Search encoded sources (id lists ending in EOS) as one batch, in this process.

        The hypotheses' ``text`` is left empty (the caller detokenizes).
        """
        src, lengths = pad_sequences(sources)
        return self._search(src.to(self.device), lengths.to(self.device), options, return_attention)

    def _search_batch(
        self, sources: list[list[int]], options: SearchOptions, return_attention: bool
    ) -> list[list[Hypothesis]]:
        """One batch, in this process or shared with the helpers: of P processes, process
        k searches sentences k, k + P, ... (see :mod:`mtkit.search.pool`)."""
        if self.pool is None:
            return self.search_ids(sources, options, return_attention)
        share = self.processes
        parts = [sources[k::share] for k in range(share)]
        self.pool.submit(parts[1:], options, return_attention)
        with single_thread():
            own = self.search_ids(parts[0], options, return_attention) if parts[0] else []
        found: list[list[Hypothesis]] = [[] for _ in sources]
        for k, part in enumerate([own, *self.pool.collect()]):
            found[k::share] = part
        return found

    def _search(
        self,
        src: torch.Tensor,
        lengths: torch.Tensor,
        options: SearchOptions,
        return_attention: bool,
    ) -> list[list[Hypothesis]]:
        """Greedy search for a beam of 1 without coverage penalty (the same result, faster)."""
        search = greedy_search
        if options.beam_size > 1 or options.coverage_penalty != 0.0:
            search = beam_search
        with _inference(self.dtype):
            return search(self.stepper, src, lengths, options, return_attention)

    def _warn_long(
        self, sources: list[list[int]], numbers: list[int], options: SearchOptions
    ) -> None:
        """Name the inputs longer than any training sentence (they are still translated).

        ``numbers`` are the 0-based input positions of ``sources``; the warning gives
        1-based line numbers (the first ten) and the output cap that applies to them.
        """
        if self.train_max_len is None:
            return
        long = [numbers[j] + 1 for j, s in enumerate(sources) if len(s) - 1 > self.train_max_len]
        if not long:
            return
        shown = ", ".join(str(n) for n in long[:10]) + (" ..." if len(long) > 10 else "")
        cap = f"; output cut at {options.max_len_cap} subwords" if options.max_len_cap else ""
        log.warning(
            "%d input(s) longer than the longest training sentence (%d subwords), line(s) %s: "
            "translating anyway%s",
            len(long),
            self.train_max_len,
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
