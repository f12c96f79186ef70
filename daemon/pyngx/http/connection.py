"""A connection's life apart from HTTP parsing: its states, their moves and deadlines, closing.

Owns the parse states (IDLE, HEAD, BODY, LINGER) and the one table of moves
between them, the deadline of each state (filed in the site's wheel, see
`pyngx.http.site`), flow-control waiters, the queue of pipelined and refused
requests, the 4xx of a refused request, the lingering close, and letting go of
the parser between requests. `pyngx.http.protocol.HttpProtocol` is the
subclass that parses and answers; the slots are declared there.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from pyngx.http import replies
from pyngx.http.site import UNFILED

try:  # the plain requests' path in C (setup.py builds it); without it every read goes to ``parse``
    from pyngx.http._fast import Base
except ImportError:  # pragma: no cover - the extension is optional
    class Base:  # type: ignore[no-redef]
        __slots__ = ()

if TYPE_CHECKING:
    from pyngx.conf.model import HttpConf
    from pyngx.http.exchange import Exchange
    from pyngx.http.site import Site

# Parse states of a connection, for its timeouts (a running handler is ``busy``).
IDLE, HEAD, BODY, LINGER = range(4)
NAMES = ("IDLE", "HEAD", "BODY", "LINGER")
# The allowed moves. IDLE → BODY: a pipelined request's head parsed in the read that ended the
# one before (no read began it). LINGER is the end: what comes then is read and dropped.
MOVES: dict[int, frozenset[int]] = {
    IDLE: frozenset((HEAD, BODY, LINGER)),
    HEAD: frozenset((IDLE, BODY, LINGER)),
    BODY: frozenset((IDLE, LINGER)),
    LINGER: frozenset(),
}
LINGER_TIME = 2.0


class Refused:
    """A refused request waiting in the queue behind answers still due: its 4xx comes in order."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


class BadMove(RuntimeError):
    """A parse state change outside ``MOVES``: a bug of this module."""


class Connection(Base):
    """The state machine of a connection; `HttpProtocol` adds the parsing and the answers."""

    # What an idle keep-alive connection holds is kept small: the queue, the flush waiters and
    # the addresses are made when first needed, and the parser goes back to the site between
    # requests (`shrink`; the next read takes one again).
    __slots__ = ("site", "transport", "parser", "_peer", "_sockname", "number", "requests", "state", "since",
                 "since_write", "due", "host_ok", "closed", "eof", "paused", "waiters", "queue", "busy",
                 "reading_paused", "tail", "listed")

    if TYPE_CHECKING:  # the parsing side's, read here
        url: bytes
        headers: list[tuple[bytes, bytes]]
        ex: Exchange | None

    def __init__(self, site: Site) -> None:
        self.site = site
        self.transport: Any = None
        self.parser: httptools.HttpRequestParser | None = None  # taken by the first read
        self._peer: Any = None
        self._sockname: Any = None
        self.number = 0
        self.requests = 0
        self.state = IDLE
        self.since = 0.0
        self.since_write = 0.0
        self.due = UNFILED  # from when the site's wheel covers this connection's deadline
        self.host_ok = b""
        self.closed = False
        self.eof = False
        self.paused = False
        self.waiters: list[asyncio.Future[None]] | None = None
        self.queue: deque[Exchange | Refused] | None = None
        self.busy = False
        self.reading_paused = False
        self.tail = False  # the last read may have ended inside a next request (the parser holds it)
        self.listed = False  # in the site's list of connections answered lately (`Site.shrink_idle`)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.site.loop

    @property
    def peer(self) -> Any:
        """The client's address (from the transport, once)."""
        peer = self._peer
        if peer is None and self.transport is not None:
            peer = self._peer = self.transport.get_extra_info("peername")
        return peer

    @property
    def sockname(self) -> Any:
        """The address the client connected to (from the transport, once)."""
        name = self._sockname
        if name is None and self.transport is not None:
            name = self._sockname = self.transport.get_extra_info("sockname")
        return name

    # -- the parse state and its deadline --
    def _move(self, to: int) -> None:
        """Change the parse state along ``MOVES`` (the caller starts its timeout: `_wait_from`)."""
        if to not in MOVES[self.state]:
            raise BadMove(f"connection state {NAMES[self.state]} cannot move to {NAMES[to]}")
        self.state = to

    def _wait_from(self, since: float) -> None:
        """The current state's timeout runs from SINCE: file the connection earlier if it is due sooner."""
        self.since = since
        when = since + self._timeout(self.site.conf)
        if when < self.due:
            self.site.arm(self, when)

    def _timeout(self, conf: HttpConf) -> float:
        """How long the current state may last (from ``since``)."""
        state = self.state
        if state == HEAD:
            return conf.client_header_timeout
        if state == BODY:
            return conf.client_body_timeout
        if state == LINGER:
            return LINGER_TIME
        return conf.keepalive_timeout if self.requests else conf.client_header_timeout

    def deadline(self, conf: HttpConf, grace_end: float | None) -> float | None:
        """When the timeout of the current state passes (the site's wheel then calls ``expire``);
        None while no timeout applies (a handler runs, an answer drains). GRACE_END: while
        draining, when idle keep-alive connections go."""
        if self.paused:
            # the client does not read what we send: only send_timeout applies
            return self.since_write + conf.send_timeout
        if self.transport.get_write_buffer_size():
            return None  # an answer is still going out (below the pause mark)
        when = self.since + self._timeout(conf)
        if self.state == IDLE:
            if self.busy or self.queue:
                return None  # a handler is running: user code has no timeout here
            return grace_end if grace_end is not None and grace_end < when else when
        return when

    def pause_writing(self) -> None:
        self.paused = True
        self.since_write = now = self.loop.time()
        when = now + self.site.conf.send_timeout
        if when < self.due:
            self.site.arm(self, when)

    def resume_writing(self) -> None:
        self.paused = False
        self._wake()

    def _wake(self) -> None:
        """Wake what waits for the socket to drain (ngx.flush(true) and friends)."""
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _queue(self, item: Exchange | Refused) -> None:
        """Keep ITEM until the answers before it are out."""
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append(item)

    def refuse(self, status: int) -> None:
        """Answer a bad request with STATUS and close (after the answers queued before it)."""
        if self.closed or self.state == LINGER:
            return
        if self.busy or self.queue:
            self._queue(Refused(status))
            self.transport.pause_reading()
            return
        self.site.refused(status)
        page = replies.page(status)
        head = b"".join((replies.status_line(status), self.site.date_server,
                         b"Content-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(page)))
        self.transport.write(head + page)
        self.linger()

    def linger(self) -> None:
        """Half-close and drop input for a moment, so the client reads our answer before a reset
        (nginx lingering_close)."""
        if self.closed:
            return
        if self.state != LINGER:
            self._move(LINGER)
        self._wait_from(self.loop.time())
        self.queue = None
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()
        except (OSError, RuntimeError):
            self.transport.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def shrink(self) -> bool:
        """Between requests: let go of the parser (to the site's pool) and what it cached; the
        next read takes one again. False when the connection is not between requests."""
        parser = self.parser
        if (parser is None or self.state != IDLE or self.busy or self.queue or self.tail or self.url
                or self.headers or self.ex is not None or self.closed):
            return False
        self.parser = None
        self.host_ok = b""
        self.site.release(parser)
        return True

    def idle(self) -> bool:
        """No request in progress (keep-alive wait)."""
        return self.state == IDLE and not self.busy and not self.queue

    def expire(self) -> None:
        """Close after a timeout: idle and lingering connections with a FIN (what the kernel still
        holds of the last answer is delivered), the others at once (RST)."""
        if self.state in (IDLE, LINGER) and not self.busy and not self.paused:
            self.close()
        else:
            self.abort()
