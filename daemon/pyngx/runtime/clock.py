"""ngx.now / ngx.time / ngx.update_time.

OpenResty caches the time once per event-loop turn; reading the clock costs
a Python process less than keeping a cache fresh, so ``now()`` reads it and
rounds to milliseconds as ``ngx.now()`` does.
"""
from __future__ import annotations

import time

_time = time.time


def now() -> float:
    """Seconds since the epoch, with millisecond precision."""
    return int(_time() * 1000) / 1000


def seconds() -> int:
    """Whole seconds since the epoch (ngx.time)."""
    return int(_time())


def update_time() -> None:
    """Kept for OpenResty compatibility: the clock here is never stale."""
