"""Several service processes on one listening socket, each decoding its own connections.

``mtkit-serve --worker inline --workers N``: the command binds the socket, then starts N
processes (``spawn``: each loads the checkpoints itself). Each runs the whole app, HTTP
included, over an :class:`~mtkit.serve.inline.InlineBatcher`, and accepts connections
from the shared socket while it holds no more of them than the others
(:class:`~mtkit.serve.accept.BalancedServer`): a connection, with every request it
carries, stays with the process that accepted it. No request crosses a pipe, and no
third process competes for the cores. The parent only supervises: it prints the address
once every process has loaded its model, passes Ctrl-C or SIGTERM on (each process
finishes the requests it holds), and stops the service, with a one-line error, if a
process dies.

``GET /healthz`` and ``GET /v1/model`` answer for the process that took the connection;
its counters are that process's (``/healthz`` names its ``pid``).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
from collections.abc import Callable, MutableSequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from mtkit.errors import MtkitError

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while
STOP_TIMEOUT_S = 15.0  # a process's graceful shutdown (uvicorn's is 5 s), then SIGKILL


def serve_processes(
    args: argparse.Namespace, sock: socket.socket, announce: Callable[[dict[str, Any]], None]
) -> int:
    """Run ``args.workers`` service processes on ``sock`` until a signal or a failure.

    ``announce(info)`` prints the address once all of them are ready (``info``: the
    first one's ``GET /v1/model``). Returns 0 after Ctrl-C or SIGTERM; a process that
    cannot load or dies is an MtkitError.
    """
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = []
    counts = context.Array("q", args.workers, lock=False)  # open connections per process
    try:
        pipes = []
        for index in range(args.workers):
            mine, theirs = context.Pipe(duplex=False)
            process = context.Process(
                target=listener_main,
                args=(args, sock, theirs, counts, index),
                name=f"mtkit-serve-{index}",
            )
            process.start()
            theirs.close()
            processes.append(process)
            pipes.append(mine)
        infos = [_wait_ready(pipe, process) for pipe, process in zip(pipes, processes, strict=True)]
        announce(infos[0])
        sock.close()  # the processes hold their own copies
        return _supervise(processes)
    finally:
        _stop(processes)


def _wait_ready(pipe: Connection, process: BaseProcess) -> dict[str, Any]:
    """The process's model description once it serves; its loading error as MtkitError."""
    if not pipe.poll(START_TIMEOUT_S):
        raise MtkitError(f"a service process did not start in {START_TIMEOUT_S:.0f} s")
    try:
        kind, payload = pipe.recv()
    except EOFError:
        process.join(10)
        raise MtkitError(
            f"a service process stopped while loading (exit {process.exitcode})"
        ) from None
    if kind != "ready":
        raise MtkitError(str(payload))
    return dict(payload)


class _Stop(Exception):
    """Ctrl-C or SIGTERM reached the supervising process."""


def _supervise(processes: list[BaseProcess]) -> int:
    """Wait until a signal (0) or until a process dies (an MtkitError)."""

    def stop(signum: int, _: FrameType | None) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ended = multiprocessing.connection.wait([p.sentinel for p in processes])
    except _Stop:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    dead = next(p for p in processes if p.sentinel in ended)
    dead.join(1)
    raise MtkitError(f"a service process stopped (exit {dead.exitcode}); the service stops")


def _stop(processes: list[BaseProcess]) -> None:
    """SIGTERM every process still running (a graceful shutdown), SIGKILL after a while."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT_S)


def listener_main(
    args: argparse.Namespace,
    sock: socket.socket,
    pipe: Connection,
    counts: MutableSequence[int],
    index: int,
) -> None:
    """Service process ``index``: load the model, report ready, then serve the connections
    it accepts from ``sock`` (while it holds the fewest of ``counts``) until SIGTERM."""
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    logging.basicConfig(level=logging.WARNING, format="mtkit-serve: %(message)s")
    try:
        import uvicorn

        from mtkit.serve.accept import BalancedServer
        from mtkit.serve.app import create_app
        from mtkit.serve.setup import served_model

        app = create_app(*served_model(args))
        app.state.batcher.start()
    except MtkitError as error:
        pipe.send(("broken", " ".join(str(error).split())))
        return
    except Exception as error:  # a bug: say what, in one line
        pipe.send(("broken", f"{type(error).__name__}: {error}"))
        return
    pipe.send(("ready", app.state.info))
    pipe.close()
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    with contextlib.suppress(KeyboardInterrupt):
        BalancedServer(config, sock, counts, index).run()
    sys.stdout.flush()
