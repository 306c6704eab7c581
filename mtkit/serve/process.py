"""The model in its own process: the service's batcher behind a pipe.

The HTTP event loop (parsing requests, writing answers) and the model's worker thread
(:class:`~mtkit.serve.batcher.Batcher`) are both Python: in one process they take turns
on one interpreter lock, so every step of the search waits while the event loop holds
it, and a step beside a busy event loop takes markedly longer than alone.
:class:`ModelProcess` runs the Batcher in a child process instead (``spawn``: the child
loads the checkpoints itself with :func:`~mtkit.serve.setup.load_model`; no model or
thread state is copied) and offers the same interface to the app: :meth:`submit`
returns a future, :meth:`answered` tells the child that a client got its answer (the
batcher's gathering rule), :attr:`stats`, :attr:`queued` and :attr:`alive` mirror the
child's.

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
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import astuple, dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch

from mtkit.errors import MtkitError
from mtkit.search.hypothesis import Hypothesis, pack, unpack
from mtkit.serve.jobs import BatcherClosed, BatcherStats, QueueFull, Request
from mtkit.serve.setup import load_model

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while


@dataclass(frozen=True)
class WorkerSpec:
    """What the child loads and how it batches: the command line's model options."""

    checkpoints: tuple[str, ...]
    weights: tuple[float, ...] | None
    device: str
    precision: str
    shortlist: bool
    threads: int
    wait_ms: float
    queue_size: int


class WorkerError(Exception):
    """A request failed in the model process (a bug, logged there)."""


class ModelProcess:
    """A :class:`~mtkit.serve.batcher.Batcher` in a child process, used like one."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.stats = BatcherStats()
        self.facts: dict[str, Any] = {}  # device, precision, threads: what the child runs
        self._queued = 0
        self._futures: dict[int, Future[list[list[Hypothesis]]]] = {}
        self._next_id = 0
        self._lock = threading.Lock()  # sending, ids and the futures table
        self._closed = False
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=child_main, args=(child_conn, spec), name="mtkit-serve-model", daemon=True
        )
        self._child_conn = child_conn
        self._reader = threading.Thread(target=self._read, name="mtkit-serve-pipe", daemon=True)

    # -- the parent's side ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the child and wait until its model is loaded (errors as MtkitError).

        Once started, a no-op: the command line starts it before the HTTP server (so a
        model that cannot load is a one-line error), the app's lifespan again.
        """
        if self._process.pid is not None:
            return
        self._process.start()
        self._child_conn.close()  # the child holds its end; EOF here once it exits
        if not self._conn.poll(START_TIMEOUT_S):
            self._process.kill()
            raise MtkitError(f"the model process did not start in {START_TIMEOUT_S:.0f} s")
        try:
            message = self._conn.recv()
        except EOFError:
            self._process.join(10)
            code = self._process.exitcode
            raise MtkitError(f"the model process stopped while loading (exit {code})") from None
        if message[0] != "ready":
            self._process.join(10)
            raise MtkitError(str(message[1]))
        self.facts = message[1]
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self._process.is_alive() and self._reader.is_alive() and not self._closed

    @property
    def pid(self) -> int | None:
        """The model process's id (None before :meth:`start`)."""
        return self._process.pid

    @property
    def queued(self) -> int:
        """Requests waiting in the child (as of its last answer)."""
        return self._queued

    def submit(self, request: Request) -> Future[list[list[Hypothesis]]]:
        """Send a request to the child; its future gets one n-best list per text.

        A full queue or a closing service fails the future (QueueFull, BatcherClosed),
        since only the child knows how many wait.
        """
        future: Future[list[list[Hypothesis]]] = Future()
        with self._lock:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if not self._process.is_alive():
                raise BatcherClosed("the model process has stopped")
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
        """Finish the requests being decoded, fail those still waiting, stop the child."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._send(("close",))
        if self._reader.ident is not None:
            self._reader.join(timeout)
        if self._process.pid is not None:
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout)
        self._fail_all(BatcherClosed("the service is shutting down"))

    def _send(self, message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError, ValueError):  # the child is gone: the reader
            self._conn.send(message)  # fails what is pending

    def _read(self) -> None:
        """Hand the child's answers to their futures until it closes the pipe."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "closed":
                break
            self._settle(message)
        if not self._closed:
            log.error("the model process stopped (exit %s)", self._process.exitcode)
        self._fail_all(BatcherClosed("the model process has stopped"))

    def _settle(self, message: tuple[Any, ...]) -> None:
        kind, job_id = message[0], message[1]
        *_, counters, self._queued = message
        # Counters only grow; two threads of the child answer, so keep the larger ones.
        self.stats = BatcherStats(*map(max, zip(astuple(self.stats), counters, strict=True)))
        with self._lock:
            future = self._futures.pop(job_id, None)
        if future is None:
            return
        try:
            if kind == "done":
                future.set_result(unpack(message[2]))
            else:
                future.set_exception(_error(message[2], message[3]))
        except InvalidStateError:  # the caller gave up (its client went away)
            pass

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            pending = list(self._futures.values())
            self._futures.clear()
        for future in pending:
            with contextlib.suppress(InvalidStateError):  # the caller gave up
                future.set_exception(error)


def _error(kind: str, message: str) -> Exception:
    if kind == "QueueFull":
        return QueueFull(message)
    if kind == "BatcherClosed":
        return BatcherClosed(message)
    return WorkerError(f"{kind}: {message}")


# -- the child's side -------------------------------------------------------------------------


def child_main(conn: Connection, spec: WorkerSpec) -> None:
    """The model process: load the model, then serve the pipe until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes us
    from mtkit.runtime import tune_process
    from mtkit.serve.batcher import Batcher

    torch.set_num_threads(spec.threads)
    tune_process()
    try:
        served = load_model(
            list(spec.checkpoints), spec.weights, spec.device, spec.precision, spec.shortlist
        )
    except Exception as error:  # already a one-line message for a bad checkpoint
        conn.send(("broken", str(error)))
        return
    translator = served.translator
    batcher = Batcher(translator, spec.wait_ms, spec.queue_size)
    batcher.start()
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        # If the parent is gone, _serve_pipe sees EOF and returns.
        with lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    facts = {
        "device": str(translator.device),
        "precision": translator.precision,
        "threads": torch.get_num_threads(),
    }
    send(("ready", facts))
    _serve_pipe(conn, batcher, send)
    batcher.close()
    send(("closed",))
    conn.close()


def _serve_pipe(conn: Connection, batcher: Any, send: Callable[[tuple[Any, ...]], None]) -> None:
    """Submit each job to the batcher; answer it from the worker thread when it is done."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message[0] == "close":
            return
        if message[0] == "answered":
            batcher.answered()
            continue
        job_id, request = message[1], message[2]
        try:
            future = batcher.submit(request)
        except (QueueFull, BatcherClosed) as error:
            send(("failed", job_id, type(error).__name__, str(error), *_counters(batcher)))
            continue
        future.add_done_callback(_replier(job_id, batcher, send))


def _replier(
    job_id: int, batcher: Any, send: Callable[[tuple[Any, ...]], None]
) -> Callable[[Future[list[list[Hypothesis]]]], None]:
    def reply(future: Future[list[list[Hypothesis]]]) -> None:
        error = future.exception()
        if error is None:
            send(("done", job_id, pack(future.result()), *_counters(batcher)))
        else:
            send(("failed", job_id, type(error).__name__, str(error), *_counters(batcher)))

    return reply


def _counters(batcher: Any) -> tuple[tuple[int, ...], int]:
    stats = batcher.stats
    return (stats.requests, stats.sentences, stats.batches, stats.steps), batcher.queued
