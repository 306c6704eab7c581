"""Text in, text out with an export: :class:`OnnxTranslator`, the runtime's Translator.

The guarantees of ``mtkit-translate`` (docs/guarantees.md): one result per input, in
input order; an empty (or blank) input gives an empty translation and never reaches the
model. Inputs are sorted by length, longest first, and cut into batches of at most
``batch_tokens / beam_size`` padded source tokens, for speed; a sentence's result does
not depend on its batch. Greedy search serves a beam of 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtkit.onnx_runtime.beam import beam_search
from mtkit.onnx_runtime.codec import PAD_ID
from mtkit.onnx_runtime.folder import ExportedModel, open_export
from mtkit.onnx_runtime.greedy import Hypothesis, greedy_search
from mtkit.onnx_runtime.options import RuntimeOptions


def pad(sources: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Id lists -> (B, S) int64 padded with PAD, and lengths (B,) int64."""
    lengths = np.array([len(s) for s in sources], dtype=np.int64)
    src = np.full((len(sources), int(lengths.max())), PAD_ID, dtype=np.int64)
    for row, ids in enumerate(sources):
        src[row, : len(ids)] = ids
    return src, lengths


def length_batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, longest first, cut so that rows x longest <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class OnnxTranslator:
    """An export's model with its codec and decode defaults: texts in, hypotheses out."""

    def __init__(self, model: ExportedModel) -> None:
        self.model = model
        self.defaults = RuntimeOptions.from_defaults(model.decode, model.train_max_len)

    @classmethod
    def from_folder(
        cls, folder: str | Path, precision: str = "fp32", threads: int = 1
    ) -> OnnxTranslator:
        return cls(open_export(folder, precision, threads))

    def options(self, **changes: Any) -> RuntimeOptions:
        """The export's defaults with ``changes`` (None: keep the default), checked."""
        return self.defaults.with_changes(self.model.train_max_len, **changes)

    def translate(self, texts: Sequence[str], **changes: Any) -> list[str]:
        """The best translation of each text, in input order."""
        return [hyps[0].text for hyps in self.translate_nbest(texts, **changes)]

    def translate_nbest(
        self,
        texts: Sequence[str],
        progress: Callable[[int], None] | None = None,
        **changes: Any,
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each text, best first, in input order."""
        options = self.options(**changes)
        results: list[list[Hypothesis]] = [[Hypothesis("", [], 0.0)] for _ in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        sources = self.model.codec.encode_source([texts[i].strip() for i in todo])
        budget = max(1, options.batch_tokens // options.beam_size)
        for batch in length_batches([len(s) for s in sources], budget):
            hypotheses = self.search([sources[j] for j in batch], options)
            flat = [h.tokens for hyps in hypotheses for h in hyps]
            texts_out = iter(self.model.codec.decode_target(flat))
            for j, hyps in zip(batch, hypotheses, strict=True):
                for hyp in hyps:
                    hyp.text = next(texts_out)
                results[todo[j]] = hyps
            if progress is not None:
                progress(len(batch))
        return results

    def search(self, sources: list[list[int]], options: RuntimeOptions) -> list[list[Hypothesis]]:
        """Search encoded sources (id lists ending in EOS) as one batch."""
        src, lengths = pad(sources)
        if options.beam_size == 1:
            return greedy_search(self.model, src, lengths, options)
        return beam_search(self.model, src, lengths, options)
