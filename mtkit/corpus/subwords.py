"""Stage 2 of corpus preparation: sentencepiece, trained in a child process on the training text.

**Why a child process.** Sentencepiece's trainer runs OpenMP loops whose threads, by
default, spin while they wait for each other. When a core is busy with anything else
(another job, or a process pinned to fewer cores than it has) the spinning thread holds
a core the working one needs, and training took 3 to 5 times longer. OpenMP reads its
wait policy once, when it is loaded, so the trainer runs in a fresh
``python -m mtkit.corpus.subwords`` process started with ``OMP_WAIT_POLICY=PASSIVE``
(unless the user set one). That process needs no torch, reads the text itself from
``text.arrow``, and hands the trainer's memory (about 22 bytes per sampled character)
back when it exits. It is started before the corpus is read, so its start-up overlaps
the reading; with separate source and target models, two of them train at once when
both samples fit :data:`mtkit.corpus.tokenizer.SAMPLE_CHARACTERS` together.

**What it is fed.** A corpus whose sentences all fit the sample
(:func:`mtkit.corpus.tokenizer.sample_size`) is fed whole, in the order earlier versions used
(blocks of :data:`SP_BLOCK` pairs: their sources, then their targets), so it trains the
same model as before. A larger one is fed exactly ``sample`` sentences, a uniform random
subset drawn here with a fixed seed, record batch by record batch
(:class:`UniformSample`): no other sentence is converted to Python or passed to
sentencepiece, and memory stays that of one batch.

Protocol: length-prefixed pickles (:mod:`mtkit.corpus.helper`) on
stdin/stdout. A :class:`SubwordJob` in; ``("fed", n)`` every :data:`SP_BLOCK` sentences
fed, then ``("ok", model_bytes)`` or ``("error", one_line)`` out. Then the next job.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mtkit.config import TokenizerConfig
from mtkit.corpus.helper import (
    HelperProcess,
    child_environment,
    read_message,
    serve_quietly,
    write_message,
)
from mtkit.corpus.layout import TextReader
from mtkit.corpus.tokenizer import train_subword_model
from mtkit.errors import DataError

SP_BLOCK = 10_000  # sentencepiece reads this many pairs' sources, then their targets
SAMPLE_SEED = 1  # which sentences a corpus larger than the sample trains on


@dataclass(frozen=True)
class SubwordJob:
    """One model to train: on ``columns`` of ``text`` (``sentences`` of them, ``characters``).

    ``sample`` is sentencepiece's ``input_sentence_size``
    (:func:`mtkit.corpus.tokenizer.sample_size`); when it is smaller than ``sentences``,
    only a uniform random ``sample`` of them is fed.
    """

    text: str
    columns: tuple[str, ...]
    sentences: int
    characters: int
    sample: int
    tok_cfg: TokenizerConfig

    @property
    def fed(self) -> int:
        """How many sentences go to sentencepiece."""
        return min(self.sentences, self.sample)

    @property
    def fed_characters(self) -> float:
        """About how many characters go to sentencepiece (what its memory grows with)."""
        return self.characters * self.fed / max(self.sentences, 1)


def job_sentences(job: SubwordJob, fed: Callable[[int], None]) -> Iterator[str]:
    """The sentences ``job`` feeds sentencepiece; ``fed(n)`` after every :data:`SP_BLOCK`."""
    if job.sample >= job.sentences:
        sentences = block_sentences(Path(job.text), job.columns)
    else:
        sentences = sampled_sentences(Path(job.text), job.columns, job.sentences, job.sample)
    count = 0
    for count, sentence in enumerate(sentences, 1):
        yield sentence
        if count % SP_BLOCK == 0:
            fed(count)
    fed(count)


def block_sentences(text: Path, columns: tuple[str, ...]) -> Iterator[str]:
    """Every training sentence, in blocks of :data:`SP_BLOCK` pairs, column after column."""
    reader = TextReader(text)
    try:
        pending: dict[str, list[str]] = {column: [] for column in columns}
        for index in range(reader.batches):
            chunk = dict(zip(("src", "tgt"), reader.batch(index), strict=True))
            for column in columns:
                pending[column].extend(chunk[column])
            while len(pending[columns[0]]) >= SP_BLOCK:
                yield from _block(pending, columns, SP_BLOCK)
        yield from _block(pending, columns, len(pending[columns[0]]))
    finally:
        reader.close()


def _block(pending: dict[str, list[str]], columns: tuple[str, ...], size: int) -> Iterator[str]:
    for column in columns:
        yield from pending[column][:size]
        del pending[column][:size]


def sampled_sentences(
    text: Path, columns: tuple[str, ...], sentences: int, sample: int
) -> Iterator[str]:
    """A uniform random ``sample`` of the ``sentences`` in ``columns``, in file order."""
    draw = UniformSample(sentences, sample, SAMPLE_SEED)
    reader = TextReader(text)
    try:
        for index in range(reader.batches):
            batch = reader.record_batch(index)
            for column in columns:
                rows = draw.take(batch.num_rows)
                yield from batch.column(column).take(pa.array(rows)).to_pylist()
    finally:
        reader.close()


class UniformSample:
    """A uniform random subset of ``sample`` of ``total`` items, drawn part by part in one pass.

    Each part gets a hypergeometric share of the sample still to draw (the number of
    its items a uniform subset would hold), spread uniformly over the part: every
    subset of ``sample`` items is equally likely, and memory is one part's.
    """

    def __init__(self, total: int, sample: int, seed: int) -> None:
        self.items_left, self.sample_left = total, min(sample, total)
        self._rng = np.random.default_rng(seed)

    def take(self, size: int) -> np.ndarray:
        """Sorted indices (int64, ``(share,)``) into the next part, of ``size`` items."""
        size = min(size, self.items_left)
        share = 0
        if self.sample_left and size:
            share = int(self._rng.hypergeometric(size, self.items_left - size, self.sample_left))
        self.items_left -= size
        self.sample_left -= share
        return np.sort(self._rng.choice(size, share, replace=False)).astype(np.int64)


# -- the parent's side ---------------------------------------------------------------------


class TrainerProcess(HelperProcess):
    """One ``python -m mtkit.corpus.subwords`` process, trains the jobs it is sent."""

    def __init__(self) -> None:
        env = child_environment()
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        super().__init__("mtkit.corpus.subwords", env)
        self.fed = 0  # sentences of the current job fed so far

    def send(self, job: SubwordJob) -> None:
        self.fed = 0
        self.send_message(job)

    def receive(self) -> bytes:
        """The model of the job sent; a failed training is a one-line DataError."""
        while (reply := self.next_reply()) is not None:
            if reply[0] == "fed":
                self.fed = reply[1]
            elif reply[0] == "ok":
                return bytes(reply[1])
            else:
                raise DataError(reply[1])
        status = self.exit_status()
        raise RuntimeError(f"the sentencepiece training process exited (status {status})")


class SubwordTrainers:
    """The training processes of one preparation: one, or two for separate models.

    A ``with`` block: the processes start on entry (before the corpus is read) and are
    stopped on exit, at once if the block raised (Ctrl-C included).
    """

    def __init__(self, processes: int) -> None:
        self.count = processes
        self._processes: list[TrainerProcess] = []
        self._done = 0  # sentences fed by the jobs trained in turn and done

    def __enter__(self) -> SubwordTrainers:
        try:
            self._processes = [TrainerProcess() for _ in range(self.count)]
        except BaseException:
            self.__exit__(RuntimeError)
            raise
        return self

    def __exit__(self, error: type[BaseException] | None, *_details: object) -> None:
        for process in self._processes:
            process.stop(at_once=error is not None)

    def fed(self) -> int:
        """Sentences fed so far by the jobs under way."""
        return self._done + sum(process.fed for process in self._processes)

    def train(self, jobs: list[SubwordJob], together: bool) -> list[bytes]:
        """The model of each job: all at once (one process each) if ``together``, else in turn."""
        if together:
            assert len(jobs) <= len(self._processes)
            for process, job in zip(self._processes, jobs, strict=False):
                process.send(job)
            return [process.receive() for process in self._processes[: len(jobs)]]
        models = []
        for job in jobs:
            self._processes[0].send(job)
            models.append(self._processes[0].receive())
            self._done, self._processes[0].fed = self._done + job.fed, 0
        return models


# -- the child's side ----------------------------------------------------------------------


def serve() -> None:
    """Train each job read from stdin; replies on stdout. Ctrl-C is left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    while (job := read_message(requests)) is not None:
        assert isinstance(job, SubwordJob)

        def fed(count: int) -> None:
            write_message(replies, ("fed", count))

        try:
            model = train_subword_model(job_sentences(job, fed), job.tok_cfg, job.sample)
            reply: tuple[str, object] = ("ok", model)
        except DataError as error:
            reply = ("error", str(error))
        except Exception:  # reported to the parent, which raises it there
            reply = ("error", traceback.format_exc(limit=3).strip().splitlines()[-1])
        write_message(replies, reply)


if __name__ == "__main__":
    from mtkit.corpus.subwords import serve as serve_jobs  # the jobs unpickle to that module's

    serve_quietly(serve_jobs)
