"""The worker-events engine over a real shared dict zone: several buses (one
per simulated process, each with its own pid) read the same log."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from pyngx.errors import NoMemoryError
from pyngx.runtime import eventlog
from pyngx.runtime.eventbus import Registry
from pyngx.runtime.eventlog import Bus, Settings

try:
    from pyngx.shm import shdict as _shdict
except ImportError:  # pragma: no cover - shared dicts land with their own issue
    _shdict = None  # type: ignore[assignment]


def make_zone(size: int) -> Any:
    if _shdict is None or not hasattr(_shdict, "create"):
        pytest.skip("shared dict zones are not there yet")
    return _shdict.create("events", size)


@pytest.fixture
def zone_factory() -> Iterator[Callable[[int], Any]]:
    made: list[Any] = []

    def make(size: int = 1 << 20) -> Any:
        zone = make_zone(size)
        made.append(zone)
        return zone

    yield make
    for zone in made:
        getattr(zone, "close", lambda: None)()


class World:
    """Processes 1..N on one zone, each with its own registry and a journal."""

    def __init__(self, zone: Any, count: int, settings: Settings = Settings()) -> None:
        self.pids = list(range(1, count + 1))
        self.seen: dict[int, list[tuple[Any, str, str, int | None]]] = {pid: [] for pid in self.pids}
        self.buses: dict[int, Bus] = {}
        for pid in self.pids:
            reg = Registry()
            reg.add(self._journal(pid), False, None, ())
            bus = Bus(zone, "events", settings, reg, pid=pid, peers=lambda: self.pids)
            bus.join()
            self.buses[pid] = bus

    def _journal(self, pid: int) -> Callable[..., None]:
        def handler(data: Any, event: str, source: str, sender: int | None) -> None:
            self.seen[pid].append((data, event, source, sender))
        return handler

    def poll_all(self) -> None:
        for bus in self.buses.values():
            assert bus.poll() == "done"


def test_every_process_sees_every_event_in_one_order(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(1 << 20), 3)
    for i in range(30):
        pid = world.pids[i % 3]
        world.buses[pid].post("src", f"e{i % 4}", {"i": i, "from": pid}, None)
        if i % 7 == 0:
            world.buses[world.pids[(i + 1) % 3]].poll()
    world.poll_all()
    first = world.seen[1]
    assert [d["i"] for d, *_ in first] == list(range(30))
    assert world.seen[2] == first and world.seen[3] == first
    assert first[4] == ({"i": 4, "from": 2}, "e0", "src", 2)


def test_data_round_trips_through_msgpack(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(1 << 20), 1)
    values = [None, 1, 2.5, "text", b"\x00bytes", [1, "a"], {"k": [True, False]}]
    for value in values:
        world.buses[1].post("s", "e", value, None)
    world.poll_all()
    assert [d for d, *_ in world.seen[1]] == values
    with pytest.raises(TypeError):
        world.buses[1].post("s", "e", object(), None)


def test_unique_is_handled_once_and_repeats_are_dropped(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(1 << 20), 3)
    accepted = [world.buses[pid].post("cache", "refresh", pid, "key-1") for pid in world.pids]
    assert accepted == [True, False, False]
    assert world.buses[2].post("cache", "refresh", 0, "key-2")
    world.poll_all()
    handled = [entry for pid in world.pids for entry in world.seen[pid]]
    assert sorted(d for d, *_ in handled) == [0, 1]
    assert world.buses[3].stats["dropped_unique"] == 1


def test_unique_claims_spread_over_readers(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(1 << 20), 3)
    for i in range(60):
        world.buses[1].post("s", "e", i, f"u{i}")
    for _ in range(3):  # interleave the readers so each claims some
        for bus in world.buses.values():
            bus.poll(limit=7)
    world.poll_all()
    handled = sorted(d for pid in world.pids for d, *_ in world.seen[pid])
    assert handled == list(range(60))


def test_local_events_stay_in_their_process(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(1 << 20), 2)
    world.buses[1].post_local("s", "here", 5)
    world.poll_all()
    assert world.seen[1] == [(5, "here", "s", None)]
    assert world.seen[2] == []


def test_newcomer_starts_at_the_current_position(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)
    world = World(zone, 1)
    world.buses[1].post("s", "old", None, None)
    late = Bus(zone, "events", Settings(), Registry(), pid=9, peers=lambda: [1, 9])
    late.join()
    got: list[str] = []
    late.registry.add(lambda d, e, s, p: got.append(e), False, None, ())
    world.buses[1].post("s", "new", None, None)
    late.poll()
    assert got == ["new"]


def test_a_full_zone_refuses_the_post_and_loses_nothing(zone_factory: Callable[[int], Any]) -> None:
    world = World(zone_factory(64 * 1024), 2)
    poster, slow = world.buses[1], world.buses[2]
    posted = 0
    with pytest.raises(NoMemoryError):
        while True:
            poster.post("s", "e", "x" * 100, None)
            posted += 1
    assert posted > 50
    poster.poll()
    # the slow reader holds every record: nothing was collected, nothing lost
    slow.poll()
    assert len(world.seen[2]) == len(world.seen[1]) == posted
    # once both have read, collection makes room again
    poster.post("s", "e", "y" * 100, None)
    world.poll_all()
    assert world.seen[1] == world.seen[2]
    assert world.seen[1][-1][0] == "y" * 100
    assert poster.stats["lost"] == slow.stats["lost"] == 0
    assert poster.stats["collected"] + slow.stats["collected"] >= posted


def test_collection_keeps_the_zone_small(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(256 * 1024)
    world = World(zone, 2)
    for i in range(20_000):
        world.buses[1 + i % 2].post("s", "e", i, None)
        if i % 100 == 99:
            world.poll_all()
    world.poll_all()
    assert [d for d, *_ in world.seen[1]] == list(range(20_000))
    assert world.seen[2] == world.seen[1]


def test_a_dead_process_does_not_hold_collection(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)
    world = World(zone, 2)
    world.pids.remove(2)  # process 2 died: the tree no longer lists it
    for i in range(eventlog.GC_EVERY + 1):
        world.buses[1].post("s", "e", i, None)
    world.buses[1].poll()
    assert world.buses[1].stats["collected"] > 0


def test_a_hole_left_by_a_dead_poster_is_skipped(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)
    world = World(zone, 1)
    zone.incr(eventlog.SEQ, 1)  # a poster took a number and died before writing it
    world.buses[1].post("s", "e", 1, None)
    assert world.buses[1].poll() == "done"
    assert [d for d, *_ in world.seen[1]] == [1]
    assert world.buses[1].stats["lost"] == 1


def test_a_slow_poster_is_waited_for_however_long(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)
    world = World(zone, 2, Settings(wait_max=0.0))
    slow = world.buses[2]
    zone.incr(eventlog.flag_key(2), 1)  # process 2 raised its flag and took a number...
    n = zone.incr(eventlog.SEQ, 1)
    world.buses[1].post("s", "e", "after", None)
    assert world.buses[1].poll() == "wait"
    time.sleep(0.01)
    assert world.buses[1].poll() == "wait"  # ... and is descheduled for longer than wait_max
    zone.safe_add(eventlog.record_key(n), msgpack.packb([2, "s", "e", "slow", None]))
    zone.incr(eventlog.flag_key(2), -1)
    assert world.buses[1].poll() == "done"
    assert [d for d, *_ in world.seen[1]] == ["slow", "after"]
    assert world.buses[1].stats["lost"] == 0
    slow.poll()


def test_poll_inside_a_handler_is_recursive(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)
    reg = Registry()
    bus = Bus(zone, "events", Settings(), reg, pid=1)
    bus.join()
    results: list[str] = []
    reg.add(lambda *a: results.append(bus.poll()), False, "s", ("e",))
    bus.post("s", "e", None, None)
    assert bus.poll() == "done"
    assert results == ["recursive"]


class NotAnException(BaseException):
    """What a careless handler might raise: not caught by ``except Exception``."""


@pytest.mark.parametrize("error", [RuntimeError("boom"), NotAnException("odd"), asyncio.CancelledError()])
def test_a_failing_handler_does_not_stop_the_others(zone_factory: Callable[[int], Any], error: BaseException) -> None:
    zone = zone_factory(1 << 20)
    reg = Registry()
    bus = Bus(zone, "events", Settings(), reg, pid=1)
    bus.join()
    got: list[int] = []

    def bad(*_: Any) -> None:
        raise error

    reg.add(bad, False, None, ())
    reg.add(lambda d, *_: got.append(d), False, None, ())
    bus.post("s", "e", 1, None)
    bus.post("s", "e", 2, None)
    bus.poll()
    assert got == [1, 2]
    assert bus.stats["handler_errors"] == 2


def test_wake_up_delivers_without_waiting_for_the_interval(zone_factory: Callable[[int], Any]) -> None:
    zone = zone_factory(1 << 20)

    async def main() -> float:
        got = asyncio.Event()
        reg_a, reg_b = Registry(), Registry()
        reg_b.add(lambda *a: got.set(), False, "s", ("ping",))
        b = Bus(zone, "events", Settings(interval=30), reg_b, pid=2, peers=lambda: [1, 2])
        a = Bus(zone, "events", Settings(interval=30), reg_a, pid=1, peers=lambda: [1, 2], wake_others=b.woken)
        for bus in (a, b):
            bus.join()
            bus.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        a.post("s", "ping", None, None)
        await asyncio.wait_for(got.wait(), 5)
        elapsed = loop.time() - start
        for bus in (a, b):
            bus.leave()
        await asyncio.sleep(0)
        return elapsed

    assert asyncio.run(main()) < 1.0
