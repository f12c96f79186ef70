"""The HTTP server of one worker (or single process) on inherited listeners.

Owns accepting on the sockets the master bound, the `Site` its connections
read (live connections, counters, the access log, the deadlines' wheel), the
once-per-tick work (the ``Date`` header, the due deadlines), and graceful exit: stop accepting, finish in-flight requests, answer the
next request of each keep-alive connection with ``Connection: close``, close
connections idle past a short grace. Knows nothing of processes: it registers
lifecycle hooks and the caller decides when the process ends.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.conf.directives import default
from pyngx.conf.model import HttpConf
from pyngx.http import exchange
from pyngx.http.accept import Acceptor
from pyngx.http.accesslog import AccessLog
from pyngx.http.connection import Connection
from pyngx.http.protocol import HttpProtocol
from pyngx.http.replies import SERVER, http_date
from pyngx.http.route import Vhosts, build
from pyngx.http.site import Site
from pyngx.runtime import core, lifecycle, state

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange

TICK = 0.5  # seconds between ticks (Date header, due deadlines)
DRAIN_GRACE = 1.0  # an idle keep-alive connection is closed this long after graceful exit begins



class HttpServer:
    """Serving HTTP in this process: listeners, connections, counters."""

    def __init__(self, http: HttpConf, loop: asyncio.AbstractEventLoop) -> None:
        self.conf = http
        self.loop = loop
        self.vhosts: dict[tuple[str, int], Vhosts] = build(http, core.RT.globals)
        self.listeners: list[Acceptor] = []
        self.access = AccessLog(http.access_log.path, loop) if http.access_log.path else None
        self.site = Site(http, loop, self.access, self._render_status)
        self.tick_handle: asyncio.TimerHandle | None = None
        self.started = time.time()
        self.max_requests = _max_requests()
        self._tick()

    # What the connections share lives in the site; these read it.
    @property
    def conns(self) -> set[Connection]:
        return self.site.conns

    @property
    def draining(self) -> bool:
        return self.site.draining

    @property
    def n_accepted(self) -> int:
        return self.site.n_accepted

    @property
    def n_requests(self) -> int:
        return self.site.n_requests

    # -- lifecycle --
    def listen(self, sockets: Mapping[tuple[str, int], socket.socket]) -> None:
        """Accept on every socket whose address a server listens on."""
        config = core.RT.config
        limit = config.worker_connections if config is not None else default("worker_connections")
        for key, sock in sockets.items():
            vhosts = self.vhosts.get(key)
            if vhosts is None or self.draining:
                continue
            shared = core.RT.worker_count > 1 and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            self.listeners.append(Acceptor(self.loop, sock, lambda v=vhosts: HttpProtocol(self.site, v),
                                           self.site.conns.__len__, limit, shared))

    def stop_accepting(self) -> None:
        """Graceful exit begins: no new connections; keep-alive ones end after their next answer."""
        for acceptor in self.listeners:
            acceptor.close()
        self.listeners.clear()
        self.site.drain(DRAIN_GRACE)
        self.site.expire_due(self.loop.time())

    async def drain(self) -> None:
        """Wait until every connection is closed."""
        if not self.site.conns:
            return
        self.site.all_gone = gone = self.loop.create_future()
        await gone

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
        rt = core.RT
        if isinstance(rt, core.Runtime) and self in rt.servers:
            rt.servers.remove(self)

    def _render_status(self, ex: Exchange) -> tuple[bytes, str]:
        """The status page's body and content type for EX (`Site.render_status`)."""
        from pyngx.http import status  # only where pyngx_status is served: json and metrics are not a start's

        return status.render(self, ex)

    # -- once per tick --
    def _tick(self) -> None:
        site = self.site
        site.clock = clock = self.loop.time()
        site.date_server = f"Server: {SERVER}\r\nDate: {http_date(time.time())}\r\n".encode("latin-1")
        site.expire_due(clock)
        site.shrink_idle(clock)
        self.publish()
        if self.max_requests and site.n_requests >= self.max_requests and not site.draining:
            self.max_requests = 0  # once
            log.notice(f"worker process reached worker_max_requests ({self.n_requests} requests), "
                       "exiting gracefully")
            os.kill(os.getpid(), signal.SIGQUIT)  # as process.signal_graceful_exit(): the master replaces it
        self.tick_handle = self.loop.call_later(TICK, self._tick)

    def publish(self) -> None:
        """Copy the counters into this process's row of the process table (status totals)."""
        table = core.RT.tree
        if table is not None:
            table.publish_http(self.counter_row())

    def counter_row(self) -> list[int]:
        """The counters in ``tree.HTTP_FIELDS`` order."""
        site = self.site
        classes = self._classes()
        return [site.n_accepted, site.n_requests, site.n_refused, *(classes[f"{i}xx"] for i in range(1, 6)),
                len(site.conns)]

    def _classes(self) -> dict[str, int]:
        site = self.site
        counts = {f"{i}xx": site.by_class[i] for i in range(1, 6)}
        counts["2xx"] += site.n_requests + site.n_refused - sum(site.by_class)
        return counts

    def statistics(self) -> dict[str, Any]:
        site = self.site
        idle = sum(1 for c in site.conns if c.idle())
        return {
            "connections": {"accepted": site.n_accepted, "active": len(site.conns), "idle": idle},
            "requests": {"total": site.n_requests, "refused": site.n_refused, **self._classes()},
            "draining": site.draining,
        }


def _max_requests() -> int:
    """The request count after which this worker leaves (``worker_max_requests N jitter=M``), 0: never.

    Checked once per tick, so a worker may answer half a second's requests more. Only workers:
    a single process has no master to replace it.
    """
    config = core.RT.config
    if config is None or core.RT.kind != state.WORKER or not config.worker_max_requests[0]:
        return 0
    n, jitter = config.worker_max_requests
    import random  # only with worker_max_requests

    return n + random.randint(0, jitter)


def start(rt: core.Runtime, http: HttpConf, sockets: Mapping[tuple[str, int], socket.socket]) -> HttpServer:
    """Serve HTTP on SOCKETS (bound and listening, keyed by ``Listen.key``) on runtime RT's loop.

    Every location's handler is made here, once. The server joins ``rt.servers``
    and RT's exit hooks stop it.
    """
    server = HttpServer(http, rt.loop)
    server.listen(sockets)
    rt.exits.on_begin(server.stop_accepting, order=lifecycle.STOP_ACCEPTING)
    rt.exits.on_wait(server.drain)
    rt.exits.on_final(server.final)
    log.on_reopen(reopen_logs)
    log.error_log.context = exchange.log_context  # ", client: ..., request: ..." in a request
    rt.servers.append(server)
    return server


def reopen_logs() -> None:
    """USR1: reopen the access log of every server in this process."""
    for server in core.RT.servers:
        if server.access is not None:
            server.access.reopen()


def statistics() -> dict[str, Any]:
    """Counters of the servers in this process (the status page reads them)."""
    out: dict[str, Any] = {}
    for server in core.RT.servers:
        for key, value in server.statistics().items():
            out[key] = value
    return out
