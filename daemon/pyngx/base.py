"""ngx.log and its levels, ngx.now/time/update_time, ngx.sleep: usable everywhere."""
from __future__ import annotations

import asyncio
import sys

from pyngx import log as _log
from pyngx.runtime import clock

now = clock.now
time = clock.seconds
update_time = clock.update_time


def log(level: int, *args: object) -> None:
    """ngx.log(level, ...): the arguments concatenated, with the caller's file and line."""
    if not _log.enabled(level):
        return
    if not isinstance(level, int) or not 0 <= level <= _log.DEBUG:
        raise ValueError(f"bad log level: {level!r}")
    frame = sys._getframe(1)
    msg = "".join(a if isinstance(a, str) else ("nil" if a is None else str(a)) for a in args)
    _log.log(level, f"[python] {frame.f_code.co_filename}:{frame.f_lineno}: {msg}")


async def sleep(seconds: float) -> None:
    """Yield to the event loop for SECONDS (0: one loop turn)."""
    if seconds < 0:
        raise ValueError("bad argument #1 to 'sleep' (number expected, got negative)")
    await asyncio.sleep(seconds)
