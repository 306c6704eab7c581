"""Several service processes on one listening socket, each decoding its own connections.

``mtkit-serve --worker inline --workers N``: the command binds the socket, then starts N
processes (``spawn``: each loads the checkpoints itself). Each runs the whole app, HTTP
included, over an :class:`~mtkit.serve.inline.InlineBatcher`, and accepts connections
from the shared socket while it holds no more of them than the others
(:class:`~mtkit.serve.accept.BalancedServer`): a connection, with every request it
carries, stays with the process that accepted it. No request crosses a pipe, and no
third process competes for the cores. The parent only supervises: it prints the address
once every process has loaded its model, passes Ctrl-C or SIGTERM on (each process
answers or refuses the requests it holds and stops), and starts a new process in the
place of one that dies (the connections that process held are lost); a process that
cannot load, at start or at a restart, stops the service with a one-line error.

``GET /healthz`` and ``GET /v1/model`` answer for the process that took the connection;
its counters are that process's (``/healthz`` names its ``pid``). While a process is
being replaced, the others' ``/healthz`` answer 503 ``restarting``: the processes
publish whether they serve in a shared array.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, MutableSequence, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from mtkit.errors import MtkitError
from mtkit.runtime import own_group_and_die_with_parent

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading a large ensemble on a slow disk can take a while
STOP_TIMEOUT_S = 1.5  # a process's graceful stop (mtkit.serve.server), then SIGKILL
BUSY = 2**62  # the open connections a dead process counts as: the others accept meanwhile


class _Group:
    """The service processes, their shared counters, and how to start one."""

    def __init__(self, args: argparse.Namespace, sock: socket.socket) -> None:
        self.args, self.sock = args, sock
        self.context = multiprocessing.get_context("spawn")
        self.counts = self.context.Array("q", args.workers, lock=False)  # open connections
        self.up = self.context.Array("b", args.workers, lock=False)  # 1 while one serves
        self.processes: list[BaseProcess] = []

    def start(self, index: int) -> Connection:
        """Start process ``index`` (in place of a dead one, if any); the pipe it reports on."""
        mine, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=listener_main,
            args=(self.args, self.sock, theirs, self.counts, self.up, index, os.getpid()),
            name=f"mtkit-serve-{index}",
        )
        process.start()
        theirs.close()
        if index < len(self.processes):
            self.processes[index] = process
        else:
            self.processes.append(process)
        return mine

    def restart(self, index: int) -> None:
        """Replace process ``index``, which has died; a new one that cannot load is an
        MtkitError."""
        dead = self.processes[index]
        dead.join(1)
        self.up[index], self.counts[index] = 0, BUSY
        log.error(
            "service process %d of %d stopped (exit %s); starting a new one",
            index + 1,
            len(self.processes),
            dead.exitcode,
        )
        _wait_ready(self.start(index), self.processes[index])


def serve_processes(
    args: argparse.Namespace, sock: socket.socket, announce: Callable[[dict[str, Any]], None]
) -> int:
    """Run ``args.workers`` service processes on ``sock`` until a signal or a failure.

    ``announce(info)`` prints the address once all of them are ready (``info``: the
    first one's ``GET /v1/model``). Returns 0 after Ctrl-C or SIGTERM; a process that
    cannot load is an MtkitError.
    """
    group = _Group(args, sock)
    try:
        pipes = [group.start(index) for index in range(args.workers)]
        ready = zip(pipes, group.processes, strict=True)
        infos = [_wait_ready(pipe, process) for pipe, process in ready]
        announce(infos[0])
        return _supervise(group)
    finally:
        sock.close()  # first: new connections are refused, not queued for no one
        _stop(group.processes)


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
    finally:
        pipe.close()
    if kind != "ready":
        raise MtkitError(str(payload))
    return dict(payload)


class _Stop(Exception):
    """Ctrl-C or SIGTERM reached the supervising process."""


def _supervise(group: _Group) -> int:
    """Replace each process that dies, until a signal (0) or a failed restart (MtkitError)."""

    def stop(signum: int, _: FrameType | None) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            ended = multiprocessing.connection.wait([p.sentinel for p in group.processes])
            for index, process in enumerate(list(group.processes)):
                if process.sentinel in ended:
                    group.restart(index)
    except _Stop:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: Sequence[BaseProcess]) -> None:
    """SIGTERM every process still running (a graceful stop), SIGKILL after a while."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5.0)


def peer_health(up: Sequence[int]) -> tuple[str, str | None]:
    """``ok`` while every service process serves, else ``restarting`` and which one."""
    down = [index + 1 for index, serving in enumerate(up) if not serving]
    if not down:
        return "ok", None
    return "restarting", f"service process {down[0]} of {len(up)} stopped; it is restarting"


def listener_main(
    args: argparse.Namespace,
    sock: socket.socket,
    pipe: Connection,
    counts: MutableSequence[int],
    up: MutableSequence[int],
    index: int,
    parent: int,
) -> None:
    """Service process ``index``: load the model, report ready, then serve the connections
    it accepts from ``sock`` (while it holds the fewest of ``counts``) until SIGTERM, or
    until the supervisor ``parent`` dies (even by ``kill -9``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    own_group_and_die_with_parent(parent)
    logging.basicConfig(level=logging.WARNING, format="mtkit-serve: %(message)s")
    try:
        from mtkit.serve.accept import BalancedServer
        from mtkit.serve.app import create_app
        from mtkit.serve.server import server_config
        from mtkit.serve.setup import served_model

        app = create_app(*served_model(args))
        app.state.batcher.start()
    except MtkitError as error:
        pipe.send(("broken", " ".join(str(error).split())))
        return
    except Exception as error:  # a bug: say what, in one line
        pipe.send(("broken", f"{type(error).__name__}: {error}"))
        return
    app.state.peers = lambda: peer_health(up)
    up[index] = 1
    pipe.send(("ready", app.state.info))
    pipe.close()
    server = BalancedServer(server_config(app), app.state.batcher.close, sock, counts, index)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    sys.stdout.flush()
