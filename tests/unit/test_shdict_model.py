"""Randomized model tests: a zone against a plain dict with expiry, on both engines.

The exact model uses a zone large enough never to evict, and expires items
deterministically (flush_all marks everything expired; exptime is either 0 or
far away). The eviction test uses a tiny zone and checks the structure after
every step, and that the item just written is always readable.
"""
from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pyngx import errors
from pyngx.shm import shdict

ENGINES = ["c", "py"] if shdict.c_available() else ["py"]
KEYS = st.sampled_from([f"k{i}" for i in range(8)] + ["x" * 30, "y" * 90])
VALUES = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False),
                   st.text(max_size=80), st.binary(max_size=150), st.booleans(),
                   st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=5))
NUMS = st.one_of(st.integers(-100, 100), st.floats(-100, 100, allow_nan=False))
EXPTIMES = st.sampled_from([0, 0, 1000])


class Model:
    """key -> [value, flags, expired, has_ttl, kind]; kind is "v" or "l" (then value is a list)."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {}

    def live(self, key: str) -> list[Any] | None:
        item = self.items.get(key)
        return item if item is not None and not item[2] else None


def _machine(engine: str) -> type[RuleBasedStateMachine]:
    class ZoneVsDict(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.zone = shdict.create("model", 64 * 1024, engine)
            self.m = Model()

        def teardown(self) -> None:
            self.zone.close()

        @rule(key=KEYS, value=VALUES, exptime=EXPTIMES, flags=st.integers(0, 5), op=st.sampled_from(
            ["set", "safe_set", "add", "safe_add", "replace"]))
        def store(self, key: str, value: Any, exptime: int, flags: int, op: str) -> None:
            live = self.m.live(key)
            if op.endswith("add") and live:
                with pytest.raises(errors.KeyExistsError):
                    getattr(self.zone, op)(key, value, exptime, flags)
                return
            if op == "replace" and not live:
                with pytest.raises(errors.KeyNotFoundError):
                    self.zone.replace(key, value, exptime, flags)
                return
            assert getattr(self.zone, op)(key, value, exptime, flags) is False
            self.m.items[key] = [value, flags, False, bool(exptime), "v"]

        @rule(key=KEYS)
        def delete(self, key: str) -> None:
            self.zone.delete(key)
            self.m.items.pop(key, None)

        @rule(key=KEYS, value=NUMS, init=st.one_of(st.none(), NUMS))
        def incr(self, key: str, value: Any, init: Any) -> None:
            live = self.m.live(key)
            if live is None and init is None:
                with pytest.raises(errors.KeyNotFoundError):
                    self.zone.incr(key, value, init)
            elif live is not None and (live[4] == "l" or type(live[0]) not in (int, float)):
                with pytest.raises(errors.NotANumberError):
                    self.zone.incr(key, value, init)
            elif live is not None:
                live[0] = live[0] + value
                assert self.zone.incr(key, value, init) == pytest.approx(live[0])
            else:
                self.m.items[key] = [init + value, 0, False, False, "v"]
                assert self.zone.incr(key, value, init) == pytest.approx(init + value)

        @rule(key=KEYS, value=st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=20)), left=st.booleans())
        def push(self, key: str, value: Any, left: bool) -> None:
            live = self.m.live(key)
            if live is not None and live[4] != "l":
                with pytest.raises(errors.NotAListError):
                    self.zone.lpush(key, value)
                return
            if live is None:
                live = self.m.items[key] = [[], 0, False, False, "l"]
            live[0].insert(0, value) if left else live[0].append(value)
            fn = self.zone.lpush if left else self.zone.rpush
            assert fn(key, value) == len(live[0])

        @rule(key=KEYS, left=st.booleans())
        def pop(self, key: str, left: bool) -> None:
            live = self.m.live(key)
            fn = self.zone.lpop if left else self.zone.rpop
            if live is not None and live[4] != "l":
                with pytest.raises(errors.NotAListError):
                    fn(key)
                return
            if live is None:
                assert fn(key) is None
                return
            assert fn(key) == live[0].pop(0 if left else -1)
            if not live[0]:
                del self.m.items[key]

        @rule()
        def flush_all(self) -> None:
            self.zone.flush_all()
            for item in self.m.items.values():
                item[2] = True

        @rule()
        def flush_expired(self) -> None:
            expected = sum(1 for item in self.m.items.values() if item[2])
            # writes free up to two expired items each, so the zone may hold fewer than the model
            assert self.zone.flush_expired() <= expected
            self.m.items = {k: v for k, v in self.m.items.items() if not v[2]}

        @rule(key=KEYS, exptime=st.sampled_from([0, 500]))
        def expire(self, key: str, exptime: int) -> None:
            live = self.m.live(key)
            if live is None:
                with pytest.raises(errors.KeyNotFoundError):
                    self.zone.expire(key, exptime)
            else:
                self.zone.expire(key, exptime)
                live[3] = bool(exptime)

        @rule(key=KEYS)
        def read(self, key: str) -> None:
            live = self.m.live(key)
            if live is not None and live[4] == "l":
                with pytest.raises(errors.IsAListError):
                    self.zone.get(key)
                assert self.zone.llen(key) == len(live[0])
                return
            got = self.zone.get(key)
            if live is None:
                assert got is None
                return
            assert got == pytest.approx(live[0]) if type(live[0]) is float else got == live[0]
            assert self.zone.get_flags(key) == live[1]
            ttl = self.zone.ttl(key)
            assert (ttl > 0) == live[3]

        @invariant()
        def keys_match(self) -> None:
            expect = {k for k, v in self.m.items.items() if not v[2]}
            assert set(self.zone.get_keys(0)) == expect

        @invariant()
        def structure_holds(self) -> None:
            self.zone.check()

    ZoneVsDict.__name__ = f"ZoneVsDict_{engine}"
    return ZoneVsDict


@pytest.mark.parametrize("engine", ENGINES)
def test_zone_matches_a_dict(engine: str) -> None:
    machine = _machine(engine)
    machine.TestCase.settings = settings(max_examples=30, stateful_step_count=50, deadline=None)
    machine.TestCase().runTest()


@pytest.mark.parametrize("engine", ENGINES)
def test_tiny_zone_evicts_and_stays_whole(engine: str) -> None:
    import random

    rnd = random.Random(5)
    zone = shdict.create("tiny", 8192, engine)
    try:
        for step in range(3000):
            key = f"k{rnd.randrange(60)}"
            value = "v" * rnd.choice([1, 30, 100, 400, 2000])
            action = rnd.random()
            try:
                if action < 0.6:
                    zone.set(key, value, rnd.choice([0, 0, 0.001]))
                    assert zone.get(key) == value or zone.get_stale(key)[0] == value
                elif action < 0.7:
                    zone.incr(key + "n", 1, 0)
                elif action < 0.85:
                    zone.rpush(key + "l", value[:50])
                elif action < 0.9:
                    zone.lpop(key + "l")
                elif action < 0.95:
                    zone.safe_set(key, value)
                else:
                    zone.delete(key)
            except errors.NoMemoryError:
                pass
            if step % 50 == 0:
                zone.check()
        zone.check()
        assert zone.statistics()["evictions"] > 0
    finally:
        zone.close()
