"""The greedy requests' side of the service's worker: jobs in, answers out, via a stream.

:class:`GreedyJobs` feeds the sentences of greedy requests into one
:class:`~mtkit.search.stream.GreedyStream` (continuous batching), detokenizes the
hypotheses that finish after each step, and answers a request once its last sentence
has finished (empty texts are answered at once, as the Translator does). The stream runs
on the Translator's model, device and dtype, in inference mode as the Translator
searches. A failing step is a bug: the requests in the stream fail, and a fresh stream
serves the next ones (:meth:`GreedyJobs.advance` never raises).

A batch of fixed sentences runs as many steps as its longest sentence, the last ones
with a few rows left; the stream keeps its rows filled instead, so under load its steps
follow the total output length over the stream's width. Waiting sentences join between
two steps (:func:`joining`) while the stream holds at most ``max_rows`` sentences and
``batch_tokens`` source tokens (a request always joins an empty stream whole). Encoding
sentences together costs little more than one alone (the encoder runs a step per source
position whatever the batch), so they join a busy stream in groups (:func:`ready_to_join`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mtkit.search.hypothesis import Hypothesis
from mtkit.search.stream import GreedyStream
from mtkit.search.translator import Translator
from mtkit.serve.jobs import BadPrefix, BatcherStats, Job, settle
from mtkit.serve.prefix import PrefixCheck

log = logging.getLogger(__name__)

MAX_ROWS = 64  # sentences the greedy stream decodes at once, at most
JOIN_SHARE = 0.5  # greedy sentences join once this many wait, as a share of the active ones
JOIN_STEPS = 8  # ... or once the oldest of them has waited this many stream steps


def ready_to_join(active: int, waiting: int, oldest_waited: int) -> bool:
    """Whether the greedy sentences waiting (``waiting`` of them, the oldest for
    ``oldest_waited`` stream steps) should join a stream of ``active`` rows now: at once
    into an empty stream, else as a group of ``JOIN_SHARE`` of the active rows, or once
    the oldest has waited ``JOIN_STEPS`` steps. Callers ask only while some wait."""
    return not active or waiting >= JOIN_SHARE * active or oldest_waited >= JOIN_STEPS


def joining(
    waiting: Sequence[Job], greedy: GreedyJobs, steps: int, max_rows: int, batch_tokens: int
) -> list[Job]:
    """The first of the greedy jobs ``waiting`` (oldest first) that join ``greedy``'s
    stream now, at its step ``steps``: none until :func:`ready_to_join` says so, then
    those that fit within ``max_rows`` sentences and ``batch_tokens`` source tokens (a job
    always joins an empty stream whole). The caller removes them from its queue."""
    rows, tokens = len(greedy), greedy.source_tokens
    sentences = sum(len(job.request.texts) for job in waiting)
    if not waiting or not ready_to_join(rows, sentences, steps - waiting[0].step):
        return []  # wait for more, and for the oldest to wait a little longer
    taken: list[Job] = []
    for job in waiting:
        more = len(job.request.texts)
        fits = rows + more <= max_rows and tokens + job.tokens <= batch_tokens
        if not fits and (rows or taken):
            break
        taken.append(job)
        rows, tokens = rows + more, tokens + job.tokens
    return taken


class GreedyJobs:
    """Greedy requests decoded through one running stream (the worker thread's only)."""

    def __init__(self, translator: Translator, stats: BatcherStats) -> None:
        self.translator = translator
        self.stats = stats
        self._stream = self._new_stream()
        self._owners: dict[int, tuple[Job, int]] = {}  # stream ticket -> (job, text index)
        self._prefixes = PrefixCheck(translator)

    @staticmethod
    def available(translator: Translator) -> bool:
        """Whether beam 1 means greedy search (not beam search, as a coverage penalty needs)."""
        return translator.options(beam_size=1).coverage_penalty == 0.0

    def _new_stream(self) -> GreedyStream:
        options = self.translator.options(beam_size=1)
        return GreedyStream(self.translator.stepper, options, self.translator.device)

    def __len__(self) -> int:
        """Sentences being decoded."""
        return len(self._stream)

    @property
    def source_tokens(self) -> int:
        return self._stream.source_tokens

    def advance(self, joining: list[Job]) -> None:
        """Append ``joining`` to the greedy stream, take one step, answer finished requests.

        Never raises: a failure while joining fails the joining requests; one in the step
        or in answering fails every streamed request, and a fresh stream serves the next.
        """
        with self.translator.inference():
            try:
                self._add(joining)
            except Exception as error:  # a bug: fail the joining requests, keep the rest
                log.exception("translation failed for %d request(s)", len(joining))
                self._fail(joining, error)
            if not len(self._stream):
                return
            try:
                self._step()
            except Exception as error:  # a bug: fail every streamed request, start afresh
                log.exception("greedy search failed for %d sentence(s)", len(self._stream))
                self.reset(error)

    def reset(self, error: BaseException) -> None:
        """Fail every request in the stream with ``error`` and start a fresh stream."""
        streamed = [job for job, _ in self._owners.values()]
        self._owners.clear()
        self._stream = self._new_stream()
        self._fail(streamed, error)

    def fail_all(self, error: BaseException) -> None:
        """Fail the requests in the stream, from any thread (a stop that gives up on them);
        the stream itself is left to the thread that steps it."""
        for job, _ in list(self._owners.values()):
            settle(job.future, error=error)

    def _step(self) -> None:
        """One stream step; the requests whose last sentence finished get their answers."""
        finished = self._stream.step()
        self.stats.steps += 1
        texts = self.translator.codec.decode_target([hyp.tokens for _, hyp in finished])
        for (ticket, hyp), text in zip(finished, texts, strict=True):
            job, index = self._owners.pop(ticket)
            hyp.text = text
            job.results[index] = [hyp]
            job.pending -= 1
            if not job.pending:
                self._answer(job)

    def _add(self, jobs: list[Job]) -> None:
        """Encode the jobs' non-empty texts and add them to the stream with their prefixes
        (empty texts are done); a job whose prefix the model cannot write fails alone,
        before anything joins."""
        sources: list[str] = []
        prefixes: list[list[int]] = []
        owners: list[tuple[Job, int]] = []
        admitted = []
        for job in jobs:
            try:
                ids = self._prefixes.ids(job.request)
            except BadPrefix as error:
                settle(job.future, error=error)
                continue
            admitted.append(job)
            texts = job.request.texts
            job.results = [[Hypothesis("", [], 0.0)] for _ in texts]
            for index, text in enumerate(texts):
                if text.strip():
                    sources.append(text.strip())
                    prefixes.append([] if ids is None else ids[index])
                    owners.append((job, index))
            job.pending = sum(1 for text in texts if text.strip())
        encoded = self.translator.codec.encode_source(sources)
        flags = [job.request.attention for job, _ in owners]
        tickets = self._stream.add(encoded, flags, prefixes if any(prefixes) else None)
        self._owners.update(zip(tickets, owners, strict=True))
        if admitted:
            self.stats.batches += 1
        for job in admitted:
            if not job.pending:
                self._answer(job)

    def _answer(self, job: Job) -> None:
        # Count first: a caller that reads the stats after its answer sees its request.
        self.stats.requests += 1
        self.stats.sentences += len(job.request.texts)
        settle(job.future, job.results)

    def _fail(self, jobs: list[Job], error: BaseException) -> None:
        failed = {id(job) for job in jobs}
        for job in jobs:
            settle(job.future, error=error)
        for ticket in [t for t, (job, _) in self._owners.items() if id(job) in failed]:
            del self._owners[ticket]
