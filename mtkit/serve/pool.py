"""Several model processes behind one service: each core decodes a stream of its own.

A service's search steps are small: under load its greedy stream holds a few dozen
sentences (the clients' requests in flight), and a step of that size does not spread
over two cores (PyTorch keeps small operators on one thread). Two single-threaded model
processes, each with its own stream of half the sentences, use both cores instead: a
step of half the rows costs much less, and encoding the sentences that join runs on
both cores at once (docs/benchmarks.md has the figures). One process stays the default.

:class:`ModelPool` offers the interface of one :class:`~mtkit.serve.process.ModelProcess`
(``submit``, ``answered``, ``stats``, ``queued``, ``health``, ``facts``, ``start``,
``close``) and sends each request to the process with the fewest sentences in flight,
among those that serve (a process that died is restarted on its own).
Each process decodes exactly as one alone does, so every answer is still what
translating the request alone gives.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from dataclasses import astuple, replace
from typing import Any

from mtkit.search.hypothesis import Hypothesis
from mtkit.serve.jobs import BatcherStats, Request
from mtkit.serve.process import ModelProcess, WorkerSpec


class ModelPool:
    """``workers`` model processes of ``spec`` (its queue size is shared among them)."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        share = max(1, math.ceil(spec.queue_size / workers))
        self.members = [ModelProcess(replace(spec, queue_size=share)) for _ in range(workers)]
        self._in_flight = [0] * workers  # sentences submitted and not yet answered
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start every process (they load their checkpoints at the same time)."""
        errors: list[BaseException] = []

        def start(member: ModelProcess) -> None:
            try:
                member.start()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=start, args=(m,)) for m in self.members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    @property
    def facts(self) -> dict[str, Any]:
        """What the processes run on; ``threads`` counts all of them, ``workers`` them."""
        first = self.members[0].facts
        threads = sum(member.facts.get("threads", 0) for member in self.members)
        return {**first, "threads": threads, "workers": len(self.members)}

    @property
    def health(self) -> tuple[str, str | None]:
        """``ok`` while every process serves, else the first one's trouble, numbered."""
        for number, member in enumerate(self.members, 1):
            state, why = member.health
            if state != "ok":
                return state, f"model process {number} of {len(self.members)}: {why}"
        return "ok", None

    @property
    def alive(self) -> bool:
        return all(member.alive for member in self.members)

    @property
    def pid(self) -> int | None:
        return self.members[0].pid

    @property
    def queued(self) -> int:
        return sum(member.queued for member in self.members)

    @property
    def stats(self) -> BatcherStats:
        """The processes' counters, summed."""
        columns = zip(*(astuple(member.stats) for member in self.members), strict=True)
        return BatcherStats(*(sum(column) for column in columns))

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Send the request to the serving process with the fewest sentences in flight
        (while one restarts, the others take every request)."""
        size = len(request.texts)
        with self._lock:
            serving = [i for i, member in enumerate(self.members) if member.alive]
            index = min(serving or range(len(self.members)), key=self._in_flight.__getitem__)
            self._in_flight[index] += size
        try:
            future = self.members[index].submit(request)
        except BaseException:
            self._done(index, size)
            raise
        future.add_done_callback(lambda _: self._done(index, size))
        return future

    def _done(self, index: int, size: int) -> None:
        with self._lock:
            self._in_flight[index] -= size

    def answered(self) -> None:
        """A caller got its answer: every process's beam gathering waits a moment longer."""
        for member in self.members:
            member.answered()

    def close(self, timeout: float = 10.0) -> None:
        """Close every process at once, all within ``timeout`` seconds."""
        threads = [
            threading.Thread(target=member.close, args=(timeout,)) for member in self.members
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
