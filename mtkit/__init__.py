"""mtkit: RNN sequence-to-sequence neural machine translation, the classic recipe done properly.

The Python entry points most users need::

    from mtkit import Translator
    translator = Translator.from_checkpoint("runs/x/best.pt")
    translator.translate(["A sentence."], beam_size=5)

Names are imported on first use, so command-line tools start (and report mistakes) fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Translator": "mtkit.search.translator",
    "Hypothesis": "mtkit.search.hypothesis",
    "Seq2Seq": "mtkit.model.seq2seq",
    "load_checkpoint": "mtkit.model.checkpoint",
}

__all__ = ["Hypothesis", "Seq2Seq", "Translator", "__version__", "load_checkpoint"]

if TYPE_CHECKING:
    from mtkit.model.checkpoint import load_checkpoint
    from mtkit.model.seq2seq import Seq2Seq
    from mtkit.search import Hypothesis
    from mtkit.search.translator import Translator


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtkit' has no attribute {name!r}")
