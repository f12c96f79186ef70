"""The handles ``ngx.timer.at`` and ``ngx.timer.every`` return, and how log lines name a callback.

A handle is a record: its fields (the callback and its arguments, alive, the
loop's handle, an ``every`` timer's interval, due time, unique name and run
flags) are plain attributes that the engine (`pyngx.runtime.timers.Engine`)
alone reads and writes, and ``cancel()`` asks the engine through its public
``Engine.cancel``. The handle knows nothing of scheduling and the engine
touches nothing private of the handle. The classes are slotted and layered so
that an ``at(0)`` timer, the common case, carries four fields.
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
    __slots__ = ("engine", "fn", "args", "alive")
    handle: asyncio.TimerHandle | None = None  # on the loop's timer heap
    interval = 0.0
    unique: str | None = None
    lease: Any = None
    running = False  # an `every` run is in progress
    after = False  # run once more, premature, when the current run ends

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.engine = engine
        self.fn = fn
        self.args = args
        self.alive = True  # counted in pending_count()

    def cancel(self) -> bool:
        """Stop the timer; False when it already ran, was cancelled, or the process is exiting."""
        if not self.alive:
            return False
        self.engine.cancel(self)
        return True

    def __repr__(self) -> str:
        kind = f"every {self.interval:g}s" if self.interval else "at"
        state = "pending" if self.alive else "done"
        return f"<pyngx.Timer {kind} {where(self.fn)} {state}>"


class LaterTimer(Timer):
    """A timer on the loop's timer heap: ``at`` with a delay, and ``every``."""

    __slots__ = ("handle",)

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__(engine, fn, args)
        self.handle = None


class EveryTimer(LaterTimer):
    """An ``every`` timer: the state an `at` timer does not need."""

    __slots__ = ("interval", "unique", "running", "after", "due", "lease")

    def __init__(self, engine: Engine, fn: Callable[..., Any], args: tuple[Any, ...], interval: float,
                 unique: str | None, lease: Any = None) -> None:
        super().__init__(engine, fn, args)
        self.interval = interval
        self.unique = unique
        self.lease = lease  # a cluster job's `clusterlease.Lease`: runs only while it is valid
        self.running = False
        self.after = False
        self.due = 0.0
