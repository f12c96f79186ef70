"""The event loop of a child or single process: uvloop when it is there.

Called after fork, never before (python/asyncio#347): the master runs no loop.
"""
from __future__ import annotations

import asyncio

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
    uvloop = None


def new_loop() -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop
