"""Encoding text chunks to id arrays, in this process or in a pool of worker processes.

A chunk is one record batch of a split's ``text.arrow``. Encoding it gives flat numpy
arrays (see :class:`EncodedChunk`); the source side is reversed and given its EOS with
array operations, the same ids :meth:`TextCodec.encode_source` gives one sentence at a
time. :class:`ChunkEncoder` hands chunks to worker processes (each with its own
sentencepiece processor, reading its chunk from disk) and yields the results in chunk
order, so the cache is the same bytes whatever the number of workers.

Workers are plain ``python -m mtkit.corpus.worker`` subprocesses that talk over their
stdin/stdout pipes, not :mod:`multiprocessing` children: they neither fork a parent
that may run threads (torch, gloo) nor re-run the user's main script, as the ``fork``
and ``spawn`` start methods would. This module is what they import: it stays free of
torch and datasets.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mtkit.corpus.layout import TextReader
from mtkit.corpus.tokenizer import EOS_ID, TextCodec
from mtkit.runtime import forget_stop, kill_on_stop


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


class WorkerProcess:
    """One ``python -m mtkit.corpus.worker`` process and its request/reply pipes."""

    def __init__(self, src_model: Path, tgt_model: Path | None, reverse: bool) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "mtkit.corpus.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment(),
        )
        self._on_stop = kill_on_stop(self._process.pid)  # a stop signal kills it at once
        self._send_message(("start", str(src_model), tgt_model and str(tgt_model), reverse))

    def send(self, path: str, index: int, max_len: int | None) -> None:
        self._send_message(("encode", path, index, max_len))

    def receive(self) -> EncodedChunk:
        assert self._process.stdout is not None
        reply = read_message(self._process.stdout)
        if reply is None:
            status = self._process.wait()
            raise RuntimeError(f"a corpus encoding worker process exited (status {status})")
        if reply[0] != "ok":
            raise RuntimeError(f"a corpus encoding worker failed: {reply[1]}")
        chunk = reply[1]
        assert isinstance(chunk, EncodedChunk)
        return chunk

    def _send_message(self, message: tuple[object, ...]) -> None:
        assert self._process.stdin is not None
        write_message(self._process.stdin, message)

    def stop(self, at_once: bool = False) -> None:
        """Close its input, so it exits once idle; kill it ``at_once`` or after a second."""
        with contextlib.suppress(OSError):
            assert self._process.stdin is not None
            self._process.stdin.close()
        try:
            self._process.wait(timeout=0 if at_once else 1.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        forget_stop(self._on_stop)


def child_environment() -> dict[str, str]:
    """This process's environment, with this copy of mtkit first on a child's import path."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding mtkit/
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def serve_quietly(serve: Callable[[], None]) -> None:
    """A helper process's request loop. When the parent goes away mid-message (it was
    stopped: a broken pipe, a message cut short) the helper ends at once and says
    nothing, since the parent reports the stop itself."""
    try:
        serve()
    except (BrokenPipeError, ConnectionResetError, EOFError, pickle.UnpicklingError):
        os._exit(0)  # skip the final flush of a stdout nobody reads


def write_message(stream: IO[bytes], message: object) -> None:
    """A pickled message, preceded by its length (8 bytes, little-endian)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(len(data).to_bytes(8, "little") + data)
    stream.flush()


def read_message(stream: IO[bytes]) -> Any:
    """The next message of ``stream``, or None at its end."""
    header = stream.read(8)
    if len(header) < 8:
        return None
    return pickle.loads(stream.read(int.from_bytes(header, "little")))
