"""How a child (or single) process ends, and the hooks its parts register.

Components register themselves when they start inside a process; the process
main (`pyngx.proc.child`, `pyngx.proc.single`) calls `graceful()`, or
`final(False)` for a fast exit, and never needs to know them. Graceful exit, in order:

1. ``state.exiting = True``; every ``on_begin`` callback runs, lowest
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

from pyngx import log
from pyngx.runtime import state

# orders for on_begin
STOP_ACCEPTING = 10
EXIT_WORKER = 15  # exit_worker_by_python: after accepting stops, before timers fire premature
TIMERS = 20
EVENTS = 30
USER = 50

_begin: list[tuple[int, Callable[[], None]]] = []
_wait: list[Callable[[], Awaitable[None]]] = []
_final: list[Callable[[bool], None]] = []
_started = False


def on_begin(fn: Callable[[], None], *, order: int = USER) -> None:
    _begin.append((order, fn))
    _begin.sort(key=lambda item: item[0])


def on_wait(fn: Callable[[], Awaitable[None]]) -> None:
    _wait.append(fn)


def on_final(fn: Callable[[bool], None]) -> None:
    _final.append(fn)


def reset() -> None:
    """Forget every hook (a fresh child after fork, or a test)."""
    global _started
    _begin.clear()
    _wait.clear()
    _final.clear()
    _started = False


def exiting() -> bool:
    return state.STATE.exiting


def begin() -> bool:
    """Start a graceful exit: set the flag and run the on_begin hooks once.

    Returns False when graceful exit had already begun.
    """
    global _started
    if _started:
        return False
    _started = True
    state.STATE.exiting = True
    for _, fn in list(_begin):
        try:
            fn()
        except Exception as exc:  # one broken part must not stop the others
            log.exception("graceful exit hook failed", exc)
    return True


async def graceful(timeout: float) -> None:
    """Run the whole graceful exit; returns when the process may exit."""
    begin()
    waits = [asyncio.ensure_future(fn()) for fn in list(_wait)]
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
    final(True)


def final(graceful: bool) -> None:
    for fn in list(_final):
        try:
            fn(graceful)
        except Exception as exc:
            log.exception("exit hook failed", exc)
    _final.clear()
