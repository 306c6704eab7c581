"""Sentencepiece subwords and the one place where text becomes model ids and back.

Models are kept as serialized bytes so that a checkpoint can carry them: a trained
model never depends on a tokenizer file lying next to it. Special ids are fixed for
every model, so batching and search code can use the constants below.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

import sentencepiece as spm

from mtkit.config import TokenizerConfig
from mtkit.errors import DataError

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# The largest sentencepiece training sample, in characters (see sample_size): its trainer
# needs about 22 bytes per character, so about 350 MB.
SAMPLE_CHARACTERS = 16_000_000
# Sentencepiece's EM sums its statistics per thread, so the model depends on the thread
# count: a fixed count makes the same corpus give the same model (and cache) on every
# machine, whatever its number of cores.
TRAINER_THREADS = 2
# Below this many texts, encode/decode one by one instead of through sentencepiece's
# threaded batch API, whose per-call start-up dominates small batches (measured on a
# 2-core CPU: 8 sentences 56 us one by one against 1.4 ms batched; the threads pay from
# about 64 texts on).
SERIAL_BELOW = 64


class SubwordModel:
    """One sentencepiece model, loaded from bytes.

    ``threads`` is how many C++ threads a batch :meth:`encode` uses (default: up to 4);
    a worker process that is one of several encoding a corpus uses 1.
    """

    def __init__(self, model_bytes: bytes, threads: int | None = None) -> None:
        self.model_bytes = model_bytes
        self._sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self._threads = threads or max(1, min(4, os.cpu_count() or 1))

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def special_ids(self) -> dict[str, int]:
        """The ids the model gives its special pieces (-1: it has none)."""
        sp = self._sp
        return {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Subword ids of each text (sentencepiece's batch API, in C++ threads).

        Fewer than :data:`SERIAL_BELOW` texts are encoded one by one in this thread: the
        batch API starts its threads on every call, about 0.5 ms, while one sentence
        takes about 12 us (a service encodes a few sentences at a time).
        """
        if len(texts) < SERIAL_BELOW:
            return [self._sp.encode(text, out_type=int) for text in texts]
        return self._sp.encode(list(texts), out_type=int, num_threads=self._threads)

    def pieces(self, text: str) -> list[str]:
        return self._sp.encode(text, out_type=str)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Detokenized text of each id sequence (special ids are dropped by sentencepiece).

        One by one below :data:`SERIAL_BELOW` sequences, as :meth:`encode`.
        """
        if len(ids) < SERIAL_BELOW:
            return [self._sp.decode(list(seq)) for seq in ids]
        return self._sp.decode([list(seq) for seq in ids])

    def id_to_piece(self, index: int) -> str:
        return str(self._sp.id_to_piece(index))

    def piece_to_id(self, piece: str) -> int:
        return int(self._sp.piece_to_id(piece))


def sample_size(cfg: TokenizerConfig, sentences: int, characters: int) -> int:
    """How many sentences sentencepiece samples from a corpus of ``sentences``.

    Sentencepiece's trainer holds its sample in memory, about 22 bytes per character
    (measured with the unigram trainer: 1.7 GB for 2M sentences of 38 characters), and
    its time grows with it too. The sample is ``tokenizer.max_sentences`` sentences
    unless that many sentences of this corpus's mean length exceed
    :data:`SAMPLE_CHARACTERS`; then it is as many as fit. A corpus within the budget
    trains exactly as it would without one.
    """
    mean = characters / max(sentences, 1)
    fitting = max(1, int(SAMPLE_CHARACTERS / max(mean, 1.0)))
    return cfg.max_sentences if min(sentences, cfg.max_sentences) <= fitting else fitting


def train_subword_model(
    sentences: Iterable[str], cfg: TokenizerConfig, sample: int | None = None
) -> bytes:
    """Train a sentencepiece model on ``sentences`` and return it serialized.

    ``vocab_size`` is an upper bound (``hard_vocab_limit=false``), so a tiny corpus
    gets the vocabulary it can support instead of an error. Sentencepiece reads every
    sentence and keeps a random sample of ``sample`` of them (default
    ``tokenizer.max_sentences``; see :func:`sample_size`), so ``sentences`` can be a
    stream far larger than memory.
    """
    spm.set_random_generator_seed(1)
    buffer = io.BytesIO()
    non_empty: Iterator[str] = (s for s in sentences if s)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=non_empty,
            model_writer=buffer,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            input_sentence_size=sample or cfg.max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            max_sentence_length=65536,
            num_threads=TRAINER_THREADS,
            minloglevel=2,
        )
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise DataError(f"sentencepiece training failed: {first_line}") from None
    return buffer.getvalue()


class TextCodec:
    """Text <-> ids for one language pair, with the source processing of the classic recipe.

    Source ids are the subword pieces, reversed when ``reverse_source`` (Sutskever et al.
    2014), followed by EOS. Training and translation both call :meth:`encode_source`,
    so a model is always fed its input exactly as it was trained.
    """

    def __init__(self, src: SubwordModel, tgt: SubwordModel, reverse_source: bool) -> None:
        self.src = src
        self.tgt = tgt
        self.reverse_source = reverse_source

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def encode_source(self, texts: Sequence[str]) -> list[list[int]]:
        return [source_ids(p, self.reverse_source) for p in self.src.encode(texts)]

    def encode_target(self, texts: Sequence[str]) -> list[list[int]]:
        """Target pieces without BOS/EOS (batching adds them)."""
        return self.tgt.encode(texts)

    def decode_target(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.tgt.decode([strip_special(seq) for seq in ids])

    def source_pieces(self, text: str) -> list[str]:
        """Source pieces in reading order (for attention plots)."""
        return self.src.pieces(text)

    def to_state(self) -> dict[str, object]:
        """What a checkpoint stores to rebuild this codec."""
        return {
            "src_model": self.src.model_bytes,
            "tgt_model": None if self.joint else self.tgt.model_bytes,
            "reverse_source": self.reverse_source,
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> TextCodec:
        src = SubwordModel(bytes(cast(bytes, state["src_model"])))
        tgt_bytes = state.get("tgt_model")
        tgt = src if tgt_bytes is None else SubwordModel(bytes(cast(bytes, tgt_bytes)))
        return cls(src, tgt, bool(state["reverse_source"]))


def source_ids(pieces: Sequence[int], reverse: bool) -> list[int]:
    """Model input for one source sentence: pieces (reversed if asked) + EOS."""
    body = list(reversed(pieces)) if reverse else list(pieces)
    return [*body, EOS_ID]


def strip_special(ids: Sequence[int]) -> list[int]:
    """Cut a generated sequence at its first EOS and drop BOS/PAD."""
    out: list[int] = []
    for i in ids:
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(int(i))
    return out


def given_codec(cfg: TokenizerConfig, reverse_source: bool) -> TextCodec | None:
    """The codec of existing sentencepiece models (``tokenizer.model``, or
    ``tokenizer.src_model`` and ``tgt_model``), or None when they are to be trained."""
    if cfg.model is not None:
        joint = read_subword_file(cfg.model, "tokenizer.model")
        return TextCodec(joint, joint, reverse_source)
    if cfg.src_model is not None and cfg.tgt_model is not None:
        src = read_subword_file(cfg.src_model, "tokenizer.src_model")
        tgt = read_subword_file(cfg.tgt_model, "tokenizer.tgt_model")
        return TextCodec(src, tgt, reverse_source)
    return None


def read_subword_file(path: str, key: str) -> SubwordModel:
    """A sentencepiece model file with mtkit's special ids; else one line naming ``key``."""
    where = f"{key}={path}"
    try:
        model = SubwordModel(Path(path).expanduser().read_bytes())
    except FileNotFoundError:
        raise DataError(f"{where}: no such file; expected a sentencepiece .model file") from None
    except OSError as error:
        raise DataError(f"{where}: cannot read it ({error.strerror or error})") from None
    except Exception:  # sentencepiece raises RuntimeError/TypeError on bytes it cannot parse
        raise DataError(f"{where}: not a sentencepiece model (it does not load)") from None
    found = model.special_ids()
    wanted = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}
    if found != wanted:
        have = " ".join(f"{name}={index}" for name, index in found.items())
        need = " ".join(f"--{name}_id={index}" for name, index in wanted.items())
        raise DataError(
            f"{where}: its special ids are {have}; mtkit needs a model trained with {need} "
            "(or leave the tokenizer keys null and mtkit trains one)"
        )
    return model
