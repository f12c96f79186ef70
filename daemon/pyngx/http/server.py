"""The HTTP server of one worker (or single process) on inherited listeners.

Owns accepting on the sockets the master bound, the set of live connections,
the once-per-tick work (the ``Date`` header, timeouts), counters, the access
log, and graceful exit: stop accepting, finish in-flight requests, answer the
next request of each keep-alive connection with ``Connection: close``, close
connections idle past a short grace. Knows nothing of processes: it registers
lifecycle hooks and the caller decides when the process ends.
"""
from __future__ import annotations

import asyncio
import contextvars
import os
import random
import signal
import socket
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.conf.directives import default
from pyngx.conf.model import HttpConf
from pyngx.http import answers, exchange
from pyngx.http import status as status_page
from pyngx.http.accept import Acceptor
from pyngx.http.accesslog import AccessLog
from pyngx.http.protocol import HttpProtocol
from pyngx.http.replies import SERVER
from pyngx.http.route import Vhosts, build
from pyngx.runtime import lifecycle, phase, state, tree
from pyngx.runtime.state import STATE

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange

TICK = 0.5  # seconds between sweeps (Date header, timeouts)
DRAIN_GRACE = 1.0  # an idle keep-alive connection is closed this long after graceful exit begins

_live: list[HttpServer] = []


class HttpServer:
    """Serving HTTP in this process: listeners, connections, counters."""

    def __init__(self, http: HttpConf, loop: asyncio.AbstractEventLoop) -> None:
        self.conf = http
        self.loop = loop
        self.vhosts: dict[tuple[str, int], Vhosts] = build(http, STATE.globals)
        self.listeners: list[Acceptor] = []
        self.conns: set[HttpProtocol] = set()
        self.draining = False
        self.drain_since = 0.0
        self.all_gone: asyncio.Future[None] | None = None
        self.access = AccessLog(http.access_log.path, loop) if http.access_log.path else None
        self.date_server = b""
        self.clock = loop.time()  # loop time at the last tick: timeouts need no more precision
        self.tick_handle: asyncio.TimerHandle | None = None
        # counters
        self.n_accepted = 0
        self.n_requests = 0
        self.n_refused = 0
        self.by_class = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self.started = time.time()
        self.max_requests = _max_requests()
        # the context plain content handlers run in (pyngx.http.protocol.run)
        self.content_ctx = contextvars.copy_context()
        self.content_ctx.run(phase.set, phase.CONTENT)
        self._tick()

    # -- lifecycle --
    def listen(self, sockets: Mapping[tuple[str, int], socket.socket]) -> None:
        """Accept on every socket whose address a server listens on."""
        config = STATE.config
        limit = config.worker_connections if config is not None else default("worker_connections")
        for key, sock in sockets.items():
            vhosts = self.vhosts.get(key)
            if vhosts is None or self.draining:
                continue
            self.listeners.append(Acceptor(self.loop, sock, lambda v=vhosts: HttpProtocol(self, v),
                                           self.conns.__len__, limit))

    def stop_accepting(self) -> None:
        """Graceful exit begins: no new connections; keep-alive ones end after their next answer."""
        self.draining = True
        self.drain_since = self.loop.time()
        for acceptor in self.listeners:
            acceptor.close()
        self.listeners.clear()
        self._sweep()

    async def drain(self) -> None:
        """Wait until every connection is closed."""
        if not self.conns:
            return
        self.all_gone = self.loop.create_future()
        await self.all_gone

    def final(self, graceful: bool) -> None:
        """The process ends: drop what is left and flush the access log."""
        for acceptor in self.listeners:
            acceptor.close()
        self.listeners.clear()
        for conn in list(self.conns):
            conn.abort()
        if self.tick_handle is not None:
            self.tick_handle.cancel()
            self.tick_handle = None
        self.publish()
        if self.access is not None:
            self.access.close()
        if self in _live:
            _live.remove(self)

    # -- connections --
    def accepted(self) -> int:
        self.n_accepted += 1
        return self.n_accepted

    def lost(self, conn: HttpProtocol) -> None:
        self.conns.discard(conn)
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

    def answer_status(self, ex: Exchange) -> None:
        body, ctype = status_page.render(self, ex)
        answers.answer(ex.conn, ex, 200, body, ctype)

    # -- once per tick --
    def _tick(self) -> None:
        now = time.time()
        self.clock = self.loop.time()
        self.date_server = f"Server: {SERVER}\r\nDate: {formatdate(now, usegmt=True)}\r\n".encode("latin-1")
        self._sweep()
        self.publish()
        if self.max_requests and self.n_requests >= self.max_requests and not self.draining:
            self.max_requests = 0  # once
            log.notice(f"worker process reached worker_max_requests ({self.n_requests} requests), "
                       "exiting gracefully")
            os.kill(os.getpid(), signal.SIGQUIT)  # as process.signal_graceful_exit(): the master replaces it
        self.tick_handle = self.loop.call_later(TICK, self._tick)

    def publish(self) -> None:
        """Copy the counters into this process's row of the process table (status totals)."""
        if tree.TREE is not None:
            tree.TREE.publish_http(self.counter_row())

    def counter_row(self) -> list[int]:
        """The counters in ``tree.HTTP_FIELDS`` order."""
        classes = self._classes()
        return [self.n_accepted, self.n_requests, self.n_refused, *(classes[f"{i}xx"] for i in range(1, 6)),
                len(self.conns)]

    def _sweep(self) -> None:
        if not self.conns:
            return
        now = self.loop.time()
        conf = self.conf
        grace = None
        if self.draining:
            grace = DRAIN_GRACE - max(0.0, now - self.drain_since)
        for conn in list(self.conns):
            if conn.expired(now, conf, grace):
                conn.expire()

    def _classes(self) -> dict[str, int]:
        counts = {f"{i}xx": self.by_class[i] for i in range(1, 6)}
        counts["2xx"] += self.n_requests + self.n_refused - sum(self.by_class)
        return counts

    def statistics(self) -> dict[str, Any]:
        idle = sum(1 for c in self.conns if c.idle())
        return {
            "connections": {"accepted": self.n_accepted, "active": len(self.conns), "idle": idle},
            "requests": {"total": self.n_requests, "refused": self.n_refused, **self._classes()},
            "draining": self.draining,
        }


def _max_requests() -> int:
    """The request count after which this worker leaves (``worker_max_requests N jitter=M``), 0: never.

    Checked once per tick, so a worker may answer half a second's requests more. Only workers:
    a single process has no master to replace it.
    """
    config = STATE.config
    if config is None or STATE.type != state.WORKER or not config.worker_max_requests[0]:
        return 0
    n, jitter = config.worker_max_requests
    return n + random.randint(0, jitter)


def start(http: HttpConf, sockets: Mapping[tuple[str, int], socket.socket]) -> HttpServer:
    """Serve HTTP on SOCKETS (bound and listening, keyed by ``Listen.key``) in the running loop.

    Every location's handler is made here, once. Registers the graceful-exit hooks.
    """
    loop = asyncio.get_running_loop()
    server = HttpServer(http, loop)
    server.listen(sockets)
    lifecycle.on_begin(server.stop_accepting, order=lifecycle.STOP_ACCEPTING)
    lifecycle.on_wait(server.drain)
    lifecycle.on_final(server.final)
    log.on_reopen(reopen_logs)
    log.error_log.context = exchange.log_context  # ", client: ..., request: ..." in a request
    _live.append(server)
    return server


def reopen_logs() -> None:
    """USR1: reopen the access log of every server in this process."""
    for server in _live:
        if server.access is not None:
            server.access.reopen()


def statistics() -> dict[str, Any]:
    """Counters of the servers in this process (the status page reads them)."""
    out: dict[str, Any] = {}
    for server in _live:
        for key, value in server.statistics().items():
            out[key] = value
    return out
