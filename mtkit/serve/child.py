"""The model process's side of :class:`~mtkit.serve.process.ModelProcess`: load the model,
then decode the jobs that come over the pipe with a :class:`~mtkit.serve.batcher.Batcher`.

Whatever goes wrong with one job (a bug in the search, an answer that cannot be sent)
fails that job alone, with a ``("failed", ...)`` message: the process goes on serving.
It ends when the parent says ``close``, when the pipe closes (the parent is gone), or
when its Batcher's worker thread has stopped, so that the parent starts a fresh process
instead of one that can only refuse. Messages: :mod:`mtkit.serve.process`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch

from mtkit.runtime import tune_process
from mtkit.search.hypothesis import Hypothesis, pack
from mtkit.serve.batcher import Batcher
from mtkit.serve.jobs import BatcherClosed, QueueFull, Request
from mtkit.serve.onnx import ExportTranslator
from mtkit.serve.setup import ServedModel, load_export, load_model

log = logging.getLogger(__name__)

CLOSE_S = 1.0  # how long a closing child lets the search under way finish

Send = Callable[[tuple[Any, ...]], None]


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
    export: bool = False  # checkpoints[0] is an ONNX export folder (mtkit.serve.onnx)


def child_main(conn: Connection, spec: WorkerSpec) -> None:
    """The model process: load the model, then serve the pipe until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes us
    torch.set_num_threads(spec.threads)
    tune_process()
    try:
        served = _load(spec)
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
        "threads": (
            translator.threads
            if isinstance(translator, ExportTranslator)
            else torch.get_num_threads()
        ),
    }
    send(("ready", facts))
    _serve_pipe(conn, batcher, send)
    batcher.close(CLOSE_S)
    send(("closed",))
    conn.close()
    # Nothing is left to clean up, and tearing down the interpreter (torch's modules and
    # threads) takes a second or two, which would count against the service's stop.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _load(spec: WorkerSpec) -> ServedModel:
    """The model of ``spec``: its checkpoints, or its export folder on ``threads`` threads."""
    if spec.export:
        return load_export(spec.checkpoints[0], spec.precision, spec.threads)
    return load_model(
        list(spec.checkpoints), spec.weights, spec.device, spec.precision, spec.shortlist
    )


def _serve_pipe(conn: Connection, batcher: Batcher, send: Send) -> None:
    """Submit each job to the batcher; answer it from the worker thread when it is done."""
    while batcher.alive:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        except Exception:  # a message that does not unpickle: a bug; the others go on
            log.exception("a message from the service could not be read")
            continue
        if message[0] == "close":
            return
        if message[0] == "answered":
            batcher.answered()
        else:
            _submit(message[1], message[2], batcher, send)
    log.error("the model process's worker thread stopped; the service starts a new process")


def _submit(job_id: int, request: Request, batcher: Batcher, send: Send) -> None:
    """Hand one job to the batcher; a job it cannot take fails at once, alone."""
    try:
        future = batcher.submit(request)
    except Exception as error:
        if not isinstance(error, QueueFull | BatcherClosed):
            log.exception("request %d could not be queued", job_id)
        send(("failed", job_id, type(error).__name__, str(error), *_counters(batcher)))
        return
    future.add_done_callback(_replier(job_id, batcher, send))


def _replier(
    job_id: int, batcher: Batcher, send: Send
) -> Callable[[Future[list[list[Hypothesis]]]], None]:
    def reply(future: Future[list[list[Hypothesis]]]) -> None:
        error = future.exception()
        if error is None:
            try:
                send(("done", job_id, pack(future.result()), *_counters(batcher)))
                return
            except Exception as failure:  # an answer that cannot be sent: a bug
                log.exception("the answer to request %d could not be sent", job_id)
                error = failure
        send(("failed", job_id, type(error).__name__, str(error), *_counters(batcher)))

    return reply


def _counters(batcher: Batcher) -> tuple[tuple[int, ...], int]:
    stats = batcher.stats
    return (stats.requests, stats.sentences, stats.batches, stats.steps), batcher.queued
