"""Cross-process events: ``from pyngx import events`` (after Kong's lua-resty-worker-events 2.x).

Thin: checks the phase and the arguments, then delegates to
`pyngx.runtime.eventbus`, which keeps the ordered log in a shared dict zone.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyngx.errors import Error, WrongContextError
from pyngx.runtime import core, eventbus, phase

__all__ = ["SOURCE", "configure", "configured", "post", "post_local", "poll", "register", "register_weak",
           "unregister", "event_list", "EventList", "statistics"]

SOURCE = eventbus.SOURCE


def configure(shm: str | None, timeout: float = 2, interval: float = 1, wait_interval: float = 0.010,
              wait_max: float = 0.5, shm_retries: int = 999) -> None:
    """Join the event log kept in the shared dict SHM, or change the settings.

    Called again it changes the settings; the zone cannot change (``shm`` may
    then be None). Posts ``started`` the first time.

    Raises ValueError for a bad option or an unknown zone, Error("already
    started, cannot change shm"), WrongContextError in init_by_python.
    """
    phase.forbid(phase.INIT, api="events.configure")
    running = eventbus.current()
    if shm is None:
        if running is None:
            raise ValueError('"shm" option required to start')
        shm = running.name
    if not isinstance(shm, str) or not shm:
        raise ValueError('"shm" must be the name of a python_shared_dict')
    _positive("timeout", timeout)
    for name, value in (("interval", interval), ("wait_interval", wait_interval), ("wait_max", wait_max),
                        ("shm_retries", shm_retries)):
        _not_negative(name, value)
    settings = eventbus.Settings(float(timeout), float(interval), float(wait_interval), float(wait_max),
                                 int(shm_retries))
    rt = core.RT
    if not isinstance(rt, core.Runtime):  # the master, the signaller or a plain program: no loop to run on
        raise WrongContextError(f"events.configure: API disabled in the context of {phase.current() or 'this process'}")
    eventbus.configure(rt, shm, settings)


def configured() -> bool:
    """True once configure() has run in this process."""
    return eventbus.current() is not None


def post(source: str, event: str, data: Any = None, unique: str | None = None, *, cluster: bool = False) -> bool:
    """Broadcast an event to every worker and the agent, this process included.

    With UNIQUE exactly one process handles it, and repeats of UNIQUE within
    ``timeout`` are dropped (returns False for a dropped repeat).
    With ``cluster=True`` (``python_cluster``) every process of every node
    handles it, in the cluster's order: it is queued for Redis and returns
    True (a dropped unique repeat is dropped in Redis). See docs/cluster.md.

    Raises NoMemoryError when the zone cannot keep the event until every
    process has seen it; TypeError for data msgpack cannot carry; for a
    cluster post, Error when python_cluster is absent or the bounded queue
    of posts waiting for Redis is full.
    """
    _check_names(source, event)
    if unique is not None and (not isinstance(unique, str) or not unique):
        raise ValueError("unique must be a non-empty string")
    if cluster:
        return _cluster_post(source, event, data, unique)
    return _bus("events.post").post(source, event, data, unique)


def _cluster_post(source: str, event: str, data: Any, unique: str | None) -> bool:
    phase.forbid(phase.INIT, api="events.post")
    from pyngx.runtime import cluster  # only here: without python_cluster nothing of it is loaded

    return cluster.post(source, event, data, unique)


def post_local(source: str, event: str, data: Any = None) -> None:
    """Queue an event for this process only (``pid`` is None in the handlers)."""
    _check_names(source, event)
    _bus("events.post_local").post_local(source, event, data)


def poll() -> str:
    """Handle every pending event now: "done", or "recursive" inside a handler."""
    result = _bus("events.poll").poll()
    return "recursive" if result == "recursive" else "done"


def register(callback: Callable[..., Any], source: str | None = None, *event_names: str) -> None:
    """Call CALLBACK(data, event, source, pid) for every event, one source, or named events."""
    _check_callback(callback, source, event_names)
    eventbus.registry().add(callback, False, source, event_names)


def register_weak(callback: Callable[..., Any], source: str | None = None, *event_names: str) -> None:
    """As register, holding only a weak reference: a collected callback is dropped."""
    _check_callback(callback, source, event_names)
    try:
        eventbus.registry().add(callback, True, source, event_names)
    except TypeError:
        raise TypeError(f"cannot hold a weak reference to {callback!r}") from None


def unregister(callback: Callable[..., Any], source: str | None = None, *event_names: str) -> bool:
    """Remove CALLBACK (weak or strong) where it was registered; False when it was not."""
    _check_callback(callback, source, event_names)
    return eventbus.registry().remove(callback, source, event_names)


class EventList:
    """Event names as attributes (their own name as value) and ``_source``."""

    __slots__ = ("_source", "_names")

    def __init__(self, source: str, names: tuple[str, ...]) -> None:
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_names", frozenset(names))

    def __getattr__(self, name: str) -> str:
        if name in self._names:
            return name
        raise AttributeError(f"unknown event '{name}' (source '{self._source}')")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("an event list is read-only")

    def __dir__(self) -> list[str]:
        return ["_source", *sorted(self._names)]

    def __repr__(self) -> str:
        return f"EventList({self._source!r}, {', '.join(map(repr, sorted(self._names)))})"


def event_list(source: str, *names: str) -> EventList:
    """An object whose attributes are NAMES and whose ``_source`` is SOURCE.

    A typo in an event name raises AttributeError("unknown event 'x' (source 'SOURCE')").
    """
    if not isinstance(source, str) or not source:
        raise ValueError("source is required")
    return EventList(source, names)


def statistics() -> dict[str, Any]:
    """Counters of this process's bus: posted, handled, lost, backlog, ..."""
    return eventbus.statistics()


# -- checks --

def _bus(api: str) -> eventbus.Bus:
    bus = eventbus.current()
    if bus is None:
        raise Error(f"{api}: events not configured")
    return bus


def _check_names(source: object, event: object) -> None:
    if not isinstance(source, str) or not source:
        raise ValueError("source is required")
    if not isinstance(event, str) or not event:
        raise ValueError("event is required")


def _check_callback(callback: object, source: object, names: tuple[object, ...]) -> None:
    if not callable(callback):
        raise TypeError(f"expected function, got: {type(callback).__name__}")
    if source is not None and (not isinstance(source, str) or not source):
        raise ValueError("source must be a non-empty string or None")
    if names and source is None:
        raise ValueError("event names need a source")
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError("event names must be non-empty strings")


def _positive(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'optional "{name}" option must be a number')
    if value <= 0:
        raise ValueError(f'"{name}" must be greater than 0')


def _not_negative(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'optional "{name}" option must be a number')
    if value < 0:
        raise ValueError(f'"{name}" must be greater than or equal to 0')


EventList.__module__ = __name__
