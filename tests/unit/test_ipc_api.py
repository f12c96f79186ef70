"""pyngx.ipc in one process: argument checks, phases, and alerts to itself."""
from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import support
from pyngx import ipc
from pyngx.errors import IPCError, WrongContextError
from pyngx.runtime import channel, core, phase, state, tree
from pyngx.runtime import loop as loops


@pytest.fixture
def single() -> Iterator[asyncio.AbstractEventLoop]:
    """This test process as a single process with its own channel."""
    table = tree.Tree()
    table.set_generation(1, os.getpid())
    table.add(os.getpid(), state.SINGLE, 0, 1)
    table.mark_ready(os.getpid())
    loop = loops.new_loop()
    with support.as_runtime(loop, state.SINGLE, master_pid=os.getpid(), tree=table) as rt:
        loop.run_until_complete(_setup(rt))
        try:
            yield loop
        finally:
            rt.exits.final(False)
            loop.close()
            asyncio.set_event_loop(None)


async def _setup(rt: Any) -> None:
    rt.channel = channel.start(rt)
    assert channel.current() is rt.channel


def test_send_to_itself_and_reply(single: asyncio.AbstractEventLoop) -> None:
    async def main() -> list[Any]:
        got: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        def ping(data: Any) -> None:
            got.append(("ping", data, ipc.sender, phase.current()))
            ipc.reply("pong", data + data)

        async def pong(data: Any) -> None:
            await asyncio.sleep(0)
            got.append(("pong", data, ipc.sender, phase.current()))
            done.set_result(None)

        ipc.receive({"ping": ping, "pong": pong})
        ipc.send(os.getpid(), "ping", "ab")
        assert got == []  # delivered on a later loop turn, never inside send
        await asyncio.wait_for(done, 2)
        return got

    me = os.getpid()
    assert single.run_until_complete(main()) == [("ping", "ab", me, phase.IPC), ("pong", "abab", me, phase.IPC)]


def test_broadcast_includes_sender_and_removed_handler_drops(single: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[list[Any], dict[str, int]]:
        got: list[Any] = []
        ipc.receive("b", got.append)
        ipc.broadcast("b", b"one")
        await asyncio.sleep(0.01)
        ipc.receive("b", None)
        ipc.broadcast("b", b"two")
        await asyncio.sleep(0.01)
        return got, channel.statistics()

    got, stats = single.run_until_complete(main())
    assert got == [b"one"]
    assert stats["sent"] == 2 and stats["received"] == 2 and stats["dropped"] == 1


def test_handler_errors_are_logged_not_raised(single: asyncio.AbstractEventLoop, capfd: pytest.CaptureFixture[str]) -> None:
    async def main() -> list[Any]:
        got: list[Any] = []

        def bad(data: Any) -> None:
            raise RuntimeError("boom")

        async def bad_async(data: Any) -> None:
            raise RuntimeError("async boom")

        def bad_base(data: Any) -> None:
            raise NotAnException("odd")  # not an Exception: must not stop the reader either

        ipc.receive({"bad": bad, "bad_async": bad_async, "bad_base": bad_base, "ok": got.append})
        for name in ("bad", "bad_async", "bad_base", "ok"):
            ipc.send(os.getpid(), name, b"x")
        await asyncio.sleep(0.02)
        return got

    assert single.run_until_complete(main()) == [b"x"]
    err = capfd.readouterr().err
    assert 'ipc handler "bad" failed' in err and "RuntimeError: boom" in err
    assert "RuntimeError: async boom" in err
    assert 'ipc handler "bad_base" failed' in err and "NotAnException: odd" in err


class NotAnException(BaseException):
    """What a careless handler might raise: not caught by ``except Exception``."""


def test_argument_checks(single: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(TypeError, match="data must be str or bytes, not int"):
        ipc.send(os.getpid(), "n", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be str"):
        ipc.broadcast(b"n", b"")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name must be 1 to"):
        ipc.send(os.getpid(), "", b"")
    with pytest.raises(TypeError, match="pid must be int"):
        ipc.send("1", "n", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler must be callable"):
        ipc.receive({"a": print, "b": 3})  # type: ignore[dict-item]
    assert b"a" not in core.RT.channel.handlers  # type: ignore[union-attr] # a bad table changes nothing
    with pytest.raises(TypeError, match="missing the handler"):
        ipc.receive("a")  # type: ignore[call-arg]
    with pytest.raises(IPCError, match="^no such process$"):
        ipc.send(1, "n", b"")


def test_reply_outside_a_handler(single: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(WrongContextError, match=r"ipc.reply: API disabled .*allowed in an ipc handler"):
        ipc.reply("n", b"")
    assert ipc.sender is None


def test_receive_and_send_refused_in_init_by_python() -> None:
    token = phase.set(phase.INIT)
    try:
        with pytest.raises(WrongContextError, match="ipc.receive: API disabled in the context of init_by_python"):
            ipc.receive("n", print)
        with pytest.raises(WrongContextError, match="ipc.send: API disabled in the context of init_by_python"):
            ipc.send(os.getpid(), "n", b"")
    finally:
        phase.reset(token)


def test_no_channel_outside_a_child() -> None:
    assert channel.current() is None
    with pytest.raises(WrongContextError, match="allowed in a worker"):
        ipc.broadcast("n", b"")
    assert channel.statistics()["sent"] == 0


def test_packets_encode_split_and_flags() -> None:
    small = channel.encode(b"nm", "é", 0)
    assert channel.HEAD.unpack_from(small) == (4, 2, channel.STR) and small.endswith("é".encode())
    big = channel.encode(b"nm", b"\1" * (channel.PACKET + 1), channel.INTERNAL)
    first = channel.HEAD.unpack_from(big)
    assert first == (channel.PACKET + 2, 2, channel.INTERNAL | channel.MORE)
    second = channel.HEAD.unpack_from(big, channel.HEAD.size + first[0])
    assert second == (1, 0, channel.INTERNAL | channel.CONT)


def test_a_process_that_is_not_listening_yet_gets_its_alerts(single: asyncio.AbstractEventLoop) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a child that binds its name late
        code = 1
        try:
            os.close(r)
            time.sleep(0.3)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
                srv.bind(channel.address(os.getppid(), os.getpid()))
                srv.listen()
                srv.settimeout(5)
                conn, _ = srv.accept()
                with conn:
                    want = len(channel.encode(b"late", b"first", 0) + channel.encode(b"late", "second", 0))
                    data = b""
                    while len(data) < want:
                        data += conn.recv(65536)
                os.write(w, data)
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        core.RT.tree.add(pid, state.WORKER, 1, 1)  # type: ignore[union-attr]

        async def main() -> None:
            ipc.send(pid, "late", b"first")  # queued: nobody listens there yet
            ipc.send(pid, "late", "second")
            while channel.statistics()["queued"]:
                await asyncio.sleep(0.02)

        single.run_until_complete(asyncio.wait_for(main(), 10))
        got = os.read(r, 65536)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == channel.encode(b"late", b"first", 0) + channel.encode(b"late", "second", 0)
