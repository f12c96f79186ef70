"""The request body as it arrives: ``async for chunk in ngx.req.stream():``.

A location whose Python calls ``ngx.req.stream`` (seen in its code once, at
start: `wants_stream`) is run as soon as the request head is complete, when
the connection has nothing else in progress; the parser's body pieces then go
to the exchange's `BodyStream` instead of a buffer. Reading pauses while more
than ``HIGH`` bytes wait to be taken. ``client_max_body_size`` still applies:
past it the stream answers 413 and ends the handler. Elsewhere (a pipelined
request, or a location that does not stream) the body is read whole first and
``stream()`` yields it at once.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from pyngx.errors import ClosedError
from pyngx.http import answers
from pyngx.runtime.phase import Exit

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange

HIGH = 256 * 1024  # bytes waiting before reading pauses
CHECK = 0.5  # seconds between looks at a connection that sends nothing


class BodyStream:
    """Body pieces between the parser (producer) and the handler (consumer)."""

    __slots__ = ("conn", "pieces", "size", "ended", "status", "waiter", "paused", "taken")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pieces: deque[bytes] = deque()
        self.size = 0
        self.ended = False
        self.status = 0  # 413 when the body went over client_max_body_size
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.taken = False

    # -- the parser's side --
    def take(self, ex: Exchange, data: bytes, total: int) -> None:
        """A piece from the parser; TOTAL bytes so far. Past the limit: 413, the rest is dropped."""
        if self.ended:
            return
        route = ex.route
        if route is not None and total > route.max_body:
            ex.keep_alive = False  # the rest of the body is not read: close after the answer
            self.end(413)
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)
        if self.size > HIGH and not self.paused:
            self.paused = True
            self.conn.transport.pause_reading()
        self._wake()

    def end(self, status: int = 0) -> None:
        self.ended = True
        self.status = status
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- the handler's side --
    async def chunks(self, ex: Exchange) -> Any:
        while True:
            if self.pieces:
                data = self.pieces.popleft()
                self.size -= len(data)
                if self.paused and self.size <= HIGH // 2 and not self.conn.closed:
                    self.paused = False
                    self.conn.transport.resume_reading()
                yield data
                continue
            if self.status:
                answers.fill(ex, self.status)  # nginx: 413 and the request ends
                raise Exit(self.status)
            if self.ended:
                return
            if self.conn.closed:
                raise ClosedError("closed")
            self.waiter = self.conn.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self.waiter), CHECK)
            except asyncio.TimeoutError:
                pass
            self.waiter = None


def start(conn: Any, ex: Exchange) -> None:
    """Run EX now, its body to come through a `BodyStream`."""
    ex.extra().stream = BodyStream(conn)
    conn.run(ex)


async def collect(ex: Exchange, stream: BodyStream) -> None:
    """``await ngx.req.read_body()`` on a streamed body: all of it into ``ex.body``."""
    stream.taken = True
    ex.body = b"".join([piece async for piece in stream.chunks(ex)])


async def whole(ex: Exchange) -> Any:
    """The stream of a body that was read whole before the handler ran."""
    if ex.body:
        yield ex.body
