"""Connections spread evenly over the service processes that share one listening socket.

With one socket and several processes accepting from it, the kernel gives each new
connection to whichever process polls first: a burst of connections from a client pool
can be split very unevenly, and as a connection keeps its process for every request it
carries, the process with fewer idles while the other queues. Each process here
accepts only while it holds no more open connections than any other (least connections,
as load balancers do it): the processes publish their counts in a shared array, and one
that holds more waits and looks again a few milliseconds later. A burst then alternates
between the processes, and a process busy with a search step leaves the next connection
to the others.

:class:`BalancedServer` is the service's server (:mod:`mtkit.serve.server`) with its own
accept loop: the listening socket is not handed to uvicorn; accepted connections get
uvicorn's HTTP protocol through ``loop.connect_accepted_socket``, and uvicorn keeps track
of them and shuts them down gracefully as it does its own. A process that died leaves
its count to its parent, which marks it busy until a new process takes its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, MutableSequence
from typing import Any

import uvicorn

from mtkit.serve.server import Server

log = logging.getLogger(__name__)

RECHECK_S = 0.005  # how soon a process that holds more connections looks again


class BalancedServer(Server):
    """The service's server accepting from ``sock`` only while this process (``index`` in
    ``counts``, the processes' open connections) holds the fewest connections."""

    def __init__(
        self,
        config: uvicorn.Config,
        close_worker: Callable[[float], None],
        sock: socket.socket,
        counts: MutableSequence[int],
        index: int,
    ) -> None:
        super().__init__(config, close_worker)
        self.listening = sock
        self.counts = counts
        self.index = index
        self._accepting: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[Any] | None = None  # a connection being set up

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # lifespan and state; no listener of its own
        if not self.should_exit:
            self.listening.setblocking(False)
            self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._connecting is not None:  # let it join the connections the shutdown closes
            with contextlib.suppress(Exception):
                await self._connecting
        self.listening.close()
        self.counts[self.index] = 0
        await super().shutdown(sockets=sockets)

    def _open(self) -> int:
        """Open connections of this process, published for the others."""
        count = len(self.server_state.connections)
        self.counts[self.index] = count
        return count

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._open() > min(self.counts):
                await asyncio.sleep(RECHECK_S)
                continue
            try:
                connection, _ = await loop.sock_accept(self.listening)
            except OSError as error:  # e.g. too many open files: wait, keep serving
                log.warning("accepting a connection failed: %s", error)
                await asyncio.sleep(0.1)
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Shielded: cancelled half-way (the shutdown), uvloop closes the transport of a
            # connection already counted and never reports it lost, which holds up the
            # shutdown until its timeout; shutdown() waits for it instead.
            self._connecting = asyncio.ensure_future(
                loop.connect_accepted_socket(self._protocol, connection)
            )
            await asyncio.shield(self._connecting)
            self._open()

    def _protocol(self) -> asyncio.Protocol:
        """uvicorn's HTTP protocol for one connection, as its own listeners make it."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
