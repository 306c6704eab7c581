"""An ONNX export as the service's translator: the onnxruntime runtime behind the batcher.

:class:`ExportTranslator` gives the batcher the part of the
:class:`~mtkit.search.translator.Translator` interface it calls (``defaults``,
``translate_nbest``, ``device``, ``precision``) over an
:class:`~mtkit.onnx_runtime.translator.OnnxTranslator`, so the worker kinds that decode
whole requests in groups serve an export unchanged: a worker thread, and the model
process (one, or ``--workers N``). The runtime has no greedy stream for requests to join,
so greedy requests are grouped like beam ones; its results do not depend on their batch,
so every answer equals translating the request alone, and equals ``mtkit-onnx``'s for the
same text and settings. Which paths are exports, and what they cannot serve:
:mod:`mtkit.serve.export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mtkit
from mtkit.onnx_runtime.options import RuntimeOptions
from mtkit.onnx_runtime.translator import OnnxTranslator
from mtkit.search.hypothesis import Hypothesis


class ExportTranslator:
    """An export's :class:`OnnxTranslator` as the service's batcher calls a Translator:
    ``translate_nbest`` gives :class:`~mtkit.search.hypothesis.Hypothesis` lists
    (without attention), which cross the model process's pipe and fill the JSON as a
    checkpoint's do."""

    device = "cpu"

    def __init__(self, runtime: OnnxTranslator, precision: str, threads: int) -> None:
        self.runtime = runtime
        self.precision = precision
        self.threads = threads  # onnxruntime's threads per graph

    @classmethod
    def open(
        cls, folder: str | Path, precision: str = "fp32", threads: int = 1
    ) -> ExportTranslator:
        """The export in ``folder``; a bad folder is a one-line CheckpointError."""
        return cls(OnnxTranslator.from_folder(folder, precision, threads), precision, threads)

    @property
    def defaults(self) -> RuntimeOptions:
        """The export's decode defaults (``beam_size``, ``batch_tokens``, ...)."""
        return self.runtime.defaults

    def translate_nbest(
        self,
        texts: Sequence[str],
        beam_size: int | None = None,
        nbest: int = 1,
        return_attention: bool = False,
    ) -> list[list[Hypothesis]]:
        """The ``nbest`` best of each text, in input order (``return_attention`` is
        ignored: requests for attention are refused before they get here)."""
        results = self.runtime.translate_nbest(texts, beam_size=beam_size, nbest=nbest)
        return [
            [Hypothesis(h.text, list(h.tokens), float(h.score)) for h in hyps] for hyps in results
        ]

    def info(self, name: str) -> dict[str, Any]:
        """What ``GET /v1/model`` says of the export, in a checkpoint's fields: no
        languages, parameter count or training data (``model.json`` holds none)."""
        model = self.runtime.model
        members = model.meta["members"]
        sentencepiece = model.meta["sentencepiece"]
        source, target = (model.folder / sentencepiece[k] for k in ("source", "target"))
        return {
            "mtkit_version": mtkit.__version__,
            "backend": "onnx",
            "source_language": None,
            "target_language": None,
            "checkpoints": [name],
            "ensemble_weights": [m["weight"] for m in members] if len(members) > 1 else None,
            "parameters": None,
            "models": [m["architecture"] for m in members],
            "vocabulary": {
                "source": model.codec.src.vocab_size(),
                "target": model.codec.tgt.vocab_size(),
                "output": len(model.output_ids),
                "joint": source.read_bytes() == target.read_bytes(),
                "reverse_source": model.codec.reverse_source,
                "shortlist": False,
            },
            "decoding": asdict(self.defaults),
            "training_data": None,
            "device": self.device,
            "precision": self.precision,
        }
