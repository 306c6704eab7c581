"""Text <-> ids for an export: the source processing of :class:`mtkit.corpus.tokenizer.TextCodec`.

The export's sentencepiece models, the source pieces reversed when the model was trained
so, followed by EOS; outputs cut at EOS, without BOS/PAD, then detokenized. This is the
checkpoint codec's processing written again over sentencepiece alone, since the
corpus package needs the configuration libraries; ``tests/test_onnx_runtime.py`` holds
the two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from mtkit.errors import CheckpointError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def load_sentencepiece(path: Path) -> spm.SentencePieceProcessor:
    """A sentencepiece model file; missing or damaged is a one-line CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing sentencepiece model of the export")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except Exception as error:  # sentencepiece raises RuntimeError/OSError
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: damaged sentencepiece model ({first})") from None


class Codec:
    """Source text -> model input ids; output ids -> text."""

    def __init__(self, source: Path, target: Path, reverse_source: bool) -> None:
        self.src = load_sentencepiece(source)
        self.tgt = load_sentencepiece(target)
        self.reverse_source = reverse_source

    def encode_source(self, texts: Sequence[str]) -> list[list[int]]:
        """Pieces (reversed if the model reads them so) + EOS, for each text."""
        encoded = []
        for text in texts:
            pieces = [int(i) for i in self.src.encode(text, out_type=int)]
            body = pieces[::-1] if self.reverse_source else pieces
            encoded.append([*body, EOS_ID])
        return encoded

    def decode_target(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized text of each sequence, cut at its first EOS, BOS and PAD dropped."""
        return [str(self.tgt.decode(strip_special(seq))) for seq in ids]


def strip_special(ids: Sequence[int]) -> list[int]:
    """Cut a generated sequence at its first EOS and drop BOS/PAD."""
    out: list[int] = []
    for i in ids:
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(int(i))
    return out
