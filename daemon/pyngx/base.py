"""ngx.log and its levels, ngx.now/time/update_time, ngx.sleep: usable everywhere."""
from __future__ import annotations

import asyncio

from pyngx import log as _log
from pyngx.runtime import clock

__all__ = ["log", "now", "time", "update_time", "sleep"]

now = clock.now
time = clock.seconds
update_time = clock.update_time


# The log module is callable and is ngx.log (see the end of pyngx/log.py).
log = _log


async def sleep(seconds: float) -> None:
    """Yield to the event loop for SECONDS (0: one loop turn)."""
    if seconds < 0:
        raise ValueError("bad argument #1 to 'sleep' (number expected, got negative)")
    await asyncio.sleep(seconds)
