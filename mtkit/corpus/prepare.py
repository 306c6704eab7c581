"""Preparing a corpus cache entry in three streaming stages, in memory that does not grow.

1. **read**: each split's pairs are read and validated by the readers (an error names
   its file and line), pairs with an empty side are dropped (counted), and the rest
   are written to the split's ``text.arrow`` in chunks of :data:`CHUNK_PAIRS`.
2. **sentencepiece**: trained in a child process (:mod:`mtkit.corpus.subwords`) on the
   training text, read from ``text.arrow``: all of it in the order earlier versions used
   (blocks of 10,000 pairs: sources, then targets) when it fits the bounded sample
   (:func:`mtkit.corpus.tokenizer.sample_size`), so the same corpus gives the same model; else
   a uniform random sample of that many sentences.
3. **encode**: every chunk is encoded (in worker processes when there are many), over-long
   training pairs are dropped (counted), and the ids are appended to the split's arrays
   (:mod:`mtkit.corpus.layout`) in chunk order. The training text is then deleted.

Each stage logs its progress with the time left (:mod:`mtkit.corpus.progress`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtkit import runtime
from mtkit.config import DataConfig, TokenizerConfig
from mtkit.corpus.encode import ChunkEncoder
from mtkit.corpus.layout import TEXT_FILE, SplitWriter, TextWriter, lengths_dtype
from mtkit.corpus.progress import StageProgress, run_with_heartbeat
from mtkit.corpus.sources import SplitSource
from mtkit.corpus.subwords import SubwordJob, SubwordTrainers
from mtkit.corpus.tokenizer import (
    SAMPLE_CHARACTERS,
    SubwordModel,
    TextCodec,
    given_codec,
    sample_size,
)
from mtkit.errors import DataError

log = logging.getLogger("mtkit.corpus")

CHUNK_PAIRS = 10_000  # pairs per text chunk: the unit of reading, encoding and writing
# Fewer chunks than this (200,000 pairs) are encoded in this process: starting a worker
# costs about half a second, as long as encoding 60,000 pairs.
MIN_POOL_CHUNKS = 20
MAX_WORKERS = 8


@dataclass
class SplitText:
    """What reading a split found: pairs kept, pairs dropped as empty, characters per side."""

    pairs: int = 0
    empty: int = 0
    src_chars: int = 0
    tgt_chars: int = 0


def prepare(
    cfg: DataConfig, tok_cfg: TokenizerConfig, sources: dict[str, SplitSource], work: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    """Write every file of a cache entry into ``work``; returns the stats and stage seconds."""
    stats: dict[str, Any] = {"sources": {r: s.description for r, s in sources.items()}}
    laps = [time.monotonic()]

    def lap() -> float:
        laps.append(time.monotonic())
        return round(laps[-1] - laps[-2], 3)

    given = given_codec(tok_cfg, cfg.reverse_source)
    trainers = 0 if given is not None else (1 if tok_cfg.joint else 2)
    with SubwordTrainers(trainers) as running:  # they start while we read
        texts = {
            role: read_split(source, work / role / TEXT_FILE) for role, source in sources.items()
        }
        for role, text in texts.items():
            stats[f"{role}_empty_dropped"] = text.empty  # logged once per run, by the trainer
        seconds = {"read": lap()}
        codec = given or train_codec(
            work / "train" / TEXT_FILE, texts["train"], cfg, tok_cfg, running
        )
    (work / "src.model").write_bytes(codec.src.model_bytes)
    if not codec.joint:
        (work / "tgt.model").write_bytes(codec.tgt.model_bytes)
    seconds["sentencepiece"] = lap()
    chunks = sum(-(-text.pairs // CHUNK_PAIRS) for text in texts.values())
    models = (work / "src.model", None if codec.joint else work / "tgt.model")
    with ChunkEncoder(codec, worker_count(chunks), models) as encoder:
        for role, text in texts.items():
            encode_split(encoder, role, work / role, text.pairs, cfg.max_len, stats)
    seconds["encode"] = lap()
    seconds["total"] = round(laps[-1] - laps[0], 3)
    stats["reverse_source"] = cfg.reverse_source
    stats["src_vocab"] = codec.src.vocab_size
    stats["tgt_vocab"] = codec.tgt.vocab_size
    return stats, seconds


def worker_count(chunks: int) -> int:
    """Processes that encode: ``MTKIT_DATA_WORKERS`` if set (at most the usable cores),
    else the usable cores (at most 8).

    Without the variable, a corpus of fewer than :data:`MIN_POOL_CHUNKS` chunks is
    encoded in this process, where sentencepiece's own threads use the cores.
    """
    value = os.environ.get("MTKIT_DATA_WORKERS", "").strip()
    if value:  # at most one per usable core, like every other count of processes
        return runtime.check_process_count("MTKIT_DATA_WORKERS", value)
    return min(runtime.usable_cpus(), MAX_WORKERS) if chunks >= MIN_POOL_CHUNKS else 1


# -- stage 1: read and validate ----------------------------------------------------------------


def read_split(source: SplitSource, path: Path) -> SplitText:
    """Stream a split's non-empty pairs into ``text.arrow``; count the empty ones."""
    progress = StageProgress(
        f"reading {source.role} ({source.description})", source.size, source.unit
    )
    chunks = _TextChunks(path, progress, source.unit)
    try:
        for s, t in source.pairs():
            chunks.add(s, t)
        chunks.flush()
    finally:
        chunks.close()
        seconds = progress.close()
    if chunks.text.pairs == 0:
        raise DataError(
            f"{source.description}: the {source.role} split has no usable sentence pairs"
        )
    log.info("read %s: %d pairs in %.1f s", source.role, chunks.text.pairs, seconds)
    return chunks.text


class _TextChunks:
    """Buffers non-empty pairs and writes them to ``text.arrow`` :data:`CHUNK_PAIRS` at a time."""

    def __init__(self, path: Path, progress: StageProgress, unit: str) -> None:
        self.writer = TextWriter(path)
        self.progress, self.unit = progress, unit
        self.text = SplitText()
        self.src: list[str] = []
        self.tgt: list[str] = []
        self.seen = 0  # pairs read since the last flush, empty ones included
        self.bytes_per_char = 0.0  # UTF-8 bytes per character, measured on the first chunk

    def add(self, s: str, t: str) -> None:
        self.seen += 1
        if s and t:
            self.src.append(s)
            self.tgt.append(t)
            if len(self.src) == CHUNK_PAIRS:
                self.flush()
        else:
            self.text.empty += 1

    def flush(self) -> None:
        src = np.fromiter(map(len, self.src), dtype=np.int64, count=len(self.src))
        tgt = np.fromiter(map(len, self.tgt), dtype=np.int64, count=len(self.tgt))
        chars = int(src.sum() + tgt.sum())
        if self.src:
            self.writer.write(self.src, self.tgt)
        if not self.bytes_per_char and chars:
            self.bytes_per_char = sum(len(x.encode()) for x in self.src + self.tgt) / chars
        text = self.text
        text.pairs += len(self.src)
        text.src_chars += int(src.sum())
        text.tgt_chars += int(tgt.sum())
        if self.unit == "bytes":  # the files' bytes, two line ends per pair
            self.progress.advance(chars * self.bytes_per_char + 2 * self.seen)
        else:
            self.progress.advance(self.seen)
        self.src, self.tgt, self.seen = [], [], 0

    def close(self) -> None:
        self.writer.close()


# -- stage 2: sentencepiece --------------------------------------------------------------------


def train_codec(
    text: Path,
    stats: SplitText,
    cfg: DataConfig,
    tok_cfg: TokenizerConfig,
    trainers: SubwordTrainers,
) -> TextCodec:
    """Train the subword model(s) on the training text, in ``trainers``' processes."""
    if tok_cfg.joint:
        chars = stats.src_chars + stats.tgt_chars
        jobs = [_job(text, ("src", "tgt"), 2 * stats.pairs, chars, tok_cfg)]
    else:
        jobs = [
            _job(text, ("src",), stats.pairs, stats.src_chars, tok_cfg),
            _job(text, ("tgt",), stats.pairs, stats.tgt_chars, tok_cfg),
        ]
    # two trainers at once only while their samples together fit the memory budget
    together = len(jobs) > 1 and sum(job.fed_characters for job in jobs) <= SAMPLE_CHARACTERS
    total = sum(job.fed for job in jobs)
    stage = f"sentencepiece ({', '.join('+'.join(job.columns) for job in jobs)})"

    def status() -> str:
        fed = trainers.fed()
        if fed < total:
            return f"read {100 * fed / max(total, 1):.0f}% of {total} sentences"
        return "training"

    models = run_with_heartbeat(stage, status, lambda: trainers.train(jobs, together))
    src = SubwordModel(models[0])
    tgt = src if tok_cfg.joint else SubwordModel(models[1])
    log.info(
        "sentencepiece %s: source vocabulary %d, target vocabulary %d%s",
        tok_cfg.type,
        src.vocab_size,
        tgt.vocab_size,
        " (joint)" if tok_cfg.joint else "",
    )
    return TextCodec(src, tgt, cfg.reverse_source)


def _job(
    text: Path, columns: tuple[str, ...], sentences: int, chars: int, tok_cfg: TokenizerConfig
) -> SubwordJob:
    sample = sample_size(tok_cfg, sentences, chars)
    if sample < min(sentences, tok_cfg.max_sentences):
        log.info(
            "sentencepiece trains on a random sample of %d of %d sentences "
            "(tokenizer.max_sentences=%d, capped to bound its memory)",
            sample, sentences, tok_cfg.max_sentences,
        )  # fmt: skip
    return SubwordJob(str(text), columns, sentences, chars, sample, tok_cfg)


# -- stage 3: encode ---------------------------------------------------------------------------


def encode_split(
    encoder: ChunkEncoder,
    role: str,
    folder: Path,
    pairs: int,
    max_len: int,
    stats: dict[str, Any],
) -> None:
    """Encode ``folder/text.arrow`` into the split's arrays; training pairs over ``max_len`` go."""
    limit = max_len if role == "train" else None
    writer = SplitWriter(folder, lengths_dtype(limit + 1 if limit is not None else None))
    progress = StageProgress(f"encoding {role}", pairs, "pairs")
    dropped = 0
    try:
        for chunk in encoder.encode(folder / TEXT_FILE, limit):
            writer.append("src", chunk.src_lengths, chunk.src_ids, extra=0)
            writer.append("tgt", chunk.tgt_lengths, chunk.tgt_ids, extra=1)  # + EOS
            dropped += chunk.dropped
            progress.advance(chunk.pairs_in)
    finally:
        kept = writer.close()
        seconds = progress.close()
    log.info("encoded %s: %d pairs in %.1f s", role, kept, seconds)
    if role == "train":
        (folder / TEXT_FILE).unlink()  # the training text is not kept
        stats["train_long_dropped"] = dropped  # logged once per run, by the trainer
        if kept == 0:
            raise DataError(f"no training pair is within data.max_len={max_len} subwords")
    stats[f"{role}_pairs"] = kept
