"""The `run` fixture shared by the pipe and shell unit tests."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop

import support
from pyngx import pipe

Run = Callable[[Callable[[], Awaitable[object]]], object]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """run(async_fn) on a fresh loop of the param's kind; afterwards no child of ours is left."""
    before = set(support.children(os.getpid()))

    def go(fn: Callable[[], Awaitable[object]]) -> object:
        async def body() -> object:
            try:
                return await fn()
            finally:
                pipe.kill_all()
        if request.param == "uvloop":
            return uvloop.run(body())
        return asyncio.run(body())

    yield go
    left = set(support.children(os.getpid())) - before
    assert not left, f"children left behind (zombies included): {left}"
