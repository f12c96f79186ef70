"""pyngx.events in one process: configure, post, poll, register, event_list."""
from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest

import support
from pyngx import events
from pyngx.errors import Error, WrongContextError
from pyngx.runtime import core, eventbus, lifecycle, phase

try:
    from pyngx.shm import shdict as _shdict
except ImportError:  # pragma: no cover
    _shdict = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    record = core.RT
    saved = record.events
    record.events = None  # a fresh handler registry
    yield
    record.events = saved


@pytest.fixture
def zones() -> Iterator[dict[str, Any]]:
    if _shdict is None or not hasattr(_shdict, "create"):
        pytest.skip("shared dict zones are not there yet")
    zone = _shdict.create("ev", 1 << 20)
    with support.as_runtime(shdicts={"ev": zone}) as rt:
        yield rt.shdicts
        bus = eventbus.current()
        if bus is not None:
            bus.leave()
    getattr(zone, "close", lambda: None)()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_event_list() -> None:
    ev = events.event_list("my-source", "started", "event2")
    assert ev._source == "my-source"
    assert ev.started == "started" and ev.event2 == "event2"
    with pytest.raises(AttributeError, match="unknown event 'stoppping' \\(source 'my-source'\\)"):
        ev.stoppping  # noqa: B018
    with pytest.raises(AttributeError):
        ev.started = "x"  # type: ignore[misc]
    assert events.SOURCE == "worker-events"


def test_register_unregister() -> None:
    def cb(*_: Any) -> None:
        pass

    events.register(cb, "src", "a", "b")
    assert events.unregister(cb, "src", "a") is True
    assert events.unregister(cb, "src", "a") is False
    assert events.unregister(cb, "src", "b") is True
    assert events.unregister(cb) is False
    with pytest.raises(TypeError, match="expected function, got: int"):
        events.register(1)  # type: ignore[arg-type]


def test_not_configured() -> None:
    with pytest.raises(Error, match="events.post: events not configured"):
        events.post("s", "e")
    assert events.statistics()["configured"] is False


def test_configure_errors(zones: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match='shm "nope" not found'):
        events.configure("nope", interval=0)
    with pytest.raises(ValueError, match='"timeout" must be greater than 0'):
        events.configure("ev", timeout=0)
    with pytest.raises(ValueError, match='"interval" must be greater than or equal to 0'):
        events.configure("ev", interval=-1)
    with pytest.raises(ValueError, match='"shm" option required to start'):
        events.configure(None)
    token = phase.set(phase.INIT)
    try:
        with pytest.raises(WrongContextError, match="events.configure"):
            events.configure("ev")
    finally:
        phase.reset(token)
    assert not events.configured()


def test_started_post_poll_and_filters(zones: dict[str, Any]) -> None:
    seen: list[tuple[str, Any]] = []
    events.register(lambda d, e, s, p: seen.append(("all", e)))
    events.register(lambda d, e, s, p: seen.append(("src", e)), "src")
    events.register(lambda d, e, s, p: seen.append(("b", d)), "src", "b")
    events.configure("ev", interval=0)
    assert events.configured()
    with pytest.raises(Error, match="already started, cannot change shm"):
        events.configure("other")
    events.configure(None, timeout=5)  # settings only
    events.post("src", "a", 1)
    events.post("src", "b", 2)
    events.post("other", "c", 3)
    assert events.poll() == "done"
    assert seen == [("all", "started"), ("all", "a"), ("src", "a"), ("all", "b"), ("src", "b"), ("b", 2),
                    ("all", "c")]
    stats = events.statistics()
    assert stats["posted"] == 4 and stats["handled"] == 4 and stats["lost"] == 0 and stats["backlog"] == 0


def test_handler_arguments_and_phase(zones: dict[str, Any]) -> None:
    got: list[Any] = []
    events.register(lambda d, e, s, p: got.append((d, e, s, p, phase.current())), "s")
    events.configure("ev", interval=0)
    events.post("s", "e", {"k": [1, 2]})
    events.post_local("s", "l", b"raw")
    events.poll()
    import os
    assert got == [(b"raw", "l", "s", None, phase.EVENT), ({"k": [1, 2]}, "e", "s", os.getpid(), phase.EVENT)]


def test_weak_handlers_are_dropped_when_collected(zones: dict[str, Any]) -> None:
    got: list[str] = []

    class Holder:
        def on_event(self, data: Any, event: str, source: str, pid: int | None) -> None:
            got.append("method")

    holder = Holder()
    fn = lambda d, e, s, p: got.append("function")  # noqa: E731
    events.register_weak(holder.on_event, "s")
    events.register_weak(fn, "s")
    events.configure("ev", interval=0)
    events.post("s", "one")
    events.poll()
    assert got == ["method", "function"]
    del holder, fn
    gc.collect()
    events.post("s", "two")
    events.poll()
    assert got == ["method", "function"]
    assert events.statistics()["handlers"] == 0


def test_unique_once_in_one_process(zones: dict[str, Any]) -> None:
    got: list[Any] = []
    events.register(lambda d, *_: got.append(d), "s")
    events.configure("ev", interval=0)
    assert events.post("s", "e", 1, unique="u") is True
    assert events.post("s", "e", 2, unique="u") is False
    events.poll()
    assert got == [1]


def test_background_loop_and_async_handlers(zones: dict[str, Any]) -> None:
    async def main() -> list[Any]:
        got: list[Any] = []
        done = asyncio.Event()

        async def handler(data: Any, event: str, source: str, pid: int | None) -> None:
            await asyncio.sleep(0)
            got.append((data, phase.current()))
            if data == 3:
                done.set()

        events.register(handler, "s")
        events.configure("ev", interval=0.05)
        for i in range(4):
            events.post("s", "e", i)
        await asyncio.wait_for(done.wait(), 5)
        eventbus.current().leave()  # type: ignore[union-attr]
        await asyncio.sleep(0)
        return got

    assert run(main()) == [(i, phase.EVENT) for i in range(4)]


def test_stopping_on_graceful_exit(zones: dict[str, Any]) -> None:
    async def main() -> list[str]:
        got: list[str] = []
        events.register(lambda d, e, s, p: got.append(e), events.SOURCE)
        events.configure("ev", interval=0.05)
        await lifecycle.graceful(5)
        return got

    assert run(main()) == ["started", "stopping"]
    assert not events.configured()
