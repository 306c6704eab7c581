"""Encoding text chunks to id arrays, in this process or in a pool of worker processes.

A chunk is one record batch of a split's ``text.arrow``. Encoding it gives flat numpy
arrays (see :class:`EncodedChunk`); the source side is reversed and given its EOS with
array operations, the same ids :meth:`TextCodec.encode_source` gives one sentence at a
time. :class:`ChunkEncoder` hands chunks to worker processes (each with its own
sentencepiece processor, reading its chunk from disk) and yields the results in chunk
order, so the cache is the same bytes whatever the number of workers.

Workers are ``python -m mtkit.corpus.worker`` helper processes
(:mod:`mtkit.corpus.helper`). This module is what they import: it stays free of torch
and datasets.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtkit.corpus.helper import HelperProcess
from mtkit.corpus.layout import TextReader
from mtkit.corpus.tokenizer import EOS_ID, TextCodec


@dataclass
class EncodedChunk:
    """The ids of one chunk. N pairs kept, ``dropped`` pairs over ``max_len`` left out."""

    src_lengths: np.ndarray  # (N,) int64: source ids per pair, EOS included
    src_ids: np.ndarray  # (sum of src_lengths,) int32: pieces (reversed if asked) + EOS
    tgt_lengths: np.ndarray  # (N,) int64: target pieces per pair
    tgt_ids: np.ndarray  # (sum of tgt_lengths,) int32
    dropped: int
    pairs_in: int


def flatten(pieces: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(lengths (N,) int64, values int32) of a list of id lists."""
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    values = np.fromiter(
        itertools.chain.from_iterable(pieces), dtype=np.int32, count=int(lengths.sum())
    )
    return lengths, values


def select(
    lengths: np.ndarray, values: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Only the sequences where ``keep`` (N,) is true."""
    return lengths[keep], values[np.repeat(keep, lengths)]


def source_layout(
    lengths: np.ndarray, values: np.ndarray, reverse: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence reversed (if asked) and followed by EOS: :func:`source_ids`, vectorized."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if reverse and values.size:
        owner = np.repeat(np.arange(len(lengths)), lengths)  # sequence of each value
        values = values[(starts + ends - 1)[owner] - np.arange(values.size)]
    out_lengths = lengths + 1
    out = np.empty(values.size + len(lengths), dtype=np.int32)
    eos_at = np.cumsum(out_lengths) - 1
    body = np.ones(out.size, dtype=bool)
    body[eos_at] = False
    out[body] = values
    out[eos_at] = EOS_ID
    return out_lengths, out


def encode_texts(
    codec: TextCodec, src: list[str], tgt: list[str], max_len: int | None
) -> EncodedChunk:
    """Encode a chunk; with ``max_len``, drop pairs with more pieces on either side."""
    src_lengths, src_ids = flatten(codec.src.encode(src))
    tgt_lengths, tgt_ids = flatten(codec.tgt.encode(tgt))
    dropped = 0
    if max_len is not None:
        keep = (src_lengths <= max_len) & (tgt_lengths <= max_len)
        dropped = int(len(keep) - keep.sum())
        if dropped:
            src_lengths, src_ids = select(src_lengths, src_ids, keep)
            tgt_lengths, tgt_ids = select(tgt_lengths, tgt_ids, keep)
    src_lengths, src_ids = source_layout(src_lengths, src_ids, codec.reverse_source)
    return EncodedChunk(src_lengths, src_ids, tgt_lengths, tgt_ids, dropped, len(src))


# -- worker processes ------------------------------------------------------------------------


class ChunkEncoder:
    """Encodes the chunks of ``text.arrow`` files, in file order, with ``workers`` processes.

    With one worker it encodes in this process. Otherwise chunk ``i`` goes to worker
    ``i % workers`` (:mod:`mtkit.corpus.worker`, a fresh interpreter that loads the
    models from ``models``), and results are read back in chunk order; at most
    :data:`IN_FLIGHT` chunks per worker are outstanding, so memory stays bounded.
    """

    def __init__(self, codec: TextCodec, workers: int, models: tuple[Path, Path | None]) -> None:
        self.codec, self.workers, self.models = codec, workers, models
        self._workers: list[WorkerProcess] = []

    def __enter__(self) -> ChunkEncoder:
        src, tgt = self.models
        try:
            for _ in range(self.workers if self.workers > 1 else 0):
                self._workers.append(WorkerProcess(src, tgt, self.codec.reverse_source))
        except BaseException:
            self.__exit__(RuntimeError)
            raise
        return self

    def __exit__(self, error: type[BaseException] | None, *_details: object) -> None:
        for worker in self._workers:
            worker.stop(at_once=error is not None)

    def encode(self, path: Path, max_len: int | None) -> Iterator[EncodedChunk]:
        """The chunks of ``path`` encoded, in file order."""
        reader = TextReader(path)
        if self._workers:
            chunks = reader.batches
            reader.close()  # the workers read the chunks themselves
            yield from self._pooled(str(path), chunks, max_len)
            return
        try:
            for index in range(reader.batches):
                yield encode_texts(self.codec, *reader.batch(index), max_len)
        finally:
            reader.close()

    def _pooled(self, path: str, chunks: int, max_len: int | None) -> Iterator[EncodedChunk]:
        workers, sent = self._workers, 0
        for index in range(chunks):
            while sent < chunks and sent < index + IN_FLIGHT * len(workers):
                workers[sent % len(workers)].send(path, sent, max_len)
                sent += 1
            yield workers[index % len(workers)].receive()


IN_FLIGHT = 2


class WorkerProcess(HelperProcess):
    """One ``python -m mtkit.corpus.worker`` process, encoding the chunks it is sent."""

    def __init__(self, src_model: Path, tgt_model: Path | None, reverse: bool) -> None:
        super().__init__("mtkit.corpus.worker")
        self.send_message(("start", str(src_model), tgt_model and str(tgt_model), reverse))

    def send(self, path: str, index: int, max_len: int | None) -> None:
        self.send_message(("encode", path, index, max_len))

    def receive(self) -> EncodedChunk:
        reply = self.next_reply()
        if reply is None:
            status = self.exit_status()
            raise RuntimeError(f"a corpus encoding worker process exited (status {status})")
        if reply[0] != "ok":
            raise RuntimeError(f"a corpus encoding worker failed: {reply[1]}")
        chunk = reply[1]
        assert isinstance(chunk, EncodedChunk)
        return chunk
