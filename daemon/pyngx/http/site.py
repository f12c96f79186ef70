"""What a connection reads of its server: one small object, and the connections' deadlines.

Owns the ``Date``/``Server`` line and the coarse clock (both renewed once per
tick by the server), the counters, whether the server drains, the timeouts of
the ``http`` block, the access log, the context plain handlers run in, and the
timer wheel of connection deadlines. `pyngx.http.protocol` reads only this;
`pyngx.http.server` owns it and the listeners.

Deadlines are lazy: a connection is filed in the wheel under the first slot
after the moment it may time out, and checked only when that slot comes.
Activity on the connection moves its ``since`` and nothing else; when the slot
comes, the connection computes its real deadline and is closed, or filed again
further on. So a timeout costs nothing for a connection that is not due, and
the tick's work is the slots that are due, not every connection.
"""
from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

from pyngx.conf.model import HttpConf
from pyngx.runtime import phase

if TYPE_CHECKING:
    from pyngx.http.accesslog import AccessLog
    from pyngx.http.exchange import Exchange
    from pyngx.http.connection import Connection
    from pyngx.http.protocol import HttpProtocol

SLOTS = 8  # wheel slots per second (a power of two: slot times are exact floats)
UNFILED = math.inf  # the ``due`` of a connection not in the wheel
SHRINK_AFTER = 1.0  # seconds of keep-alive after which a connection lets go of its parser
POOLED = 256  # parsers kept for the next connections that read (the rest are freed)
RECHECK = 0.5  # seconds until a connection without a deadline now (a handler runs, an answer drains) is looked at again


class Site:
    """The narrow state a connection shares with its server."""

    __slots__ = ("loop", "conf", "keepalive", "date_server", "clock", "draining", "grace_end", "conns", "access",
                 "content_ctx", "render_status", "n_accepted", "n_requests", "n_refused", "by_class", "all_gone",
                 "wheel", "next_slot", "fresh", "parsers")

    def __init__(self, http: HttpConf, loop: asyncio.AbstractEventLoop, access: AccessLog | None,
                 render_status: Callable[[Exchange], tuple[bytes, str]]) -> None:
        self.loop = loop
        self.conf = http  # the timeouts: keepalive, client_header, client_body, send
        self.keepalive = http.keepalive_timeout
        self.date_server = b""  # "Server: ...\r\nDate: ...\r\n", renewed each tick
        self.clock = loop.time()  # loop time at the last tick: timeouts need no more precision
        self.draining = False
        self.grace_end: float | None = None  # while draining: when idle keep-alive connections go
        self.conns: set[Connection] = set()
        self.access = access
        # the context plain content handlers run in (pyngx.http.protocol.run), its phase set once
        self.content_ctx = contextvars.copy_context()
        self.content_ctx.run(phase.set, phase.CONTENT)
        self.render_status = render_status  # the status page's body and type for a request
        self.n_accepted = 0
        self.n_requests = 0
        self.n_refused = 0
        self.by_class = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self.all_gone: asyncio.Future[None] | None = None
        self.wheel: dict[int, set[Connection]] = {}
        self.next_slot = int(loop.time() * SLOTS)  # the first slot not checked yet
        self.fresh: list[Connection] = []  # connections answered lately (each once): `shrink_idle`
        self.parsers: list[httptools.HttpRequestParser] = []  # let go by idle connections, for the next ones

    # -- connections --
    def opened(self, conn: HttpProtocol) -> int:
        """Count and keep CONN; its number on this server."""
        self.n_accepted += 1
        self.conns.add(conn)
        return self.n_accepted

    def lost(self, conn: Connection) -> None:
        self.conns.discard(conn)
        self.unfile(conn)
        if not self.conns and self.all_gone is not None and not self.all_gone.done():
            self.all_gone.set_result(None)

    def refused(self, status: int) -> None:
        self.n_refused += 1
        self.by_class[status // 100] += 1

    def log_request(self, ex: Exchange) -> None:
        """Count a non-200 answer and write the access log line (n_requests is counted by the caller)."""
        status = ex.status
        if status != 200:  # 2xx is counted as what is left
            self.by_class[status // 100 if 100 <= status < 600 else 0] += 1
        if self.access is not None:
            self.access.write(ex)

    # -- deadlines --
    def arm(self, conn: Connection, when: float) -> None:
        """Look at CONN no later than the first slot after WHEN (an earlier filing stays).

        A connection in slot S has ``due`` = (S - 1) / SLOTS: every moment from ``due`` on is
        covered by that filing, so the connection's check before calling here is ``when < due``.
        """
        slot = int(when * SLOTS) + 1
        if slot < self.next_slot:
            slot = self.next_slot
        due = conn.due
        if due != UNFILED:
            old = int(due * SLOTS) + 1
            if old <= slot:
                return
            bucket = self.wheel.get(old)
            if bucket is not None:
                bucket.discard(conn)
        bucket = self.wheel.get(slot)
        if bucket is None:
            bucket = self.wheel[slot] = set()
        bucket.add(conn)
        conn.due = (slot - 1) / SLOTS

    def unfile(self, conn: Connection) -> None:
        due = conn.due
        if due != UNFILED:
            bucket = self.wheel.get(int(due * SLOTS) + 1)
            if bucket is not None:
                bucket.discard(conn)
            conn.due = UNFILED

    def expire_due(self, now: float) -> None:
        """Close the connections whose timeout has passed; file the others of the due slots again."""
        first, last = self.next_slot, int(now * SLOTS)
        self.next_slot = last + 1  # what is filed again goes after the slots looked at now
        wheel = self.wheel
        conf = self.conf
        grace_end = self.grace_end
        for slot in range(first, last + 1):
            bucket = wheel.pop(slot, None)
            if not bucket:
                continue
            for conn in bucket:
                conn.due = UNFILED
                if conn.closed:
                    continue
                when = conn.deadline(conf, grace_end)
                if when is None:
                    self.arm(conn, now + RECHECK)
                elif now > when:
                    conn.expire()
                else:
                    self.arm(conn, when)

    # -- parsers: one per connection that reads, not per connection that waits --
    def parser_for(self, conn: HttpProtocol) -> httptools.HttpRequestParser:
        """A parser calling CONN back: one let go by an idle connection, else a new one."""
        pool = self.parsers
        if pool:
            parser = pool.pop()
            parser.__init__(conn)  # type: ignore[misc]  # (httptools: re-binds, allocates nothing)
            return parser
        return httptools.HttpRequestParser(conn)

    def release(self, parser: httptools.HttpRequestParser) -> None:
        """Keep PARSER (between requests) for another connection; it no longer calls its old one."""
        if len(self.parsers) < POOLED:
            parser.__init__(_NOBODY)  # type: ignore[misc]
            self.parsers.append(parser)

    def shrink_idle(self, now: float) -> None:
        """Connections answered lately and idle since SHRINK_AFTER let go of their parser; the
        others stay listed. Costs the connections active lately, not every connection."""
        listed, self.fresh = self.fresh, []
        keep = self.fresh
        for conn in listed:
            if conn.closed:
                conn.listed = False
            elif now - conn.since < SHRINK_AFTER:
                keep.append(conn)
            else:
                conn.listed = False
                conn.shrink()

    def drain(self, grace: float) -> None:
        """Graceful exit begins: idle keep-alive connections go after GRACE seconds."""
        self.draining = True
        self.grace_end = end = self.loop.time() + grace
        for conn in self.conns:
            self.arm(conn, end)

    def filed(self) -> int:
        """How many connections wait in the wheel (tests, statistics)."""
        return sum(len(b) for b in self.wheel.values())


class _Nobody:
    """What a pooled parser is bound to: no callbacks, so it keeps no connection alive."""

    __slots__ = ()


_NOBODY = _Nobody()
