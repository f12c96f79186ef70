"""Fixtures the unit tests of several modules share (the daemon fixture is in tests/conftest.py)."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop

import support
from pyngx import pipe
from pyngx.runtime import repeats
from support import Run


@pytest.fixture(autouse=True)
def fresh_repeats() -> None:
    """Each test sees its callbacks' failures logged in full (not counted as repeats of another's)."""
    repeats.forget()


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    """Pipe and shell tests: run(async_fn) on a fresh loop of the param's kind (uvloop, then
    asyncio); afterwards no child of ours is left. A module's own ``run`` fixture overrides it."""
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
