"""Dynamic batching: concurrent requests decoded together by one worker thread.

A search batch of many sentences costs little more than one sentence on a CPU (the
matrix products get wider, the number of steps stays), so a service that decodes each
request alone wastes most of the machine under load. Here HTTP handlers only *submit*
requests; a single worker thread owns the model and decodes them in one of two ways.

Greedy requests (beam size 1, no coverage penalty) join one running greedy search,
between two of its steps (:mod:`mtkit.serve.greedy`: the stream, and when waiting
sentences join it), and each sentence leaves as soon as it emits EOS; a request is
answered when its last sentence has.

Beam requests are decoded in groups: the oldest waiting beam request with every waiting
request of the same beam size, in one :meth:`~mtkit.search.translator.Translator.translate_nbest`
call, up to one search batch (``batch_tokens / beam_size`` source tokens, estimated).
While the greedy stream is idle, the worker first waits until the service has been quiet
for a moment: no request has arrived and no answer has been handed to a client
(:meth:`Batcher.answered`, called by the HTTP handler) for ``wait_ms`` or more. The
clients of the batch just decoded send their next requests as the event loop answers
them, one after another, so a fixed wait after the first arrival would decode the first
few alone while the rest queue behind them. On a busy machine the event loop stalls for
longer, so the quiet time and the longest gathering grow with the last beam search's
duration (``QUIET_SHARE`` and ``GATHER_SHARE`` of it, between ``wait_ms`` and
``max_wait_ms``). While the stream runs, a beam group starts between two of its steps
once its oldest request has waited that longest gathering.

Results equal translating each request alone: a streamed sentence gets what greedy
search gives it alone, the Translator's batches give the same hypotheses as one sentence
at a time, ``nbest`` only cuts a finished n-best list, and keeping attention does not
change the search, so requests that differ only in ``nbest`` or ``attention`` share a
batch and each gets exactly what it asked for. Target prefixes are forced per sentence,
so sentences with and without them share the stream and the groups too; each request's
prefixes are checked before it joins either (:mod:`mtkit.serve.prefix`), so one that
the model cannot write fails that request alone.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any

from mtkit.search.hypothesis import Hypothesis
from mtkit.search.translator import Translator
from mtkit.serve.export import NO_PREFIX
from mtkit.serve.greedy import MAX_ROWS, GreedyJobs, joining
from mtkit.serve.jobs import (
    BadPrefix,
    BatcherClosed,
    BatcherStats,
    Job,
    QueueFull,
    Request,
    estimated_tokens,
    health_answer,
    settle,
    split_answers,
)
from mtkit.serve.onnx import ExportTranslator
from mtkit.serve.prefix import PrefixCheck, has_prefix, prefixes_of

__all__ = [
    "Batcher",
    "BatcherClosed",
    "BatcherStats",
    "QueueFull",
    "Request",
    "estimated_tokens",
]

log = logging.getLogger(__name__)

QUIET_SHARE = 0.05  # quiet time that closes a group, as a share of the last search's time
GATHER_SHARE = 0.25  # longest gathering, as a share of the last search's time


class Batcher:
    """Queues requests and decodes them together on its own worker thread.

    ``wait_ms``: the quiet time (no new request, no answer) that closes a beam group, at
    least; ``max_wait_ms``: the longest a beam group gathers (the quiet time and the
    gathering grow with the last beam search's duration, up to this); ``batch_tokens``:
    source tokens of a search batch (default: the checkpoint's); ``max_rows``: sentences
    in the greedy stream at once; ``greedy=False``: no stream, greedy requests are decoded
    in groups like beam ones (:class:`~mtkit.serve.inline.InlineBatcher` streams them), as
    they always are for an ONNX export's :class:`~mtkit.serve.onnx.ExportTranslator`.
    """

    def __init__(
        self,
        translator: Translator | ExportTranslator,
        wait_ms: float = 3.0,
        queue_size: int = 256,
        batch_tokens: int | None = None,
        max_wait_ms: float = 100.0,
        max_rows: int = MAX_ROWS,
        greedy: bool = True,
    ) -> None:
        self.translator = translator
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_wait_s = max(self.wait_s, max_wait_ms / 1000.0)
        self._answered_at = float("-inf")  # when a caller last got its answer (any thread)
        self._last_search_s = 0.0  # how long the worker's last beam search took
        self.queue_size = queue_size
        self.batch_tokens = batch_tokens or translator.defaults.batch_tokens
        self.max_rows = max(1, max_rows)
        self.stats = BatcherStats()
        self._jobs: collections.deque[Job] = collections.deque()
        self._decoding: list[Job] = []  # the beam group being decoded
        self._cond = threading.Condition()
        self._closed = False
        self._prefixes = PrefixCheck(translator) if isinstance(translator, Translator) else None
        self._greedy = (  # an export has no stream: its greedy requests are grouped
            GreedyJobs(translator, self.stats)
            if greedy and isinstance(translator, Translator) and GreedyJobs.available(translator)
            else None
        )
        self._thread = threading.Thread(target=self._run, name="mtkit-serve-worker", daemon=True)

    # -- the callers' side (any thread) ------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (once; later calls do nothing)."""
        if self._thread.ident is None:
            self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @property
    def health(self) -> tuple[str, str | None]:
        """``("ok", None)`` while the worker thread runs, else ``("stopped", why)``."""
        return health_answer(self.alive, self._closed)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting those being decoded)."""
        return len(self._jobs)

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Queue a request; its future gets one n-best list per text, in input order."""
        job = Job(request, sum(estimated_tokens(text) for text in request.texts))
        job.step = self.stats.steps
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if self._thread.ident is not None and not self._thread.is_alive():
                raise BatcherClosed("the worker stopped")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"{len(self._jobs)} requests are waiting")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def answered(self) -> None:
        """Note that a caller has just received its result (from the thread that answers it).

        Its client may send the next request in a moment, so the worker keeps gathering.
        """
        self._answered_at = time.monotonic()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, fail those still waiting, and give those being decoded
        ``timeout`` seconds to finish; then fail them too (the search goes on unheard)."""
        closed = BatcherClosed("the service is shutting down")
        with self._cond:
            self._closed = True
            waiting = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(closed)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            for job in list(self._decoding):
                settle(job.future, error=closed)
            if self._greedy is not None:
                self._greedy.fail_all(closed)

    # -- the worker thread: what to do next --------------------------------------------------

    def _run(self) -> None:
        while True:
            work = self._next_work()
            if work is None:
                return
            group, joining = work
            self._decoding = group
            if group:
                start = time.monotonic()
                self._decode(group)
                self._last_search_s = time.monotonic() - start
                self.answered()  # the group's answers are on their way to the callers
            else:
                assert self._greedy is not None
                self._greedy.advance(joining)  # never raises
            self._decoding = []

    def _next_work(self) -> tuple[list[Job], list[Job]] | None:
        """(a beam group, []) or ([], greedy jobs joining before the next stream step);
        None once closed with nothing left to decode."""
        with self._cond:
            while True:
                streaming = self._greedy is not None and len(self._greedy) > 0
                if self._closed:
                    return ([], []) if streaming else None
                if streaming:
                    due = self._due_beam_job()
                    if due is not None:
                        return self._group_now(due), []
                    return [], self._take_streamed()
                if not self._jobs:
                    self._cond.wait()
                elif self._streamed(self._jobs[0].request):
                    return [], self._take_streamed()
                else:
                    return self._gather(self._jobs.popleft()), []

    def _streamed(self, request: Request) -> bool:
        return request.beam_size == 1 and self._greedy is not None

    def _due_beam_job(self) -> Job | None:
        """The oldest beam job, once it has waited the longest gathering; else None."""
        beam = next((job for job in self._jobs if not self._streamed(job.request)), None)
        if beam is None or time.monotonic() - beam.arrived < self._waits()[1]:
            return None
        self._jobs.remove(beam)
        return beam

    def _take_streamed(self) -> list[Job]:
        """Waiting greedy jobs (oldest first) that join the stream now (:func:`joining`)."""
        assert self._greedy is not None
        waiting = [job for job in self._jobs if self._streamed(job.request)]
        taken = joining(waiting, self._greedy, self.stats.steps, self.max_rows, self.batch_tokens)
        for job in taken:
            self._jobs.remove(job)
        return [job for job in taken if job.future.set_running_or_notify_cancel()]

    def _group_now(self, first: Job) -> list[Job]:
        """``first`` and the waiting jobs that can share its search batch, without waiting."""
        group = [first]
        self._take_matching(group, first.tokens, self._budget(first))
        return [job for job in group if job.future.set_running_or_notify_cancel()]

    def _gather(self, first: Job) -> list[Job]:
        """``first`` and the jobs that can share its search batch, gathered until quiet."""
        group, tokens = [first], first.tokens
        budget = self._budget(first)
        quiet, gather = self._waits()
        cap = time.monotonic() + gather
        while True:
            tokens = self._take_matching(group, tokens, budget)
            if tokens >= budget or self._closed:
                break
            # Quiet since the last arrival and the last answer, or the cap.
            busy_until = max(self._answered_at, max(job.arrived for job in group))
            remaining = min(busy_until + quiet, cap) - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        return [job for job in group if job.future.set_running_or_notify_cancel()]

    def _budget(self, first: Job) -> int:
        return max(1, self.batch_tokens // first.request.beam_size)

    def _waits(self) -> tuple[float, float]:
        """(quiet time that closes a group, longest gathering) in seconds, for the next group."""
        scale = self._last_search_s
        quiet = min(max(self.wait_s, QUIET_SHARE * scale), self.max_wait_s)
        return quiet, min(max(self.wait_s, GATHER_SHARE * scale), self.max_wait_s)

    def _take_matching(self, group: list[Job], tokens: int, budget: int) -> int:
        """Move waiting jobs with the group's beam size into it while they fit the budget."""
        beam_size = group[0].request.beam_size
        kept: collections.deque[Job] = collections.deque()
        while self._jobs:
            job = self._jobs.popleft()
            if job.request.beam_size == beam_size and tokens + job.tokens <= budget:
                group.append(job)
                tokens += job.tokens
            else:
                kept.append(job)
        self._jobs = kept
        return tokens

    # -- the worker thread: decoding ---------------------------------------------------------

    def _decode(self, group: list[Job]) -> None:
        """One Translator call for a beam group; each job gets its own slice. A job whose
        prefix the model cannot write fails first, alone (:meth:`_admitted`)."""
        group = self._admitted(group)
        if not group:
            return
        texts = [text for job in group for text in job.request.texts]
        prefixed: dict[str, Any] = {}  # an export's translate_nbest takes no prefix
        if any(has_prefix(job.request) for job in group):
            prefixed["prefix"] = [p for job in group for p in prefixes_of(job.request)]
        try:
            results = self.translator.translate_nbest(
                texts,
                beam_size=group[0].request.beam_size,
                nbest=max(job.request.nbest for job in group),
                return_attention=any(job.request.attention for job in group),
                **prefixed,
            )
            answers = split_answers(results, [job.request for job in group])
        except Exception as error:  # a bug, not bad input: fail these requests, keep serving
            log.exception("translation failed for %d request(s)", len(group))
            for job in group:
                settle(job.future, error=error)
            return
        # Count first: a caller that reads the stats after its answer sees its request.
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.sentences += len(texts)
        for job, answer in zip(group, answers, strict=True):
            settle(job.future, answer)

    def _admitted(self, group: list[Job]) -> list[Job]:
        """The jobs of ``group`` whose prefixes the model can write; the others fail with
        a BadPrefix (an export's, whose runtime forces none, every one with a prefix)."""
        admitted = []
        for job in group:
            try:
                if self._prefixes is not None:
                    self._prefixes.ids(job.request)
                elif has_prefix(job.request):
                    raise BadPrefix(NO_PREFIX)
            except BadPrefix as error:
                settle(job.future, error=error)
                continue
            except Exception as error:  # a bug: fail this request, keep serving
                log.exception("checking the prefixes of a request failed")
                settle(job.future, error=error)
                continue
            admitted.append(job)
        return admitted
