"""How many connections one wake-up of the accept loop takes (pyngx.http.accept)."""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pyngx.http import accept


class Held(asyncio.Protocol):
    def __init__(self, made: list[Any]) -> None:
        self.made = made

    def connection_made(self, transport: Any) -> None:
        self.made.append(transport)


async def _settle() -> None:
    """Let the connections taken be set up (their tasks end)."""
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))


def _left(sock: socket.socket) -> int:
    """Accept what is still queued on SOCK; how many."""
    sock.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


class Burst:
    """A listening socket with N client connections queued, and an Acceptor on it (wake-ups by hand)."""

    def __init__(self, n: int, limit: int, shared: bool) -> None:
        self.loop = asyncio.new_event_loop()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.clients = [socket.create_connection(self.listener.getsockname()) for _ in range(n)]
        self.made: list[Any] = []
        self.acceptor = accept.Acceptor(self.loop, self.listener, lambda: Held(self.made), lambda: len(self.made),
                                        limit, shared)
        self.loop.remove_reader(self.acceptor.fd)

    def wake(self) -> None:
        """One wake-up of the accept loop, and the connections it took set up."""
        self.acceptor._ready()
        self.loop.run_until_complete(_settle())

    def close(self) -> None:
        self.acceptor.close()
        for transport in self.made:
            transport.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()
        for client in self.clients:
            client.close()
        self.listener.close()


@pytest.mark.parametrize(("shared", "taken"), [(True, accept.SHARED_BATCH), (False, accept.BATCH)])
def test_a_wake_up_takes_a_small_batch_where_other_workers_accept_too(shared: bool, taken: int) -> None:
    burst = Burst(accept.BATCH + 4, 1000, shared)
    try:
        burst.wake()
        assert len(burst.made) == taken
        assert _left(burst.listener) == len(burst.clients) - taken
    finally:
        burst.close()


def test_worker_connections_stop_a_batch() -> None:
    burst = Burst(6, 3, False)
    try:
        for _ in range(3):
            burst.wake()
        assert len(burst.made) == 3  # the others are closed at once ("worker_connections are not enough")
    finally:
        burst.close()
