"""The model in its own process: the service's batcher behind a pipe, restarted if it dies.

The HTTP event loop (parsing requests, writing answers) and the model's worker thread
(:class:`~mtkit.serve.batcher.Batcher`) are both Python: in one process they take turns
on one interpreter lock, so every step of the search waits while the event loop holds
it, and a step beside a busy event loop takes markedly longer than alone.
:class:`ModelProcess` runs the Batcher in a child process instead (``spawn``: the child
loads the checkpoints itself, :mod:`mtkit.serve.child`; no model or thread state is
copied) and offers the same interface to the app: :meth:`submit` returns a future,
:meth:`answered` tells the child that a client got its answer (the batcher's gathering
rule), :attr:`stats`, :attr:`queued` and :attr:`health` mirror the child's.

A child that dies anyway (killed, out of memory, a crash in native code) is replaced: its
pending requests fail with :class:`~mtkit.serve.jobs.WorkerDown` (a 503 the client may
retry), and while the new child loads :attr:`health` says ``restarting`` and new
requests get the same 503. A child that cannot be started again leaves the service
``stopped``.

Messages over one duplex pipe, parent to child: ``("job", id, Request)``,
``("answered",)``, ``("close",)``; child to parent: ``("ready", facts)`` once the model
is loaded, ``("done", id, hypotheses, stats, queued)``, ``("failed", id, kind, message,
stats, queued)``, ``("closed",)``, or ``("broken", message)`` when loading fails.
Hypotheses cross as plain tuples (attention as a NumPy array), since pickling a torch
tensor through multiprocessing moves it to shared memory, one file per tensor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import astuple
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from mtkit.errors import MtkitError
from mtkit.search.hypothesis import Hypothesis, unpack
from mtkit.serve.child import WorkerSpec, child_main
from mtkit.serve.jobs import (
    BadPrefix,
    BatcherClosed,
    BatcherStats,
    QueueFull,
    Request,
    WorkerDown,
    settle,
)

__all__ = ["ModelProcess", "WorkerError", "WorkerSpec"]

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while


class WorkerError(Exception):
    """A request failed in the model process (a bug, logged there)."""


class ModelProcess:
    """A :class:`~mtkit.serve.batcher.Batcher` in a child process, used like one."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.facts: dict[str, Any] = {}  # device, precision, threads: what the child runs
        self.restarts = 0  # children started again after one died
        self._before = BatcherStats()  # counters of the children that died
        self._counters = BatcherStats()  # the current child's, as of its last answer
        self._queued = 0
        self._futures: dict[int, Future[list[list[Hypothesis]]]] = {}
        self._next_id = 0
        self._lock = threading.Lock()  # sending, ids, the futures table, the child
        self._closed = False
        self._down: str | None = None  # why no child serves (while one restarts, or for good)
        self._restarting = False
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._reader = threading.Thread(target=self._read, name="mtkit-serve-pipe", daemon=True)

    # -- the app's side ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child and wait until its model is loaded (errors as MtkitError).

        Once started, a no-op: the command line starts it before the HTTP server (so a
        model that cannot load is a one-line error), the app's lifespan again.
        """
        if self._process is not None:
            return
        self._process, self._conn = self._launch()
        self._reader.start()

    @property
    def health(self) -> tuple[str, str | None]:
        """``("ok", None)``, or ``("restarting" | "stopped", why)``."""
        if self._closed:
            return "stopped", "the service is shutting down"
        if self._down is not None:
            return ("restarting" if self._restarting else "stopped"), self._down
        if self._process is None or not self._process.is_alive() or not self._reader.is_alive():
            return "stopped", "the model process has stopped"
        return "ok", None

    @property
    def alive(self) -> bool:
        return self.health[0] == "ok"

    @property
    def pid(self) -> int | None:
        """The model process's id (None before :meth:`start`)."""
        return None if self._process is None else self._process.pid

    @property
    def queued(self) -> int:
        """Requests waiting in the child (as of its last answer)."""
        return self._queued

    @property
    def stats(self) -> BatcherStats:
        """Counters since start, over every child this service has had."""
        pairs = zip(astuple(self._before), astuple(self._counters), strict=True)
        return BatcherStats(*(a + b for a, b in pairs))

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Send a request to the child; its future gets one n-best list per text.

        A full queue or a closing service fails the future (QueueFull, BatcherClosed),
        since only the child knows how many wait; a child that is down raises WorkerDown.
        """
        future: Future[list[list[Hypothesis]]] = Future()
        with self._lock:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            state, why = self.health
            if state != "ok":
                raise WorkerDown(why)
            job_id = self._next_id
            self._next_id += 1
            self._futures[job_id] = future
            self._send(("job", job_id, request))
        return future

    def answered(self) -> None:
        """A caller got its answer: the child's batcher keeps gathering a moment longer."""
        with self._lock:
            if not self._closed:
                self._send(("answered",))

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests and stop the child within ``timeout`` seconds: it fails
        the requests still waiting and finishes the search under way if it can; then
        every request not answered fails."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._send(("close",))
        if self._reader.ident is not None:
            self._reader.join(max(0.0, deadline - time.monotonic()))
        _stop(self._process, max(0.0, deadline - time.monotonic()))
        self._fail_all(BatcherClosed("the service is shutting down"))

    # -- the reader thread: answers, and a new child when one dies ------------------------------

    def _launch(self) -> tuple[BaseProcess, Connection]:
        """A started child with its model loaded, and the parent's end of its pipe."""
        context = multiprocessing.get_context("spawn")
        conn, child_conn = context.Pipe(duplex=True)
        process = context.Process(
            target=child_main, args=(child_conn, self.spec), name="mtkit-serve-model", daemon=True
        )
        process.start()
        child_conn.close()  # the child holds its end; EOF here once it exits
        try:
            self.facts = _wait_ready(conn, process)
        except BaseException:
            conn.close()
            _stop(process, 10.0)
            raise
        return process, conn

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # the child is gone:
            self._conn.send(message)  # type: ignore[union-attr]  # the reader fails what waits

    def _read(self) -> None:
        """Hand the children's answers to their futures; start a new child when one dies."""
        while True:
            self._serve(self._conn)
            if self._closed or not self._restart():
                break
        self._fail_all(BatcherClosed("the model process has stopped"))

    def _serve(self, conn: Connection | None) -> None:
        """Read one child's messages until it closes the pipe or dies."""
        while conn is not None:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "closed":
                return
            self._settle(message)

    def _restart(self) -> bool:
        """Fail what the dead child held and start a new one; False if that fails."""
        assert self._process is not None
        self._process.join(5.0)
        reason = f"the model process stopped (exit {self._process.exitcode})"
        log.error("%s; starting a new one", reason)
        with self._lock:
            self._down, self._restarting = f"{reason}; it is restarting", True
        self._fail_all(WorkerDown(f"{reason} while this request was in it; retry shortly"))
        self._before, self._counters, self._queued = self.stats, BatcherStats(), 0
        try:
            process, conn = self._launch()
        except Exception as error:
            self._down, self._restarting = f"{reason} and could not restart ({error})", False
            if not self._closed:  # else the stop ended the new child
                log.error("%s", self._down)
            return False
        with self._lock:
            if self._closed:  # closed while the new child loaded
                conn.close()
                _stop(process, 0.0)
                return False
            self._process, self._conn = process, conn
            self.restarts += 1
            self._down, self._restarting = None, False
        return True

    def _settle(self, message: tuple[Any, ...]) -> None:
        kind, job_id = message[0], message[1]
        *_, counters, self._queued = message
        # Counters only grow; two threads of the child answer, so keep the larger ones.
        pairs = zip(astuple(self._counters), counters, strict=True)
        self._counters = BatcherStats(*map(max, pairs))
        with self._lock:
            future = self._futures.pop(job_id, None)
        if future is None:
            return
        if kind == "done":
            settle(future, unpack(message[2]))
        else:
            settle(future, error=_error(message[2], message[3]))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            pending = list(self._futures.values())
            self._futures.clear()
        for future in pending:
            with contextlib.suppress(InvalidStateError):  # the caller gave up
                future.set_exception(error)


def _wait_ready(conn: Connection, process: BaseProcess) -> dict[str, Any]:
    """The child's facts once its model is loaded; its loading error as MtkitError."""
    if not conn.poll(START_TIMEOUT_S):
        raise MtkitError(f"the model process did not start in {START_TIMEOUT_S:.0f} s")
    try:
        message = conn.recv()
    except EOFError:
        process.join(10)
        code = process.exitcode
        raise MtkitError(f"the model process stopped while loading (exit {code})") from None
    if message[0] != "ready":
        process.join(10)
        raise MtkitError(str(message[1]))
    return dict(message[1])


def _stop(process: BaseProcess | None, timeout: float) -> None:
    """Wait ``timeout`` seconds for ``process`` to end, then kill it."""
    if process is None or process.pid is None:
        return
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(5.0)


def _error(kind: str, message: str) -> Exception:
    if kind == "QueueFull":
        return QueueFull(message)
    if kind == "BatcherClosed":
        return BatcherClosed(message)
    if kind == "BadPrefix":
        return BadPrefix(message)
    return WorkerError(f"{kind}: {message}")
