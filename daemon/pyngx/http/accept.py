"""Accepting connections on one inherited listening socket, fairly between workers.

Owns the accept loop. Every worker watches the same listening socket; each
takes a few connections per wake-up (``SHARED_BATCH``, close to nginx's
``multi_accept off``), so a burst
of connections — wrk opening 50 at once — is shared between the workers
instead of landing on whichever accepted first (libuv's accept loop, under
``loop.create_server``, takes every pending connection at once). A socket no
other worker accepts on (one worker, or a ``reuseport`` socket of its own)
has no one to share with: there a wake-up takes up to ``BATCH``, so a burst of
a thousand connections does not overflow the listen backlog while the loop
serves the ones already open. Also enforces ``worker_connections`` and backs
off when out of descriptors.
"""
from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from pyngx import log

BATCH = 16  # connections taken per wake-up on a socket this worker does not share
SHARED_BATCH = 4  # the same on a socket other workers accept on too
BACKOFF = 0.5  # seconds without accepting after EMFILE/ENFILE (nginx: accept_mutex_delay)
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    """Accepts on a duplicate of SOCK (closing it leaves the master's socket open)."""

    __slots__ = ("loop", "sock", "fd", "factory", "count", "limit", "batch", "paused", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any],
                 count: Callable[[], int], limit: int, shared: bool = True) -> None:
        self.loop = loop
        self.sock = sock.dup()
        self.sock.setblocking(False)
        self.fd = self.sock.fileno()
        self.factory = factory
        self.count = count
        self.limit = limit
        self.batch = SHARED_BATCH if shared else BATCH
        self.paused = False
        self.closed = False
        loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        for taken in range(self.batch):
            if not self._accept_one(taken) or self.paused or self.closed:
                return

    def _accept_one(self, taken: int) -> bool:
        """Accept one connection (TAKEN already in this wake-up, not counted yet); False when
        there was none, or it could not be served."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False  # another worker took it
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                log.alert(f"accept() failed ({exc.errno}: {exc.strerror}), not accepting for {BACKOFF:g}s")
                self._pause(BACKOFF)
            else:
                log.error(f"accept() failed ({exc.errno}: {exc.strerror})")
            return False
        if self.count() + taken >= self.limit:
            log.alert(f"{self.limit} worker_connections are not enough")
            conn.close()
            return False
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a unix socket passed by systemd)
        task = self.loop.create_task(self.loop.connect_accepted_socket(self.factory, conn))
        task.add_done_callback(lambda t, c=conn: _opened(t, c))
        return True

    def _pause(self, delay: float) -> None:
        if self.paused or self.closed:
            return
        self.paused = True
        self.loop.remove_reader(self.fd)
        self.loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if not self.closed:
            self.loop.add_reader(self.fd, self._ready)

    def close(self) -> None:
        """Stop accepting and close our descriptor."""
        if self.closed:
            return
        self.closed = True
        if not self.paused:
            self.loop.remove_reader(self.fd)
        self.sock.close()


def _opened(task: asyncio.Task[Any], conn: socket.socket) -> None:
    if task.cancelled() or task.exception() is not None:
        conn.close()  # reset before it could be set up: nothing to answer
