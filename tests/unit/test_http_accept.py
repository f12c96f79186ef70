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


@pytest.mark.parametrize(("shared", "taken"), [(True, accept.SHARED_BATCH), (False, accept.BATCH)])
def test_a_wake_up_takes_a_small_batch_where_other_workers_accept_too(shared: bool, taken: int) -> None:
    loop = asyncio.new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(accept.BATCH + 4)]
    made: list[Any] = []
    acceptor = accept.Acceptor(loop, listener, lambda: Held(made), lambda: len(made), 1000, shared)
    loop.remove_reader(acceptor.fd)  # wake-ups are driven by hand below
    try:
        acceptor._ready()  # one wake-up
        loop.run_until_complete(_settle())
        assert len(made) == taken
        assert _left(listener) == len(clients) - taken
    finally:
        acceptor.close()
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        for client in clients:
            client.close()
        listener.close()


def test_worker_connections_stop_a_batch() -> None:
    loop = asyncio.new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(6)]
    made: list[Any] = []
    acceptor = accept.Acceptor(loop, listener, lambda: Held(made), lambda: len(made), 3, False)
    loop.remove_reader(acceptor.fd)  # wake-ups are driven by hand below
    try:
        for _ in range(3):
            acceptor._ready()
            loop.run_until_complete(_settle())
        assert len(made) == 3  # the others are closed at once ("worker_connections are not enough")
    finally:
        acceptor.close()
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        for client in clients:
            client.close()
        listener.close()
