"""What one request may cost the service: its body's bytes, counted as they arrive.

A body is read here, before the app sees it, and never past :func:`body_limit` bytes,
whatever its framing: a declared ``Content-Length`` over the limit is refused before a
byte of the body is read, and a chunked body (no length declared) is refused as soon as
the bytes read pass the limit. (Bytes sent beyond a declared length are not this body:
the HTTP parser reads them as the next request, which it refuses.) The refusal is a 413
with a JSON ``detail`` and ``Connection: close``: the rest of the body is never read
(the server stops reading the connection), so a huge body costs at most the limit in
memory, and that only while it is refused.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_SLACK = 65536  # bytes for the JSON around the texts


def body_limit(max_chars: int) -> int:
    """The bytes a request body may have: 6 per character of ``--max-chars`` (a
    character written as a ``\\uXXXX`` escape) and :data:`BODY_SLACK` for the rest."""
    return 6 * max_chars + BODY_SLACK


class BodyLimit:
    """ASGI middleware: an HTTP request's body, read up to ``max_bytes``, or a 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            detail = f"request body of {declared} bytes; the limit is {self.max_bytes} bytes"
            await _refuse(scope, receive, send, detail)
            return
        messages = await self._read(receive)
        if messages is None:
            detail = f"request body over the limit of {self.max_bytes} bytes"
            await _refuse(scope, receive, send, detail)
            return
        await self.app(scope, _replay(messages, receive), send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        """The request's body as one message (then a disconnect, if the client left
        meanwhile), or None as soon as the bytes read pass the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return [_body(chunks), message]
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return [_body(chunks)]


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` a request declares (None without one); an absurdly long
    number counts as 10**18 bytes rather than being parsed."""
    for name, value in headers:
        if name.lower() == b"content-length" and value.strip().isdigit():
            digits = value.strip()
            return int(digits) if len(digits) <= 18 else 10**18
    return None


def _body(chunks: list[bytes]) -> Message:
    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that gives ``messages`` first, then what the connection brings."""
    pending = collections.deque(messages)

    async def replayed() -> Message:
        return pending.popleft() if pending else await receive()

    return replayed


async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    """A 413 that closes the connection (the unread rest of the body goes with it)."""
    response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
    await response(scope, receive, send)
