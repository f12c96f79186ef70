"""The worker-events bus of this process: handlers, configure, wake-ups, exit hooks.

Owns the handler registry (every event, one source, or named events; strong
or weak), the one `eventlog.Bus` of this process, its wake-ups over IPC
(`pyngx.runtime.channel` internal alerts) and its part in graceful exit
(``stopping``). The log itself is `pyngx.runtime.eventlog`.
"""
from __future__ import annotations

import inspect
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from pyngx import log
from pyngx.errors import Error
from pyngx.runtime import channel, core, lifecycle
from pyngx.runtime.eventlog import SOURCE, WAKE, Bus, Settings

__all__ = ["SOURCE", "Bus", "Settings", "Registry", "registry", "current", "configure", "statistics"]


class Registry:
    """Callbacks by level: every event, one source, or one source's named events."""

    __slots__ = ("_levels", "_cache")

    def __init__(self) -> None:
        # (None, None) every event; (source, None) one source; (source, event)
        self._levels: dict[tuple[str | None, str | None], list[Any]] = {}
        # (source, event) -> (entries of the three levels in order, any weak ones)
        self._cache: dict[tuple[str, str], tuple[list[Any], bool]] = {}

    def add(self, callback: Callable[..., Any], weak: bool, source: str | None, events: Iterable[str]) -> None:
        ref: Any = callback
        if weak:
            ref = weakref.WeakMethod(callback) if inspect.ismethod(callback) else weakref.ref(callback)
        for level in self._keys(source, events):
            self._levels.setdefault(level, []).append(ref)
        self._cache.clear()

    def remove(self, callback: Callable[..., Any], source: str | None, events: Iterable[str]) -> bool:
        removed = False
        for level in self._keys(source, events):
            entries = self._levels.get(level, [])
            keep = [e for e in entries if _resolve(e) != callback]
            removed = removed or len(keep) != len(entries)
            self._levels[level] = keep
        self._cache.clear()
        return removed

    def matching(self, source: str, event: str) -> list[Callable[..., Any]]:
        """Live callbacks for one event, every-event ones first (the original's order)."""
        hit = self._cache.get((source, event))
        if hit is None:
            entries = [e for level in ((None, None), (source, None), (source, event))
                       for e in self._levels.get(level, ())]
            if len(self._cache) > 1024:
                self._cache.clear()
            hit = self._cache[(source, event)] = (entries, any(isinstance(e, weakref.ref) for e in entries))
        entries, weak = hit
        if not weak:
            return entries
        out = [fn for fn in map(_resolve, entries) if fn is not None]
        if len(out) != len(entries):  # a weak handler was garbage-collected: drop it for good
            for level, found in self._levels.items():
                self._levels[level] = [e for e in found if _resolve(e) is not None]
            self._cache.clear()
        return out

    def count(self) -> int:
        return sum(1 for entries in self._levels.values() for e in entries if _resolve(e) is not None)

    @staticmethod
    def _keys(source: str | None, events: Iterable[str]) -> list[tuple[str | None, str | None]]:
        if source is None:
            return [(None, None)]
        names = list(events)
        return [(source, name) for name in names] if names else [(source, None)]


def _resolve(entry: Any) -> Callable[..., Any] | None:
    if isinstance(entry, weakref.ref):  # WeakMethod is a subclass
        return entry()  # type: ignore[no-any-return]
    return entry  # type: ignore[no-any-return]


# -- this process --

def registry() -> Registry:
    """This generation's handlers: the current record's (init_by_python's pass on to the
    workers through the generation, `pyngx.proc.cycle.Cycle.events`)."""
    record = core.RT
    found: Registry | None = record.events
    if found is None:
        found = record.events = Registry()
    return found


def current() -> Bus | None:
    """The bus of this process, None before configure (or a parent's, after fork)."""
    bus = core.RT.bus
    if bus is not None and bus.pid == os.getpid() and not bus.closed:
        return bus
    return None


def configure(rt: Any, name: str, settings: Settings) -> None:
    """Join the log in zone NAME, or change the settings of the running bus.

    The bus belongs to runtime RT (a `core.Runtime`), stopped by its exit hooks.
    Raises ValueError for an unknown zone, Error when NAME differs from the
    zone in use, NoMemoryError when the zone cannot hold our position.
    """
    bus = current()
    if bus is not None:
        if name != bus.name:
            raise Error("already started, cannot change shm")
        bus.settings = settings
        bus.restart()
        return
    zone = rt.shdicts.get(name)
    if zone is None:
        raise ValueError(f'shm "{name}" not found')
    bus = Bus(zone, name, settings, registry(), peers=_tree_peers, wake_others=_waker())
    bus.join()
    rt.bus = bus
    rt.exits.on_begin(_stopping, order=lifecycle.EVENTS)
    rt.exits.on_wait(_drain)
    rt.exits.on_final(_leave)
    bus.start()
    bus.post(SOURCE, "started", None, None)


def statistics() -> dict[str, Any]:
    """Counters for the status endpoint (posted, handled, lost, backlog, ...)."""
    bus = current()
    if bus is None:
        return {"configured": False, "posted": 0, "handled": 0, "lost": 0, "handlers": registry().count()}
    return bus.statistics()


def _tree_peers() -> list[int]:
    """Every live worker and agent, old generations included (they still read)."""
    table = core.RT.tree
    if table is None:
        return [os.getpid()]
    return [peer.pid for peer in table.peers(current=False)]


def _waker() -> Callable[[], None]:
    """A function that wakes the other processes over IPC."""
    channel.receive_internal(WAKE, _on_wake)
    return lambda: channel.broadcast_internal(WAKE, b"")


def _on_wake(*_: Any) -> None:
    bus = current()
    if bus is not None:
        bus.woken()


def _stopping() -> None:
    """Graceful exit began: post ``stopping`` (every process handles it, this one too)."""
    bus = current()
    if bus is None:
        return
    try:
        bus.post(SOURCE, "stopping", None, None)
    except Exception as exc:  # noqa: BLE001 - a full zone must not stop the exit
        log.warn(f"worker-events: could not post \"stopping\": {exc}")


async def _drain() -> None:
    bus = current()
    if bus is not None:
        await bus.drain()


def _leave(graceful: bool) -> None:
    bus = current()
    if bus is not None:
        bus.leave()
