"""uvicorn's server for the service: on Ctrl-C or SIGTERM it stops within about a second.

uvicorn's own graceful shutdown waits for the requests in flight; under load those include
every request queued behind the search under way, so a stop could take as long as the
queue. :class:`Server` closes the worker first, at the start of the shutdown: the
requests still waiting get a 503 at once, the search under way has :data:`CLOSE_S` to
finish (then its requests get a 503 too), and uvicorn's wait for the handlers
(:data:`GRACE_S`) ends as soon as they have answered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE_S = 0.8  # how long a stop lets the search under way finish
GRACE_S = 1  # uvicorn's wait for the handlers in flight (they answer once the worker closes)


def server_config(app: Any) -> uvicorn.Config:
    """The service's uvicorn settings: no access log, a short graceful shutdown."""
    return uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S
    )


class QuietOnClosed:
    """ASGI middleware: an answer written to a connection the server has already closed is
    dropped instead of failing the request with a logged traceback.

    It happens as the service stops: a request that arrives on a connection the shutdown
    is closing still runs, and under uvloop writing its answer raises RuntimeError ("the
    handler is closed"). The client is gone either way.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        closed = False

        async def guarded(message: Message) -> None:
            nonlocal closed
            if closed:
                return
            try:
                await send(message)
            except RuntimeError as error:
                if "handler is closed" not in str(error):
                    raise
                closed = True

        await self.app(scope, receive, guarded)


class Server(uvicorn.Server):
    """uvicorn's server that calls ``close_worker(CLOSE_S)`` as its shutdown begins."""

    def __init__(self, config: uvicorn.Config, close_worker: Callable[[float], None]) -> None:
        super().__init__(config)
        self.close_worker = close_worker

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        closing = asyncio.get_running_loop().run_in_executor(None, self.close_worker, CLOSE_S)
        try:
            await super().shutdown(sockets=sockets)
        finally:
            await closing
