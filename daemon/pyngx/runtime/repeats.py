"""Failures of callbacks that repeat: logged once per interval, then counted.

A timer callback that raises every 10 ms would write one traceback each (51 KB/s,
4 GB a day). The first failure of a kind is logged with its traceback at once;
the same failure again within ``INTERVAL`` is only counted, and when the interval
ends (or the process exits) one line says ``... repeated N times``. The next one
after that is logged in full again. "The same failure" is the same message, the
same exception type and the same traceback path (files and lines); the text of
the exception may differ (it often holds a changing value), so the count line
quotes the last one.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pyngx import log
from pyngx.runtime import lifecycle

INTERVAL = 10.0  # seconds during which a repeated failure is only counted
MAX_KINDS = 256  # distinct failures remembered at once (more: the oldest are reported early)

Key = tuple[str, type, tuple[tuple[str, int], ...]]


class _Seen:
    __slots__ = ("first", "count", "last", "level", "handle")

    def __init__(self, now: float, level: int) -> None:
        self.first = now
        self.count = 0
        self.last = ""
        self.level = level
        self.handle: asyncio.TimerHandle | None = None


_seen: dict[Key, _Seen] = {}
_hooked_pid = 0


def exception(msg: str, exc: BaseException, level: int = log.ERR) -> None:
    """Log MSG with EXC's traceback, unless the same failure was logged less than INTERVAL ago."""
    key: Key = (msg, type(exc), _path(exc))
    now = time.monotonic()
    seen = _seen.get(key)
    if seen is not None:
        if now - seen.first < INTERVAL:
            seen.count += 1
            seen.last = _text(exc)
            if seen.handle is None:
                seen.handle = _later(seen.first + INTERVAL - now, key)
            return
        report(key)
    if len(_seen) >= MAX_KINDS:
        report(next(iter(_seen)))
    _seen[key] = _Seen(now, level)
    log.exception(msg, exc, level)


def report(key: Key) -> None:
    """Write the count of KEY's repeats (if any) and forget it."""
    seen = _seen.pop(key, None)
    if seen is None:
        return
    if seen.handle is not None:
        seen.handle.cancel()
    if seen.count:
        msg, kind, _ = key
        log.log(seen.level, f"{msg}: {kind.__name__}: {seen.last} (repeated {seen.count} times "
                            f"in {min(time.monotonic() - seen.first, INTERVAL):.1f}s)")


def report_all(graceful: bool = True) -> None:
    """Write every pending count (the process is exiting)."""
    for key in list(_seen):
        report(key)


def forget() -> None:
    """Drop what is remembered, reporting nothing (a test starting afresh)."""
    for seen in _seen.values():
        if seen.handle is not None:
            seen.handle.cancel()
    _seen.clear()


def _later(delay: float, key: Key) -> asyncio.TimerHandle | None:
    """Report KEY after DELAY on this process's loop; at exit at the latest."""
    global _hooked_pid
    if _hooked_pid != os.getpid():  # hooks are per process (reset after fork)
        _hooked_pid = os.getpid()
        lifecycle.on_final(report_all)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None  # reported with the next failure or at exit
    return loop.call_later(max(0.0, delay), report, key)


def _path(exc: BaseException) -> tuple[tuple[str, int], ...]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(out)


def _text(exc: Any) -> str:
    try:
        return str(exc)[:200]
    except Exception:  # noqa: BLE001 - a broken __str__ is the user's
        return "?"
