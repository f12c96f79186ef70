"""The handles ``ngx.timer.at`` and ``ngx.timer.every`` return, and how log lines name a callback.

Owns the per-timer state the engine reads and writes (alive, the loop's
handle, an ``every`` timer's interval, unique name and run flags) and
``cancel()``, which hands the timer back to its engine. The classes are
slotted and layered so that an ``at(0)`` timer, the common case, carries four
fields. Knows nothing of scheduling (`pyngx.runtime.timers` owns that).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyngx.runtime.timers import Engine


def where(fn: Callable[..., Any]) -> str:
    """``name (file:line)`` of a callback, for log lines."""
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "func", None), "__code__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if code is None:
        return name
    return f"{name} ({code.co_filename}:{code.co_firstlineno})"


class Timer:
    """A timer made by ``ngx.timer.at`` or ``ngx.timer.every``."""

    # An `at(0)` timer sets only these four; the class attributes below are the
    # answers for it, and `LaterTimer` and `EveryTimer` make them per-instance slots.
    __slots__ = ("_engine", "_fn", "_args", "_alive")
    _handle: asyncio.TimerHandle | None = None  # on the loop's timer heap
    _interval = 0.0
    _unique: str | None = None
    _lease: Any = None
    _running = False  # an `every` run is in progress
    _after = False  # run once more, premature, when the current run ends

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._engine = engine
        self._fn = fn
        self._args = args
        self._alive = True  # counted in pending_count()

    def cancel(self) -> bool:
        """Stop the timer; False when it already ran, was cancelled, or the process is exiting."""
        if not self._alive:
            return False
        self._engine._cancel(self)
        return True

    def __repr__(self) -> str:
        kind = f"every {self._interval:g}s" if self._interval else "at"
        state = "pending" if self._alive else "done"
        return f"<pyngx.Timer {kind} {where(self._fn)} {state}>"


class LaterTimer(Timer):
    """A timer on the loop's timer heap: ``at`` with a delay, and ``every``."""

    __slots__ = ("_handle",)

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__(engine, fn, args)
        self._handle = None


class EveryTimer(LaterTimer):
    """An ``every`` timer: the state an `at` timer does not need."""

    __slots__ = ("_interval", "_unique", "_running", "_after", "_due", "_lease")

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...], interval: float,
                 unique: str | None, lease: Any = None) -> None:
        super().__init__(engine, fn, args)
        self._interval = interval
        self._unique = unique
        self._lease = lease  # a cluster job's `clusterlease.Lease`: runs only while it is valid
        self._running = False
        self._after = False
        self._due = 0.0
