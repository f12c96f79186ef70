"""pyngx.ipc.request in one process: the reply resolves it, errors and timeouts raise."""
from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

import pyngx
from pyngx import ipc
from pyngx.errors import IPCError
from pyngx.runtime import core

from test_ipc_api import single  # noqa: F401 - the fixture: this process as a single process


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(asyncio.wait_for(coro, 10))


def test_the_handler_s_reply_resolves_the_request(single: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    got: list[Any] = []

    def double(data: Any) -> None:
        ipc.reply("ignored-name", data * 2)
        ipc.reply("again", data)  # after the first reply: an ordinary alert back

    async def slow(data: Any) -> None:
        await asyncio.sleep(0.01)
        ipc.reply("answer", b"slow " + data)

    ipc.receive({"double": double, "slow": slow, "again": got.append})

    async def main() -> list[Any]:
        me = os.getpid()
        return [await ipc.request(me, "double", "ab"), await ipc.request(me, "double", b"\x00\xff"),
                await ipc.request(me, "slow", b"x", timeout=5), await ipc.request(me, "double", "\udc80")]

    assert run(single, main()) == ["abab", b"\x00\xff\x00\xff", b"slow x", "\udc80\udc80"]
    assert sorted(map(repr, got)) == sorted(map(repr, ["ab", b"\x00\xff", "\udc80"]))
    assert not core.RT.channel.asking  # type: ignore[union-attr]


def test_requests_run_concurrently_and_match_their_replies(single: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    async def echo(data: Any) -> None:
        await asyncio.sleep(0.001 * (10 - int(data)))  # later requests answer first
        ipc.reply("echo", data)

    ipc.receive("echo", echo)

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(ipc.request(os.getpid(), "echo", str(i)) for i in range(10))))

    assert run(single, main()) == [str(i) for i in range(10)]


def test_no_handler_no_reply_and_no_process(single: asyncio.AbstractEventLoop) -> None:  # noqa: F811
    ipc.receive("mute", lambda data: None)

    async def main() -> list[str]:
        out = []
        for pid, name, timeout in ((os.getpid(), "nobody", 5), (os.getpid(), "mute", 0.05), (1, "mute", 5)):
            try:
                await ipc.request(pid, name, "x", timeout=timeout)
            except (IPCError, pyngx.TimeoutError) as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        return out

    assert run(single, main()) == ["IPCError: no handler", "TimeoutError: timeout", "IPCError: no such process"]
    assert issubclass(pyngx.TimeoutError, TimeoutError)
    assert not core.RT.channel.asking  # type: ignore[union-attr]


@pytest.mark.parametrize("args, kwargs, error", [
    (("1", "n", "d"), {}, TypeError), ((0, 1, "d"), {}, TypeError), ((0, "n", 1), {}, TypeError),
    ((0, "", "d"), {}, ValueError), ((0, "n", "d"), {"timeout": 0}, ValueError),
    ((0, "n", "d"), {"timeout": "1"}, ValueError), ((0, "n", "d"), {"timeout": True}, ValueError),
])
def test_argument_checks(single: asyncio.AbstractEventLoop, args: tuple[Any, ...], kwargs: dict[str, Any],  # noqa: F811
                         error: type[Exception]) -> None:
    with pytest.raises(error, match="ipc.request"):
        run(single, ipc.request(*args, **kwargs))


def test_outside_a_child_it_is_refused() -> None:
    with pytest.raises(pyngx.WrongContextError, match="ipc.request"):
        asyncio.run(ipc.request(os.getpid(), "n", "d"))
