"""Thread pools of one process: where ``ngx.run_worker_thread`` runs blocking code.

Owns the pools named by ``thread_pool`` (nginx's ``ngx_thread_pool``; a pool named
``default`` always exists), their threads, bounded queues and counters. Knows
nothing of requests or phases: the facade in ``pyngx.base`` checks those.

A call is one item on the pool's ``SimpleQueue``. Threads start on demand, up to
the pool's size, so a process that never offloads anything starts none, and
none exists before the fork. A finished call appends its outcome to one deque
and wakes the loop with ``call_soon_threadsafe`` only when the deque was
drained, so a burst of results costs one wake-up. The loop side alone counts
calls in flight (submitted, outcome not yet delivered): that count bounds the
queue (``max_queue`` waiting beyond the threads) and lets a graceful exit wait
for running calls (the runtime's exit hooks).
"""
from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

from pyngx import log
from pyngx.errors import Error
from pyngx.runtime import core

_Item = tuple["asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PoolStats:
    threads: int  # the pool's size
    started: int  # threads started so far
    in_flight: int  # calls submitted whose outcome has not been delivered
    waiting: int  # of those, the calls no thread has taken yet (at most)
    calls: int
    errors: int  # calls that raised
    rejected: int  # calls refused because the queue was full
    max_queue: int


class Pool:
    """One named pool in this process."""

    __slots__ = ("name", "size", "max_queue", "loop", "queue", "threads", "done", "wake_pending", "in_flight",
                 "calls", "errors", "rejected", "idle")

    def __init__(self, name: str, size: int, max_queue: int, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.size, self.max_queue, self.loop = name, size, max_queue, loop
        self.queue: SimpleQueue[_Item | None] = SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self.wake_pending = False
        self.in_flight = 0
        self.calls = self.errors = self.rejected = 0
        self.idle: asyncio.Event | None = None  # created by wait_idle, set when in_flight drops to 0

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        """Queue one call; returns the future of its outcome. Raises Error when the queue is full."""
        waiting = self.in_flight - self.size
        if waiting >= self.max_queue:
            self.rejected += 1
            # nginx's words (ngx_thread_task_post)
            raise Error(f'thread pool "{self.name}" queue overflow: {waiting} tasks waiting')
        fut = self.loop.create_future()
        self.in_flight += 1
        self.calls += 1
        self.queue.put((fut, fn, args, kwargs))
        if len(self.threads) < min(self.size, self.in_flight):
            self._start_thread()
        return fut

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._work, name=f"pyngx-{self.name}-{len(self.threads)}", daemon=True)
        self.threads.append(thread)
        thread.start()

    # -- in the pool's threads --

    def _work(self) -> None:
        get, done = self.queue.get, self.done
        while True:
            item = get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            try:
                outcome = (fut, True, fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
                outcome = (fut, False, exc)
            del item, fut, fn, args, kwargs
            done.append(outcome)  # append first, then look at the flag: the loop clears it first
            del outcome
            if not self.wake_pending:
                self.wake_pending = True
                try:
                    self.loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: the process is leaving
                    return

    # -- on the loop --

    def _deliver(self) -> None:
        self.wake_pending = False
        done = self.done
        while done:
            fut, ok, value = done.popleft()
            self.in_flight -= 1
            if not ok:
                self.errors += 1
            if fut.cancelled():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if self.in_flight == 0 and self.idle is not None:
            self.idle.set()

    async def wait_idle(self) -> None:
        while self.in_flight:
            self.idle = asyncio.Event()
            await self.idle.wait()

    def stop(self) -> None:
        """Let idle threads end (running calls finish; nothing new is taken after them)."""
        for _ in self.threads:
            self.queue.put(None)

    def statistics(self) -> PoolStats:
        return PoolStats(self.size, len(self.threads), self.in_flight, max(0, self.in_flight - self.size),
                         self.calls, self.errors, self.rejected, self.max_queue)


class Pools:
    """Every pool of one runtime (`core.Runtime.pools`), each made on first use from the config."""

    __slots__ = ("specs", "pools")

    def __init__(self, rt: Any) -> None:
        config = rt.config
        specs = config.thread_pools if config is not None else ()
        self.specs: dict[str, tuple[int, int]] = {s.name: (s.threads, s.max_queue) for s in specs}
        self.specs.setdefault("default", (32, 65536))
        self.pools: dict[str, Pool] = {}
        rt.exits.on_wait(self._wait_running)
        rt.exits.on_final(self._final)

    def get(self, name: str) -> Pool:
        pool = self.pools.get(name)
        loop = asyncio.get_running_loop()
        if pool is not None and pool.loop is loop:
            return pool
        if pool is not None:  # a new loop in the same process (pyngx -e, tests): start afresh
            pool.stop()
        spec = self.specs.get(name)
        if spec is None:
            raise Error(f'thread_pool "{name}" not found')
        pool = self.pools[name] = Pool(name, spec[0], spec[1], loop)
        return pool

    async def _wait_running(self) -> None:
        pools = [p for p in self.pools.values() if p.in_flight]
        if pools:
            log.info(f"waiting for {sum(p.in_flight for p in pools)} worker thread calls")
        for pool in pools:
            await pool.wait_idle()

    def _final(self, graceful: bool) -> None:
        for pool in self.pools.values():
            pool.stop()


def of(rt: Any) -> Pools:
    """The pools of runtime RT (a `core.Runtime`), made at the first call."""
    pools: Pools | None = rt.pools
    if pools is None:
        pools = rt.pools = Pools(rt)
    return pools


async def run(rt: Any, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """FN(*ARGS, **KWARGS) in a thread of RT's pool NAME; its result, or its exception raised here."""
    return await of(rt).get(name).submit(fn, args, kwargs)


def statistics() -> dict[str, PoolStats]:
    """The counters of the pools used so far in this process (for pyngx_status)."""
    pools = core.RT.pools
    if pools is None:
        return {}
    return {name: pool.statistics() for name, pool in pools.pools.items()}
