"""mtkit: RNN sequence-to-sequence neural machine translation, the classic recipe done properly.

The Python entry points most users need::

    from mtkit import Translator
    translator = Translator.from_checkpoint("runs/x/best.pt")
    translator.translate(["A sentence."], beam_size=5)
"""

from mtkit.checkpoint import load_checkpoint
from mtkit.model import Seq2Seq
from mtkit.search import Hypothesis
from mtkit.translator import Translator

__version__ = "0.1.0"

__all__ = ["Hypothesis", "Seq2Seq", "Translator", "__version__", "load_checkpoint"]
