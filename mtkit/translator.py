"""Translator: text in, text out, with exactly the source processing the model was trained with.

Inputs are encoded by the checkpoint's own :class:`~mtkit.tokenizer.TextCodec`
(sentencepiece, reversal, EOS), sorted by length into token-budget batches for speed,
searched, detokenized and put back in input order. Empty inputs give empty outputs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from mtkit.batching import pad_sequences, sorted_batches
from mtkit.checkpoint import decode_config_from_payload, load_checkpoint, model_from_payload
from mtkit.config import DecodeConfig
from mtkit.model import Seq2Seq
from mtkit.runtime import resolve_device
from mtkit.search import Hypothesis, SearchOptions, beam_search, forced_scores, greedy_search
from mtkit.tokenizer import TextCodec

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


def search_options(decode: DecodeConfig) -> SearchOptions:
    fields = asdict(decode)
    fields.pop("batch_tokens")
    return SearchOptions(**fields)


class Translator:
    def __init__(
        self,
        model: Seq2Seq,
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
        self.model = model.to(self.device).eval()
        for module in self.model.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.flatten_parameters()  # cuDNN wants one weight block after a copy
        self.codec = codec
        self.defaults = defaults or DecodeConfig()
        self.precision = precision
        self.dtype = next(self.model.parameters()).dtype
        self.train_max_len = train_max_len
        self.long_inputs = 0  # inputs longer than any training sentence, counted

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", precision: str = "fp32"
    ) -> Translator:
        payload = load_checkpoint(path)
        model, codec = model_from_payload(payload, str(path))
        return cls(
            model,
            codec,
            decode_config_from_payload(payload),
            device,
            precision,
            payload["data"].get("max_len"),
        )

    def options(
        self,
        beam_size: int | None = None,
        nbest: int | None = None,
        length_penalty: float | None = None,
        max_len_ratio: float | None = None,
    ) -> SearchOptions:
        """The checkpoint's search defaults with the given values replaced."""
        options = search_options(self.defaults)
        changes: dict[str, Any] = {}
        if beam_size is not None:
            changes["beam_size"] = beam_size
        if nbest is not None:
            changes["nbest"] = nbest
        if length_penalty is not None:
            changes["length_penalty"] = length_penalty
        if max_len_ratio is not None:
            changes["max_len_a"] = max_len_ratio
        options = replace(options, **changes)
        options.nbest = min(options.nbest, options.beam_size)
        return options

    def translate(
        self,
        texts: Sequence[str],
        *,
        beam_size: int | None = None,
        length_penalty: float | None = None,
        max_len_ratio: float | None = None,
        batch_tokens: int | None = None,
        options: SearchOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[str]:
        """One translation per input text, in input order."""
        options = options or self.options(beam_size, 1, length_penalty, max_len_ratio)
        nbest = self.translate_nbest(
            texts, options=replace(options, nbest=1), batch_tokens=batch_tokens, progress=progress
        )
        return [hyps[0].text for hyps in nbest]

    def translate_nbest(
        self,
        texts: Sequence[str],
        *,
        beam_size: int | None = None,
        nbest: int | None = None,
        length_penalty: float | None = None,
        max_len_ratio: float | None = None,
        batch_tokens: int | None = None,
        options: SearchOptions | None = None,
        return_attention: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each text, best first, in input order."""
        options = options or self.options(beam_size, nbest, length_penalty, max_len_ratio)
        budget = batch_tokens or self.defaults.batch_tokens
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0)] for _ in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if progress is not None and len(todo) < len(texts):
            progress(len(texts) - len(todo))  # empty lines are done already
        sources = self.codec.encode_source([texts[i].strip() for i in todo])
        self._count_long(sources)
        rows_per_sentence = max(1, options.beam_size)
        for batch in sorted_batches([len(s) for s in sources], max(1, budget // rows_per_sentence)):
            src, lengths = pad_sequences([sources[j] for j in batch])
            hypotheses = self._search(
                src.to(self.device), lengths.to(self.device), options, return_attention
            )
            texts_out = self.codec.decode_target([h.tokens for hs in hypotheses for h in hs])
            flat = iter(texts_out)
            for j, hyps in zip(batch.tolist(), hypotheses, strict=True):
                for hyp in hyps:
                    hyp.text = next(flat)
                results[todo[j]] = hyps
            if progress is not None:
                progress(len(batch))
        return results

    def _search(
        self,
        src: torch.Tensor,
        lengths: torch.Tensor,
        options: SearchOptions,
        return_attention: bool,
    ) -> list[list[Hypothesis]]:
        with _inference(self.dtype):
            if options.beam_size == 1 and options.coverage_penalty == 0.0:
                return [
                    [h] for h in greedy_search(self.model, src, lengths, options, return_attention)
                ]
            return beam_search(self.model, src, lengths, options, return_attention)

    def _count_long(self, sources: list[list[int]]) -> None:
        if self.train_max_len is None:
            return
        long = sum(1 for s in sources if len(s) - 1 > self.train_max_len)
        if long:
            log.warning(
                "%d input(s) longer than the longest training sentence (%d subwords); "
                "translating anyway",
                long,
                self.train_max_len,
            )
        self.long_inputs += long

    def score(
        self,
        sources: Sequence[str],
        hypotheses: Sequence[Hypothesis],
        options: SearchOptions | None = None,
    ) -> list[float]:
        """Forced-decoding scores of given hypotheses' tokens (as search would report them)."""
        options = options or self.options()
        encoded = self.codec.encode_source([s.strip() for s in sources])
        src, lengths = pad_sequences(encoded)
        with _inference(self.dtype):
            return forced_scores(
                self.model,
                src.to(self.device),
                lengths.to(self.device),
                [h.tokens for h in hypotheses],
                options,
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
