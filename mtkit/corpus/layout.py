"""How one tokenized split lies on disk, and :class:`CorpusSplit`, its memory-mapped view.

A split folder holds, for each side (``src``, ``tgt``), three ``.npy`` arrays:

- ``{side}_ids.npy``: every pair's ids back to back (int32). Source ids are the model
  input (pieces, reversed if asked, + EOS); target ids are the bare pieces.
- ``{side}_offsets.npy``: N + 1 int64 offsets into the ids; pair ``i`` is
  ``ids[offsets[i]:offsets[i + 1]]``.
- ``{side}_lengths.npy``: the lengths the sampler batches by, in the smallest integer
  type that holds them (int16 for training data within ``data.max_len`` < 32767):
  source ids incl. EOS, and target pieces + 1 (the EOS that batching adds).

Validation and test splits also keep their text in ``text.arrow`` (an Arrow IPC file,
columns ``src`` and ``tgt``), for BLEU. The arrays are written as a stream, chunk by
chunk (the ``.npy`` header, which holds the length, is written last), and read back
memory-mapped: opening a split of any size takes milliseconds and no memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

SIDES = ("src", "tgt")
TEXT_FILE = "text.arrow"
_NPY_HEADER = 128  # bytes reserved for the .npy header; the length is filled in at the end
_TEXT_SCHEMA = pa.schema([("src", pa.string()), ("tgt", pa.string())])


def array_files(side: str) -> tuple[str, str, str]:
    """File names of one side's ids, offsets and lengths."""
    return f"{side}_ids.npy", f"{side}_offsets.npy", f"{side}_lengths.npy"


def lengths_dtype(longest: int | None) -> np.dtype:
    """int16 when every length is known to be at most ``longest`` < 32767, else int32."""
    fits = longest is not None and longest <= np.iinfo(np.int16).max
    return np.dtype(np.int16 if fits else np.int32)


class NpyAppender:
    """A 1-D ``.npy`` file written chunk by chunk, its length unknown until :meth:`close`."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._handle: BinaryIO = path.open("wb")
        self._handle.write(b"\0" * _NPY_HEADER)

    def append(self, values: np.ndarray) -> None:
        self._handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def close(self) -> None:
        self._handle.seek(0)
        self._handle.write(npy_header(self.dtype, self.count))
        self._handle.close()


def npy_header(dtype: np.dtype, count: int) -> bytes:
    """A version 1.0 ``.npy`` header for a 1-D array, padded to exactly 128 bytes."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({count},), }}"
    body = text.ljust(_NPY_HEADER - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


class SplitWriter:
    """Appends encoded chunks of one split to its folder; ``close()`` returns the pair count."""

    def __init__(self, folder: Path, lengths: np.dtype) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, tuple[NpyAppender, NpyAppender, NpyAppender]] = {}
        self._end = {side: 0 for side in SIDES}
        for side in SIDES:
            ids, offsets, lens = (folder / name for name in array_files(side))
            self._files[side] = (
                NpyAppender(ids, np.dtype(np.int32)),
                NpyAppender(offsets, np.dtype(np.int64)),
                NpyAppender(lens, lengths),
            )
            self._files[side][1].append(np.zeros(1, dtype=np.int64))
        self.pairs = 0

    def append(self, side: str, lengths: np.ndarray, ids: np.ndarray, extra: int) -> None:
        """One chunk of one side: ``lengths`` (N,) ids per pair, ``ids`` all of them flat.

        ``extra`` is added to the stored lengths (1 for the target's EOS).
        """
        ids_file, offsets_file, lengths_file = self._files[side]
        ids_file.append(ids)
        offsets_file.append(self._end[side] + np.cumsum(lengths, dtype=np.int64))
        self._end[side] += int(ids.size)
        lengths_file.append(lengths + extra)
        if side == "src":
            self.pairs += len(lengths)

    def close(self) -> int:
        for files in self._files.values():
            for appender in files:
                appender.close()
        return self.pairs


class TextWriter:
    """``text.arrow``: one record batch of ``(src, tgt)`` strings per :meth:`write`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, _TEXT_SCHEMA)

    def write(self, src: list[str], tgt: list[str]) -> None:
        columns = [pa.array(src, pa.string()), pa.array(tgt, pa.string())]
        self._writer.write_batch(pa.record_batch(columns, schema=_TEXT_SCHEMA))

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


class TextReader:
    """Random access to the record batches of a ``text.arrow``, read (not mapped) one at a time."""

    def __init__(self, path: Path) -> None:
        self._source = pa.OSFile(str(path), "rb")
        self._reader = pa.ipc.open_file(self._source)

    @property
    def batches(self) -> int:
        return int(self._reader.num_record_batches)

    def batch(self, index: int) -> tuple[list[str], list[str]]:
        batch = self._reader.get_batch(index)
        return batch.column(0).to_pylist(), batch.column(1).to_pylist()

    def record_batch(self, index: int) -> pa.RecordBatch:
        """Batch ``index`` as Arrow columns, for reading only some of its rows."""
        return self._reader.get_batch(index)

    def close(self) -> None:
        self._source.close()


class CorpusSplit:
    """One tokenized split: memory-mapped id arrays, their offsets, and lengths.

    ``src_values``/``tgt_values`` (int32) hold every pair's ids back to back,
    ``src_offsets``/``tgt_offsets`` (int64, N + 1) index them. Nothing is copied.
    """

    def __init__(self, role: str, folder: Path) -> None:
        self.role, self.folder = role, folder
        loaded = {
            side: [np.load(folder / name, mmap_mode="r") for name in array_files(side)]
            for side in SIDES
        }
        self.src_values, self.src_offsets, self._src_lengths = loaded["src"]
        self.tgt_values, self.tgt_offsets, self._tgt_lengths = loaded["tgt"]

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        """Source lengths including EOS, (N,) int16 or int32."""
        return self._src_lengths

    @property
    def tgt_lengths(self) -> np.ndarray:
        """Target lengths including EOS (the number of predicted tokens), (N,) int16 or int32."""
        return self._tgt_lengths

    def source(self, index: int) -> np.ndarray:
        return self.src_values[self.src_offsets[index] : self.src_offsets[index + 1]]

    def target(self, index: int) -> np.ndarray:
        """Target pieces without BOS/EOS."""
        return self.tgt_values[self.tgt_offsets[index] : self.tgt_offsets[index + 1]]

    def texts(self, column: str) -> list[str]:
        """The raw text of ``column`` ('src' or 'tgt'); kept for validation and test splits."""
        path = self.folder / TEXT_FILE
        if column not in SIDES or not path.is_file():
            raise KeyError(f"split {self.role} keeps no text column {column!r}")
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all().column(column).to_pylist()
