"""Dynamic batching: concurrent requests decoded together by one worker thread.

A search batch of many sentences costs little more than one sentence on a CPU (the
matrix products get wider, the number of steps stays), so a service that decodes each
request alone wastes most of the machine under load. Here HTTP handlers only *submit*
requests; a single worker thread owns the model and, whenever it is free, takes the
oldest waiting request together with every waiting request that uses the same beam
size, waits a few milliseconds (``wait_ms``) for more, and decodes them all in one
:meth:`~mtkit.translator.Translator.translate_nbest` call, up to one search batch
(``batch_tokens / beam_size`` source tokens, estimated).

Results equal translating each request alone: the Translator's batches give the same
hypotheses as one sentence at a time, ``nbest`` only cuts a finished n-best list, and
keeping attention does not change the search, so requests that differ only in ``nbest``
or ``attention`` share a batch and each gets exactly what it asked for.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from mtkit.search import Hypothesis
from mtkit.translator import Translator

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The waiting queue holds ``queue_size`` requests: the caller should retry later."""


class BatcherClosed(Exception):
    """The service is shutting down."""


def estimated_tokens(text: str) -> int:
    """Source pieces of a text (with EOS), estimated from its UTF-8 length.

    About 4 bytes a piece in European languages and 3 (one character) in Chinese or
    Japanese: close enough to fill a search batch, without running the tokenizer in the
    HTTP handler (the Translator tokenizes the whole batch once, exactly).
    """
    return len(text.strip().encode("utf-8")) // 4 + 2


@dataclass(frozen=True)
class Request:
    """One request: texts and the search settings they are translated with."""

    texts: tuple[str, ...]
    beam_size: int
    nbest: int = 1
    attention: bool = False


@dataclass
class _Job:
    request: Request
    tokens: int  # estimated source tokens (with EOS) of all texts, for the batch budget
    future: Future[list[list[Hypothesis]]] = field(default_factory=Future)


@dataclass
class BatcherStats:
    """Counters since start: requests answered, sentences translated, search calls."""

    requests: int = 0
    sentences: int = 0
    batches: int = 0


class Batcher:
    """Queues requests and decodes them in groups on its own worker thread."""

    def __init__(
        self,
        translator: Translator,
        wait_ms: float = 3.0,
        queue_size: int = 256,
        batch_tokens: int | None = None,
    ) -> None:
        self.translator = translator
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.queue_size = queue_size
        self.batch_tokens = batch_tokens or translator.defaults.batch_tokens
        self.stats = BatcherStats()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mtkit-serve-worker", daemon=True)

    # -- the callers' side (any thread) ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    @property
    def queued(self) -> int:
        """Requests waiting for the worker (not counting the group being decoded)."""
        return len(self._jobs)

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Queue a request; its future gets one n-best list per text, in input order."""
        job = _Job(request, sum(estimated_tokens(text) for text in request.texts))
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"{len(self._jobs)} requests are waiting")
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, finish the group in progress, fail those still waiting."""
        with self._cond:
            self._closed = True
            waiting = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            self._decode(group)

    def _next_group(self) -> list[_Job] | None:
        """The oldest waiting job and those that can share its search batch, or None at close."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._jobs.popleft()
            group, tokens = [first], first.tokens
            budget = max(1, self.batch_tokens // first.request.beam_size)
            deadline = time.monotonic() + self.wait_s
            while True:
                tokens = self._take_matching(group, tokens, budget)
                remaining = deadline - time.monotonic()
                if tokens >= budget or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
        return [job for job in group if job.future.set_running_or_notify_cancel()]

    def _take_matching(self, group: list[_Job], tokens: int, budget: int) -> int:
        """Move waiting jobs with the group's beam size into it while they fit the budget."""
        beam_size = group[0].request.beam_size
        kept: collections.deque[_Job] = collections.deque()
        while self._jobs:
            job = self._jobs.popleft()
            if job.request.beam_size == beam_size and tokens + job.tokens <= budget:
                group.append(job)
                tokens += job.tokens
            else:
                kept.append(job)
        self._jobs = kept
        return tokens

    def _decode(self, group: list[_Job]) -> None:
        """One Translator call for the whole group; each job gets its own slice."""
        if not group:
            return
        texts = [text for job in group for text in job.request.texts]
        try:
            results = self.translator.translate_nbest(
                texts,
                beam_size=group[0].request.beam_size,
                nbest=max(job.request.nbest for job in group),
                return_attention=any(job.request.attention for job in group),
            )
        except Exception as error:  # a bug, not bad input: fail these requests, keep serving
            log.exception("translation failed for %d request(s)", len(group))
            for job in group:
                job.future.set_exception(error)
            return
        # Count first: a caller that reads the stats after its answer sees its request.
        self.stats.batches += 1
        self.stats.requests += len(group)
        self.stats.sentences += len(texts)
        start = 0
        for job in group:
            request = job.request
            mine = results[start : start + len(request.texts)]
            start += len(request.texts)
            job.future.set_result([_trim(hyps, request) for hyps in mine])


def _trim(hyps: list[Hypothesis], request: Request) -> list[Hypothesis]:
    """What the request asked for from a group's n-best list."""
    kept = hyps[: request.nbest]
    return kept if request.attention else [replace(h, attention=None) for h in kept]
