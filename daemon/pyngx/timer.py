"""ngx.timer: at / every / running_count / pending_count, and the Timer object.

A thin facade after lua-nginx-module's ``ngx.timer.*``: check the phase and
the arguments, then delegate to `pyngx.runtime.timers`, which owns the
behaviour (limits, no-overlap ``every``, ``unique=``, the exit flush).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from pyngx.errors import WrongContextError
from pyngx.runtime import core as _core
from pyngx.runtime import phase
from pyngx.runtime import timers as _timers
from pyngx.runtime.timerhandle import Timer as Timer

Timer.__module__ = "pyngx.timer"

def _engine(api: str) -> _timers.Engine:
    """This process's timer engine. Raises WrongContextError where timers cannot run."""
    engine = _core.RT.timers
    if engine is None:
        # no event loop here: the master (init_by_python; OpenResty disables
        # ngx.timer.* in init_by_lua too) or a plain Python program
        raise WrongContextError(f"{api}: API disabled in the context of {phase.current() or 'this process'}")
    return engine


def at(delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
    """Run ``callback(premature, *args)`` once, DELAY seconds from now (0: next loop turn).

    Raises ValueError (delay < 0), TypeError, TooManyTimersError, ProcessExitingError.
    """
    engine = _core.RT.timers
    if engine is None or not delay >= 0 or not callable(callback):  # one test on the hot path
        _refuse_at(engine, delay, callback)
    return engine.at(delay, callback, args)


def _refuse_at(engine: _timers.Engine | None, delay: Any, callback: Any) -> NoReturn:
    if not delay >= 0:  # also refuses NaN
        raise ValueError(f"bad argument #1 to 'at' (delay must not be negative, got {delay!r})")
    if not callable(callback):
        raise TypeError(f"bad argument #2 to 'at' (callable expected, got {type(callback).__name__})")
    _engine("ngx.timer.at")
    raise AssertionError("unreachable")  # pragma: no cover


def every(interval: float, callback: Callable[..., Any], *args: Any, unique: str | None = None,
          scope: str = "node") -> Timer:
    """Run ``callback(premature, *args)`` every INTERVAL seconds, never overlapping itself.

    With ``unique="NAME"`` only one process of the whole tree runs it at a time;
    with ``scope="cluster"`` too, only one process of the whole cluster
    (``python_cluster``: a lease in Redis, see docs/cluster.md).
    Raises ValueError (interval <= 0, a bad scope), TypeError, TooManyTimersError,
    ProcessExitingError, Error (scope="cluster" without python_cluster).
    """
    if not interval > 0:
        raise ValueError(f"bad argument #1 to 'every' (interval must be > 0, got {interval!r})")
    if not callable(callback):
        raise TypeError(f"bad argument #2 to 'every' (callable expected, got {type(callback).__name__})")
    if unique is not None and (not isinstance(unique, str) or not unique):
        raise ValueError("bad argument 'unique' to 'every' (a non-empty str expected)")
    engine = _engine("ngx.timer.every")
    if scope == "node":
        return engine.every(interval, callback, args, unique)
    if scope != "cluster":
        raise ValueError(f"bad argument 'scope' to 'every' (\"node\" or \"cluster\" expected, got {scope!r})")
    if unique is None:
        raise ValueError("bad argument 'scope' to 'every' (scope=\"cluster\" needs unique=NAME)")
    from pyngx.runtime import cluster  # only here: without python_cluster nothing of it is loaded

    return engine.every(interval, callback, args, unique, cluster.current().lease(unique))


def fencing_token(unique: str) -> int | None:
    """The fencing token of cluster job UNIQUE while this process holds its lease, else None.

    Tokens only grow: a store that remembers the largest token it saw can
    refuse a write from a holder that lost the lease meanwhile.
    """
    from pyngx.runtime import cluster

    found = cluster.member()
    lease = found.leases.get(unique) if found is not None else None
    return lease.token if lease is not None and lease.valid() else None


def running_count() -> int:
    """Callbacks started and not finished (those awaiting included)."""
    engine = _core.RT.timers
    return 0 if engine is None else engine.running


def pending_count() -> int:
    """Timers waiting to run (an ``every`` timer counts until it is cancelled)."""
    engine = _core.RT.timers
    return 0 if engine is None else engine.pending


__all__ = ["Timer", "at", "every", "fencing_token", "running_count", "pending_count"]
