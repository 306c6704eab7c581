"""Dynamic batching: concurrent requests decoded together by one worker thread.

A search batch of many sentences costs little more than one sentence on a CPU (the
matrix products get wider, the number of steps stays), so a service that decodes each
request alone wastes most of the machine under load. Here HTTP handlers only *submit*
requests; a single worker thread owns the model and, whenever it is free, takes the
oldest waiting request together with every waiting request that uses the same beam
size, and decodes them all in one :meth:`~mtkit.translator.Translator.translate_nbest`
call, up to one search batch (``batch_tokens / beam_size`` source tokens, estimated).

Before it decodes, the worker waits until the service has been quiet for a moment:
no request has arrived and no answer has been handed to a client (:meth:`Batcher.answered`,
called by the HTTP handler) for ``wait_ms`` or more. The answers matter under load:
the clients of the batch just decoded send their next requests as the event loop
answers them, one after another (some 20 ms for 32 answers on two cores).
Deciding a fixed ``wait_ms`` after the first arrival decodes the first few of them
alone while the rest queue behind that batch, and the service settles into alternating
small and large batches that each cost nearly a whole search (the steps follow the
longest sentence, not the batch size). On a busy machine the event loop stalls for
longer, so the quiet time and the longest gathering grow with the last search's
duration (``QUIET_SHARE`` and ``GATHER_SHARE`` of it, between ``wait_ms`` and
``max_wait_ms``): waiting costs throughput in proportion to the search it saves. A
single client still waits about ``wait_ms`` (its searches are short).

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

QUIET_SHARE = 0.05  # quiet time that closes a group, as a share of the last search's time
GATHER_SHARE = 0.25  # longest gathering, as a share of the last search's time


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
    arrived: float = field(default_factory=time.monotonic)
    future: Future[list[list[Hypothesis]]] = field(default_factory=Future)


@dataclass
class BatcherStats:
    """Counters since start: requests answered, sentences translated, search calls."""

    requests: int = 0
    sentences: int = 0
    batches: int = 0


class Batcher:
    """Queues requests and decodes them in groups on its own worker thread.

    ``wait_ms``: the quiet time (no new request, no answer) that closes a group, at least;
    ``max_wait_ms``: the longest a group gathers, from when the worker takes its first
    request (the quiet time and the gathering grow with the last search's duration, up
    to this).
    """

    def __init__(
        self,
        translator: Translator,
        wait_ms: float = 3.0,
        queue_size: int = 256,
        batch_tokens: int | None = None,
        max_wait_ms: float = 100.0,
    ) -> None:
        self.translator = translator
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_wait_s = max(self.wait_s, max_wait_ms / 1000.0)
        self._answered_at = float("-inf")  # when a caller last got its answer (any thread)
        self._last_search_s = 0.0  # how long the worker's last Translator call took
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

    def answered(self) -> None:
        """Note that a caller has just received its result (from the thread that answers it).

        Its client may send the next request in a moment, so the worker keeps gathering.
        """
        self._answered_at = time.monotonic()

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
            start = time.monotonic()
            self._decode(group)
            self._last_search_s = time.monotonic() - start
            self.answered()  # the group's answers are on their way to the callers

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

    def _waits(self) -> tuple[float, float]:
        """(quiet time that closes a group, longest gathering) in seconds, for the next group."""
        scale = self._last_search_s
        quiet = min(max(self.wait_s, QUIET_SHARE * scale), self.max_wait_s)
        return quiet, min(max(self.wait_s, GATHER_SHARE * scale), self.max_wait_s)

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
