"""How a child (or single) process ends, and the hooks its parts register.

Each `core.Process` record owns one `Exits`; components register their hooks
there when they start inside a process (through the record they were given,
or the module functions below, which use the current record). The process
main (`pyngx.proc.child`) calls ``graceful()``, or ``final(False)`` for a
fast exit, and never needs to know them. Graceful exit, in order:

1. ``record.exiting = True``; every ``on_begin`` callback runs, lowest
   ``order`` first (HTTP stops accepting, timers fire premature, events
   post ``stopping``);
2. every ``on_wait`` coroutine function is awaited together, bounded by
   ``worker_shutdown_timeout``; what is still running then is cancelled and
   logged (in-flight requests, running timer callbacks);
3. every ``on_final`` callback runs with ``graceful=True`` (pipes kill their
   process groups, IPC closes its socket).

Fast exit runs only step 3, with ``graceful=False``.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pyngx import log

# orders for on_begin
STOP_ACCEPTING = 10
EXIT_WORKER = 15  # exit_worker_by_python: after accepting stops, before timers fire premature
TIMERS = 20
EVENTS = 30
USER = 50


class Exits:
    """The exit hooks of one process (its `core.Process` record owns one)."""

    __slots__ = ("record", "begins", "waits", "finals", "started")

    def __init__(self, record: Any) -> None:
        self.record = record  # whose ``exiting`` flag begin() sets
        self.begins: list[tuple[int, Callable[[], None]]] = []
        self.waits: list[Callable[[], Awaitable[None]]] = []
        self.finals: list[Callable[[bool], None]] = []
        self.started = False

    def on_begin(self, fn: Callable[[], None], *, order: int = USER) -> None:
        self.begins.append((order, fn))
        self.begins.sort(key=lambda item: item[0])

    def on_wait(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.waits.append(fn)

    def on_final(self, fn: Callable[[bool], None]) -> None:
        self.finals.append(fn)

    def begin(self) -> bool:
        """Start a graceful exit: set the flag and run the on_begin hooks once.

        Returns False when graceful exit had already begun.
        """
        if self.started:
            return False
        self.started = True
        self.record.exiting = True
        for _, fn in list(self.begins):
            try:
                fn()
            except Exception as exc:  # one broken part must not stop the others
                log.exception("graceful exit hook failed", exc)
        return True

    async def graceful(self, timeout: float) -> None:
        """Run the whole graceful exit; returns when the process may exit."""
        self.begin()
        waits = [asyncio.ensure_future(fn()) for fn in list(self.waits)]
        if waits:
            done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warn(f"worker_shutdown_timeout ({timeout:g}s) expired, cancelled {len(pending)} pending waits")
                await asyncio.wait(pending, timeout=1.0)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.exception("graceful exit wait failed", task.exception())  # type: ignore[arg-type]
        self.final(True)

    def final(self, graceful: bool) -> None:
        for fn in list(self.finals):
            try:
                fn(graceful)
            except Exception as exc:
                log.exception("exit hook failed", exc)
        self.finals.clear()


# -- the current process's hooks (parts that start on demand register through these) --

from pyngx.runtime import core  # noqa: E402 - core builds its records with Exits, defined above

def on_begin(fn: Callable[[], None], *, order: int = USER) -> None:
    core.RT.exits.on_begin(fn, order=order)


def on_wait(fn: Callable[[], Awaitable[None]]) -> None:
    core.RT.exits.on_wait(fn)


def on_final(fn: Callable[[bool], None]) -> None:
    core.RT.exits.on_final(fn)


def exiting() -> bool:
    return core.RT.exiting


def begin() -> bool:
    return core.RT.exits.begin()


async def graceful(timeout: float) -> None:
    await core.RT.exits.graceful(timeout)


def final(graceful: bool) -> None:
    core.RT.exits.final(graceful)
