"""Greedy decoding on the event loop's own thread, between its I/O: no second thread.

A worker thread beside the HTTP event loop shares one interpreter lock with it: every
torch operator of a step releases the lock and must take it back, and while the loop
parses a request it waits, so a step beside a busy loop takes much longer. A model
process behind the HTTP process avoids that, but each request then crosses a pipe
twice, is pickled four times and wakes a thread on each side, and the HTTP process is
a third process on the cores. :class:`InlineBatcher` instead steps the
greedy stream (:class:`~mtkit.serve.greedy.GreedyJobs`) in a task of the event loop
itself: a step, then the loop reads what the sockets have brought, runs the handlers
that submit new requests and writes the answers of the sentences that finished, then
the next step. One thread does everything, in turn, with no lock to wait for. Several
such processes (``mtkit-serve --workers N --worker inline``) accept connections from
one listening socket, each decoding the requests of its own connections.

Beam requests (and every request when beam 1 is not greedy search) go to an ordinary
:class:`~mtkit.serve.batcher.Batcher` worker thread on the same model, since gathering a
beam group means waiting, which the loop cannot do: they pay the lock, greedy ones do not.
Answers are exactly those of the Batcher: the same stream, the same joining rule
(:func:`~mtkit.serve.greedy.joining`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from concurrent.futures import Future
from dataclasses import astuple

from mtkit.search.hypothesis import Hypothesis
from mtkit.search.translator import Translator
from mtkit.serve.batcher import Batcher
from mtkit.serve.greedy import MAX_ROWS, GreedyJobs, joining
from mtkit.serve.jobs import (
    BatcherClosed,
    BatcherStats,
    Job,
    QueueFull,
    Request,
    estimated_tokens,
    health_answer,
    settle,
)

log = logging.getLogger(__name__)

YIELDS = 3  # event loop iterations between two steps: the loop's I/O gets its turn


class InlineBatcher:
    """The Batcher's interface (``submit``, ``answered``, ``stats``, ``queued``, ``alive``,
    ``start``, ``close``), with greedy requests decoded by a task of the running loop.

    ``submit`` must be called on the event loop's thread (an HTTP handler); the task
    starts with the first greedy request.
    """

    def __init__(
        self,
        translator: Translator,
        wait_ms: float = 3.0,
        queue_size: int = 256,
        batch_tokens: int | None = None,
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.translator = translator
        self.queue_size = queue_size
        self._beam = Batcher(
            translator, wait_ms, queue_size, batch_tokens, max_rows=max_rows, greedy=False
        )
        self.batch_tokens = self._beam.batch_tokens  # the Batcher's defaults and bounds
        self.max_rows = self._beam.max_rows
        self._stats = BatcherStats()
        self._greedy = (
            GreedyJobs(translator, self._stats) if GreedyJobs.available(translator) else None
        )
        self._jobs: collections.deque[Job] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def start(self) -> None:
        """Start the beam worker thread (the greedy task starts with its first request)."""
        self._beam.start()

    @property
    def alive(self) -> bool:
        return self._beam.alive and not self._closed  # a failed greedy task is started again

    @property
    def health(self) -> tuple[str, str | None]:
        """``("ok", None)`` while the greedy task and the beam thread run, else why not."""
        return health_answer(self.alive, self._closed)

    @property
    def queued(self) -> int:
        return len(self._jobs) + self._beam.queued

    @property
    def stats(self) -> BatcherStats:
        """Greedy and beam counters, summed."""
        pairs = zip(astuple(self._stats), astuple(self._beam.stats), strict=True)
        return BatcherStats(*(a + b for a, b in pairs))

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Queue a request; its future gets one n-best list per text, in input order."""
        if self._greedy is None or request.beam_size != 1:
            return self._beam.submit(request)
        if self._closed:
            raise BatcherClosed("the service is shutting down")
        if len(self._jobs) + self._beam.queued >= self.queue_size:
            raise QueueFull(f"{len(self._jobs)} requests are waiting")
        job = Job(request, sum(estimated_tokens(text) for text in request.texts))
        job.step = self._stats.steps
        self._jobs.append(job)
        if self._task is None or self._task.done():  # the first, or after a failure
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._drive(self._greedy))
        assert self._wake is not None
        self._wake.set()
        return job.future

    def answered(self) -> None:
        """A caller got its answer: the beam worker keeps gathering a moment longer."""
        self._beam.answered()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, fail those waiting, let the stream finish its sentences.

        Safe from any thread: the loop's own part runs on the loop.
        """
        self._closed = True
        loop = self._loop
        if loop is not None and _running_loop() is loop:
            self._stop_waiting()
        elif loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                loop.call_soon_threadsafe(self._stop_waiting)
        self._beam.close(timeout)

    def _stop_waiting(self) -> None:
        waiting, self._jobs = list(self._jobs), collections.deque()
        for job in waiting:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._wake is not None:
            self._wake.set()

    async def drain(self, timeout: float | None = None) -> None:
        """After :meth:`close`: wait until the greedy task has finished its sentences, or
        ``timeout`` seconds; then stop it and fail the sentences left."""
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            assert self._greedy is not None
            self._greedy.fail_all(BatcherClosed("the service is shutting down"))

    async def _drive(self, greedy: GreedyJobs) -> None:
        """:meth:`_steps`; a failure there (a bug) fails the requests it held and those
        waiting, and the next greedy request starts a new task."""
        try:
            await self._steps(greedy)
        except Exception as error:
            log.exception("the greedy task failed")
            greedy.reset(error)
            waiting, self._jobs = list(self._jobs), collections.deque()
            for job in waiting:
                settle(job.future, error=error)

    async def _steps(self, greedy: GreedyJobs) -> None:
        """Join waiting sentences and step the stream, yielding to the loop after each step."""
        assert self._wake is not None
        while True:
            if not self._jobs and not len(greedy):
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            greedy.advance(self._take(greedy))
            for _ in range(YIELDS):
                await asyncio.sleep(0)

    def _take(self, greedy: GreedyJobs) -> list[Job]:
        """Waiting jobs (oldest first) that join now and fit the rows and token budget."""
        taken = joining(self._jobs, greedy, self._stats.steps, self.max_rows, self.batch_tokens)
        for _ in taken:
            self._jobs.popleft()
        return [job for job in taken if job.future.set_running_or_notify_cancel()]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
