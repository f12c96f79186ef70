"""The timers of one process: scheduling, limits, ``every``, ``unique=``, exit.

Owns when a callback runs and how many run at once. A due timer goes through
one ready queue that a single loop callback drains, so ``at(0)`` costs a
deque append and a chain of ``at(0)`` timers runs within one loop turn, as in
nginx's timer tree; later timers sit on the loop's own timer heap
(``call_at``). Knows nothing of the public API (`pyngx.timer` is the facade)
nor of HTTP; it meets the process only through `lifecycle` hooks.

Rules that differ from OpenResty, on purpose:

- a timer that falls due while ``max_running`` callbacks run waits for a free
  slot instead of being dropped, and one warning is logged per burst;
- an ``every`` run that falls due while the previous run is still going is
  skipped: runs never overlap, and due times stay on the fixed grid
  ``start + k * interval``;
- ``unique="NAME"`` runs an ``every`` job in one process of the whole tree:
  the holder keeps a `treelock` (a POSIX byte-range lock, freed by the kernel
  when the holder dies, on a file the master opened before forking). The
  others try the lock at each of their due times.
"""
from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable
from typing import Any

from pyngx import log
from pyngx.errors import ProcessExitingError, TooManyTimersError
from pyngx.runtime import lifecycle, phase, repeats, treelock
from pyngx.runtime.timerhandle import EveryTimer, LaterTimer, Timer, where

_Context = contextvars.Context
_new = object.__new__
_set_phase = phase.set
_TIMER = phase.TIMER

# Extra callbacks one drain pass may run beyond those queued when it began:
# enough for a chain of at(0) timers to run in one turn, bounded so that such
# a chain cannot starve sockets.
_DRAIN_EXTRA = 1024
# How long cancelled callbacks get to run their ``finally`` blocks at exit.
_CANCEL_GRACE = 0.5


class Engine:
    """Every timer of one process, on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_pending: int, max_running: int) -> None:
        self.loop = loop
        self.max_pending = max_pending
        self.max_running = max_running
        # Counters read by pending_count() / running_count()
        self.pending = 0
        self.running = 0
        self.closing = False  # graceful exit began: no new timers
        self._cap = max_pending  # -1 once closing: one test on the hot path refuses both
        self._stopped = False  # the exit's time is up: no callback starts any more
        # Queues (a cancelled timer stays in them, skipped when it comes out)
        self._ready: deque[Timer] = deque()  # `at` timers due now, in order
        self._drain_handle: asyncio.Handle | None = None
        self._waitq: deque[Timer] = deque()  # due, over max_running
        self._scheduled: set[Timer] = set()  # on the loop's timer heap (delay > 0, every)
        self._tasks: dict[asyncio.Future[Any], Timer] = {}  # async callbacks running
        self._held: dict[str, Timer] = {}  # unique names this process holds
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._batch: list[tuple[Timer, bool]] = []  # the last runs at exit, about to start
        self._burst = 0  # timers that waited for a slot in the current burst
        # Each run gets a copy of this context: the phase is TIMER, and nothing of
        # the code that created the timer (its request, say) leaks into the callback.
        self._context = _Context()
        self._context.run(_set_phase, _TIMER)
        # Statistics
        self.fired = 0
        self.failed = 0
        self.waited = 0
        self.skipped = 0
        self.premature = 0
        self.cancelled_at_exit = 0

    # -- creating and cancelling --

    def at(self, delay: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> Timer:
        """Raises ProcessExitingError or TooManyTimersError; nothing changes then."""
        if self.pending >= self._cap:
            raise ProcessExitingError() if self.closing else TooManyTimersError()
        if delay == 0:
            # Timer.__init__ spelled out: at(0) is the hot path, and a frame costs more
            t = _new(Timer)
            t.engine = self
            t.fn = fn
            t.args = args
            t.alive = True
            self.pending += 1
            self._ready.append(t)
            if self._drain_handle is None:
                self._drain_handle = self.loop.call_soon(self._drain)
            return t
        later = LaterTimer(self, fn, args)
        self.pending += 1
        self._scheduled.add(later)
        later.handle = self.loop.call_at(self.loop.time() + delay, self._expire, later)
        return later

    def every(self, interval: float, fn: Callable[..., Any], args: tuple[Any, ...], unique: str | None,
              lease: Any = None) -> Timer:
        """Raises ProcessExitingError or TooManyTimersError; nothing changes then.

        LEASE (a cluster job's) is competed for at once when this process takes
        the job's tree lock, so the first due time can already run.
        """
        if self.pending >= self._cap:
            raise ProcessExitingError() if self.closing else TooManyTimersError()
        t = EveryTimer(self, fn, args, float(interval), unique, lease)
        self.pending += 1
        self._scheduled.add(t)
        t.due = self.loop.time() + interval
        t.handle = self.loop.call_at(t.due, self._on_due, t)
        if lease is not None:
            self._take(t)
        return t

    def cancel(self, t: Timer) -> None:
        """Cancel live timer T (`Timer.cancel` calls this)."""
        t.alive = False
        self.pending -= 1
        self._scheduled.discard(t)
        if t.handle is not None:
            t.handle.cancel()
            t.handle = None
        if t.unique is not None and not t.running:
            self._release(t)
        self._check_idle()

    # -- falling due --

    def _drain(self) -> None:
        """Run the ready `at` timers (and those made meanwhile, up to a bound).

        The hot path of ``at(0)``: `_run` inlined for plain callbacks.
        """
        self._drain_handle = None
        ready = self._ready
        popleft = ready.popleft
        fresh = self._context.copy
        budget = len(ready) + _DRAIN_EXTRA
        fired = 0
        # One running slot for the plain callback running now (running_count()
        # counts it): taken once per pass, not once per callback.
        self.running += 1
        try:
            while ready and budget:
                budget -= 1
                t = popleft()
                if not t.alive:
                    continue
                if self.running > self.max_running:  # one of them is the slot above
                    self._wait_for_slot(t)
                    continue
                t.alive = False
                self.pending -= 1
                fired += 1
                ctx = fresh()
                try:
                    result = ctx.run(t.fn, False, *t.args)
                except Exception as exc:  # noqa: BLE001 - the user's callback: log it, carry on
                    self._report(t, exc, skip_frame=True)
                    continue
                except phase.Exit:  # ngx.exit() ends a callback
                    continue
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - not an Exception, still the callback's
                    self._report(t, exc, skip_frame=True)
                    continue
                if result is not None and hasattr(result, "__await__"):
                    self._spawn(t, result, ctx)
                    self.running += 1  # the task keeps the slot: take another
        finally:
            self.running -= 1
        self.fired += fired
        if ready and self._drain_handle is None:
            self._drain_handle = self.loop.call_soon(self._drain)
        if self._waitq and self.running < self.max_running:
            self._next_waiting()
        self._check_idle()

    def _expire(self, t: Timer) -> None:
        t.handle = None
        self._scheduled.discard(t)
        if t.alive:
            self._start(t)

    def _on_due(self, t: Timer) -> None:
        """An `every` timer's due time: plan the next one on the grid, then run or skip."""
        assert isinstance(t, EveryTimer)
        now = self.loop.time()
        interval = t.interval
        nxt = t.due + interval
        if nxt <= now:  # the loop was late: keep the grid, skip the missed times
            nxt += ((now - nxt) // interval + 1) * interval
        t.due = nxt
        t.handle = self.loop.call_at(nxt, self._on_due, t)
        if t.running:  # running, or due and waiting for a slot
            self.skipped += 1
            return
        if t.unique is not None and not self._take(t):
            return
        t.running = True  # from now until the run ends, waiting for a slot included
        self._start(t)

    def _start(self, t: Timer) -> None:
        if self.running >= self.max_running:
            self._wait_for_slot(t)
        else:
            self._run(t, False)

    def _wait_for_slot(self, t: Timer) -> None:
        self._waitq.append(t)
        self.waited += 1
        if not self._burst:
            log.warn(f"python_max_running_timers ({self.max_running}) are not enough: "
                     "expired timers wait for a free slot")
        self._burst += 1

    def _next_waiting(self) -> None:
        """Running slots are free: start the timers that have waited longest."""
        waitq = self._waitq
        while waitq and self.running < self.max_running:
            t = waitq.popleft()
            if t.alive:
                self._run(t, False)
            elif t.interval:  # an `every` cancelled while it waited
                self._finish_every(t)
        if not waitq and self._burst:
            log.info(f"{self._burst} expired timers waited for a free running slot")
            self._burst = 0

    # -- running a callback --

    def _run(self, t: Timer, premature: bool) -> None:
        self.running += 1
        self.fired += 1
        if t.interval:
            t.running = True
        else:
            t.alive = False
            self.pending -= 1
        ctx = self._context.copy()
        try:
            result = ctx.run(t.fn, premature, *t.args)
        except Exception as exc:  # noqa: BLE001 - the user's callback: log it, carry on
            self._report(t, exc, skip_frame=True)
            self._finish(t)
            return
        except phase.Exit:  # ngx.exit() ends a callback, as in OpenResty's timer context
            self._finish(t)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - not an Exception, still the callback's
            self._report(t, exc, skip_frame=True)
            self._finish(t)
            return
        if result is not None and hasattr(result, "__await__"):
            self._spawn(t, result, ctx)  # an `async def` callback (or one returning an awaitable)
        else:
            self._finish(t)

    def _spawn(self, t: Timer, awaitable: Any, ctx: contextvars.Context) -> None:
        """Run an async callback's coroutine as a task in CTX; it holds its slot until done."""
        if asyncio.iscoroutine(awaitable):
            task: asyncio.Future[Any] = self.loop.create_task(awaitable, context=ctx)
        else:
            task = asyncio.ensure_future(awaitable, loop=self.loop)
        self._tasks[task] = t
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        t = self._tasks.pop(task)
        if task.cancelled():
            if not self.closing:
                log.info(f"timer callback {where(t.fn)} was cancelled")
        else:
            exc = task.exception()
            if exc is not None and not isinstance(exc, phase.Exit):
                self._report(t, exc, skip_frame=False)
        self._finish(t)

    def _report(self, t: Timer, exc: BaseException, *, skip_frame: bool) -> None:
        self.failed += 1
        tb = exc.__traceback__
        if skip_frame and tb is not None:
            # start the traceback at the user's code; nothing when the call itself
            # failed (a callback that takes other arguments)
            exc = exc.with_traceback(tb.tb_next)
        repeats.exception(f"timer callback {where(t.fn)} failed", exc)

    def _finish(self, t: Timer) -> None:
        self.running -= 1
        if t.interval:
            self._finish_every(t)
        if self._waitq and self.running < self.max_running:
            self._next_waiting()
        self._check_idle()

    def _finish_every(self, t: Timer) -> None:
        t.running = False
        if t.after and not self._stopped:  # exit began while this run was going: one premature run now
            t.after = False
            self.premature += 1
            self._run(t, True)
        elif not t.alive and t.unique is not None:
            self._release(t)

    # -- unique= --

    def _take(self, t: Timer) -> bool:
        """True when this process holds (or just took) T's unique lock for T."""
        name = t.unique
        assert name is not None
        holder = self._held.get(name)
        if holder is not None:
            return holder is t and (t.lease is None or t.lease.valid())
        if not treelock.try_lock(name):
            return False  # another process of the tree holds it
        self._held[name] = t
        if t.lease is not None:  # scope="cluster": this process competes for the node
            t.lease.start()
            return bool(t.lease.valid())
        log.info(f'timer "{name}" runs in this process now')
        return True

    def _release(self, t: Timer) -> None:
        name = t.unique
        if name is None or self._held.get(name) is not t:
            return
        del self._held[name]
        if t.lease is not None:
            t.lease.stop()
        try:
            treelock.unlock(name)
        except OSError as exc:  # pragma: no cover - unlocking a held lock does not fail
            log.warn(f'unlocking timer "{name}" failed ({exc.errno}: {exc.strerror})')

    # -- idle --

    def idle(self) -> bool:
        return self.pending == 0 and self.running == 0

    def _check_idle(self) -> None:
        if self._idle_waiters and self.pending == 0 and self.running == 0:
            for fut in self._idle_waiters:
                if not fut.done():
                    fut.set_result(None)
            self._idle_waiters.clear()

    async def wait_idle(self) -> None:
        """Return when no timer is pending or running."""
        while not self.idle():
            fut: asyncio.Future[None] = self.loop.create_future()
            self._idle_waiters.append(fut)
            await fut

    # -- exit --

    def fire_premature(self) -> None:
        """Graceful exit began: refuse new timers; run every pending one once, now.

        A timer that had not fallen due runs with premature=True; one already due
        and waiting for a slot runs as a normal run. Neither waits for a slot.
        """
        if self.closing:
            return
        self.closing = True
        self._cap = -1
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        due_every = set()
        batch: list[tuple[Timer, bool]] = []
        for t in self._waitq:  # fell due, waits for a slot: a normal run, now
            if t.interval:
                t.running = False  # it was only waiting
                if t.alive:
                    due_every.add(t)  # runs from the loop over _scheduled below
                else:
                    self._release(t)  # cancelled while it waited
            elif t.alive:
                batch.append((t, False))
        self._waitq.clear()
        batch.extend((t, True) for t in self._ready if t.alive)
        self._ready.clear()
        for t in self._scheduled:
            if t.handle is not None:
                t.handle.cancel()
                t.handle = None
            if not t.alive:
                continue
            if t.unique is not None and (self._held.get(t.unique) is not t
                                          or (t.lease is not None and not t.lease.valid())):
                self._drop(t)  # only the holder runs a unique job, its last run included
            elif t.running:
                t.after = True
                self._drop(t)
            else:
                batch.append((t, t not in due_every))
        self._scheduled.clear()
        if batch:
            self._batch = batch
            self.loop.call_soon(self._run_batch)
        self._check_idle()

    def _drop(self, t: Timer) -> None:
        """T runs no more (exit): it leaves the pending count."""
        t.alive = False
        self.pending -= 1

    def _run_batch(self) -> None:
        if self._stopped:
            return  # final() drops them
        batch, self._batch = self._batch, []
        for t, premature in batch:
            if t.alive:
                if t.interval:
                    self._drop(t)
                if premature:
                    self.premature += 1
                self._run(t, premature)

    async def wait_running(self) -> None:
        """Wait for the premature runs and every running callback; on cancel, cancel them."""
        try:
            await self.wait_idle()
        except asyncio.CancelledError:
            self._stopped = True  # what is cancelled now gets no premature run after it
            tasks = list(self._tasks)
            for task in tasks:
                log.warn(f"timer callback {where(self._tasks[task].fn)} still running at "
                         "worker_shutdown_timeout, cancelled")
                task.cancel()
            self.cancelled_at_exit += len(tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=_CANCEL_GRACE)
            raise

    def final(self, graceful: bool) -> None:
        """The process ends: nothing more runs (a fast stop runs none at all)."""
        self.closing = True
        self._cap = -1
        self._stopped = True
        if self._drain_handle is not None:
            self._drain_handle.cancel()
            self._drain_handle = None
        for t in [*self._scheduled, *self._ready, *self._waitq, *(t for t, _ in self._batch)]:
            if t.handle is not None:
                t.handle.cancel()
                t.handle = None
            if t.alive:
                self._drop(t)
        self._scheduled.clear()
        self._ready.clear()
        self._waitq.clear()
        self._batch = []
        for task in list(self._tasks):
            task.cancel()
        for t in list(self._held.values()):
            self._release(t)

    def statistics(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "running": self.running,
            "waiting_for_slot": sum(1 for t in self._waitq if t.alive),
            "fired": self.fired,
            "failed": self.failed,
            "waited_for_slot": self.waited,
            "skipped_overlap": self.skipped,
            "premature": self.premature,
            "cancelled_at_exit": self.cancelled_at_exit,
            "max_pending": self.max_pending,
            "max_running": self.max_running,
            "unique_held": sorted(self._held),
        }


def start(rt: Any, max_pending: int, max_running: int) -> Engine:
    """The timers of runtime RT (a `core.Runtime`), on its loop, stopped by its exit hooks."""
    engine = Engine(rt.loop, max_pending, max_running)
    rt.exits.on_begin(engine.fire_premature, order=lifecycle.TIMERS)
    rt.exits.on_wait(engine.wait_running)
    rt.exits.on_final(engine.final)
    return engine


def statistics(engine: Engine | None) -> dict[str, Any]:
    """Counters for the status endpoint."""
    if engine is None:
        return {"pending": 0, "running": 0}
    return engine.statistics()
