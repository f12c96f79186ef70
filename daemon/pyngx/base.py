"""ngx.log and its levels, ngx.now/time/update_time, ngx.sleep, ngx.run_worker_thread: usable everywhere."""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from pyngx import log as _log
from pyngx.errors import WrongContextError
from pyngx.runtime import clock, core, phase, threads

__all__ = ["log", "now", "time", "update_time", "sleep", "run_worker_thread"]

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


async def run_worker_thread(pool: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run FN(*ARGS, **KWARGS) in a thread of the thread pool POOL and return its result.

    After OpenResty's ``ngx.run_worker_thread``, with a function instead of a module
    and function name. FN's exception is raised here. Raises pyngx.errors.Error for an
    unknown pool (``thread_pool "x" not found``) or a full queue.
    """
    phase.forbid(phase.INIT, api="ngx.run_worker_thread")  # no thread may exist before the fork
    if not isinstance(pool, str):
        raise TypeError("bad argument #1 to 'run_worker_thread' (thread pool name expected)")
    if not callable(fn):
        raise TypeError(f"bad argument #2 to 'run_worker_thread' (function expected, got {type(fn).__name__})")
    if inspect.iscoroutinefunction(fn):
        raise TypeError("bad argument #2 to 'run_worker_thread' (a plain function is expected: an async "
                        "function would only make a coroutine in the thread; await it directly instead)")
    rt = core.RT
    if not isinstance(rt, core.Runtime):  # the master, the signaller, a plain program: no pools here
        raise WrongContextError("ngx.run_worker_thread: API disabled in the context of this process")
    return await threads.run(rt, pool, fn, args, kwargs)
