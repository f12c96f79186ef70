"""ngx.shared.DICT semantics, each test run over both engines (C hot path and pure Python).

Edge cases follow lua-nginx-module's documentation and t/043-shdict.t, t/045-ngx-shared-dict-*.t
(expired keys and add/replace/incr, get_stale after flush_all, get_keys(0), lists and ttl).
Expiry is made deterministic with flush_all(), which marks every item expired.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

import pyngx
from pyngx import errors
from pyngx.runtime import core
from pyngx.shared import SharedDict
from pyngx.shm import shdict

ENGINES = ["c", "py"] if shdict.c_available() else ["py"]


@pytest.fixture(params=ENGINES)
def d(request: pytest.FixtureRequest) -> Iterator[SharedDict]:
    zone = shdict.create("dogs", 256 * 1024, request.param)
    yield SharedDict("dogs", zone)
    zone.check()
    zone.close()


def test_values_round_trip(d: SharedDict) -> None:
    values = ["héllo", "", b"\x00\xff", 0, -(1 << 63), (1 << 63) - 1, 3.5, True, False,
              [1, "a", [2.5]], {"a": 1, "b": [True]}, "x" * 5000, b"y" * 70000]
    for i, v in enumerate(values):
        assert d.set(f"k{i}", v) is False
    for i, v in enumerate(values):
        got = d.get(f"k{i}")
        assert got == v and type(got) is type(v)


def test_str_and_bytes_keys_are_one_key(d: SharedDict) -> None:
    d.set("a", 1)
    assert d.get(b"a") == 1
    d.set(b"\xff\xfe", 2)
    assert sorted(d.get_keys(0), key=repr) == sorted(["a", b"\xff\xfe"], key=repr)


def test_missing_and_none(d: SharedDict) -> None:
    assert d.get("nope") is None
    assert d.get_stale("nope") == (None, False)
    assert d.get_flags("nope") is None
    d.set("k", 1)
    d.set("k", None)  # set to nil deletes
    assert d.get("k") is None
    d.delete("k")  # deleting a missing key is fine
    with pytest.raises(errors.Error, match="^attempt to add or replace nil values$"):
        d.add("k", None)  # OpenResty refuses to add nil
    assert d.get("k") is None


def test_flags(d: SharedDict) -> None:
    d.set("k", "v", 0, 7)
    assert d.get_flags("k") == 7
    d.set("k", "v")
    assert d.get_flags("k") == 0
    d.set("k", "v", flags=0xFFFFFFFF)
    assert d.get_flags("k") == 0xFFFFFFFF


def test_add_replace(d: SharedDict) -> None:
    assert d.add("k", 1) is False
    with pytest.raises(errors.KeyExistsError, match="^exists$"):
        d.add("k", 2)
    with pytest.raises(errors.KeyExistsError):
        d.safe_add("k", 2)
    assert d.get("k") == 1
    with pytest.raises(errors.KeyNotFoundError, match="^not found$"):
        d.replace("other", 1)
    d.replace("k", 3, 0, 5)
    assert d.get("k") == 3 and d.get_flags("k") == 5
    for op in (d.replace, d.add, d.safe_add):  # OpenResty refuses nil values here (set deletes)
        with pytest.raises(errors.Error, match="^attempt to add or replace nil values$"):
            op("k", None)
    assert d.get("k") == 3


def test_expired_keys(d: SharedDict) -> None:
    d.set("k", "old", 0, 9)
    d.flush_all()
    assert d.get("k") is None
    assert d.get_stale("k") == ("old", True)
    assert d.get_flags("k") is None
    assert "k" not in d
    d.add("k", "new")  # add succeeds over an expired key
    assert d.get("k") == "new" and d.get_flags("k") == 0
    d.flush_all()
    with pytest.raises(errors.KeyNotFoundError):
        d.replace("k", 1)  # replace fails on an expired key
    with pytest.raises(errors.KeyNotFoundError):
        d.ttl("k")
    with pytest.raises(errors.KeyNotFoundError):
        d.expire("k", 10)


def test_ttl_and_expire(d: SharedDict) -> None:
    d.set("k", 1, 100)
    assert 99 < d.ttl("k") <= 100
    d.set("n", 1)
    assert d.ttl("n") == 0
    d.expire("n", 50.5)
    assert 50 < d.ttl("n") <= 50.5
    d.expire("n", 0)
    assert d.ttl("n") == 0
    with pytest.raises(errors.KeyNotFoundError):
        d.ttl("missing")
    with pytest.raises(errors.KeyNotFoundError):
        d.expire("missing", 1)


def test_expiry_happens(d: SharedDict) -> None:
    from support import wait_until

    d.set("k", 1, 0.05)
    assert d.get("k") == 1
    wait_until(lambda: d.get("k") is None, 5)
    assert d.get_stale("k") == (1, True)


def test_incr(d: SharedDict) -> None:
    with pytest.raises(errors.KeyNotFoundError):
        d.incr("n", 1)
    assert d.incr("n", 5, 10) == 15
    assert d.incr("n", -20) == -5
    assert d.incr("n", 0.5) == -4.5
    assert type(d.get("n")) is float
    d.set("i", 1, 100, 3)
    assert d.incr("i", 1, 0, 5) == 2  # init_ttl only applies when the key is created
    assert 99 < d.ttl("i") <= 100 and d.get_flags("i") == 3
    assert d.incr("t", 1, 0, 50) == 1
    assert 49 < d.ttl("t") <= 50
    d.set("s", "str")
    with pytest.raises(errors.NotANumberError, match="^not a number$"):
        d.incr("s", 1)
    d.set("b", True)
    with pytest.raises(errors.NotANumberError):
        d.incr("b", 1)
    d.lpush("l", 1)
    with pytest.raises(errors.NotANumberError):
        d.incr("l", 1)
    assert d.incr("big", 1, (1 << 63) - 1) == float(1 << 63)


def test_incr_on_expired(d: SharedDict) -> None:
    d.set("n", 10, 0, 4)
    d.flush_all()
    with pytest.raises(errors.KeyNotFoundError):
        d.incr("n", 1)  # expired counts as missing without init
    assert d.incr("n", 1, 0) == 1  # with init the old value is gone
    assert d.get_flags("n") == 0


def test_incr_arguments(d: SharedDict) -> None:
    with pytest.raises(TypeError, match="cannot convert 'value' to a number"):
        d.incr("n", "1")
    with pytest.raises(TypeError, match="'init'"):
        d.incr("n", 1, "0")
    with pytest.raises(ValueError, match="init_ttl"):
        d.incr("n", 1, None, 5)
    with pytest.raises(TypeError):
        d.incr("n", True)


def test_get_on_list(d: SharedDict) -> None:
    d.rpush("l", "a")
    with pytest.raises(errors.IsAListError, match="^value is a list$"):
        d.get("l")
    with pytest.raises(errors.IsAListError):
        d.get_stale("l")
    d.set("l", 1)  # set replaces a list
    assert d.get("l") == 1


def test_lists(d: SharedDict) -> None:
    assert d.llen("l") == 0
    assert d.lpop("l") is None and d.rpop("l") is None
    assert d.rpush("l", "b") == 1
    assert d.rpush("l", 3) == 2
    assert d.lpush("l", b"a") == 3
    assert d.lpush("l", 1.5) == 4
    assert d.llen("l") == 4
    assert d.lpop("l") == 1.5
    assert d.rpop("l") == 3
    assert d.lpop("l") == b"a"
    assert d.rpop("l") == "b"
    assert d.llen("l") == 0
    assert "l" not in d.get_keys(0)  # an emptied list removes its key
    d.set("s", "v")
    for op in (lambda: d.lpush("s", 1), lambda: d.rpush("s", 1), lambda: d.lpop("s"),
               lambda: d.rpop("s"), lambda: d.llen("s")):
        with pytest.raises(errors.NotAListError, match="^value not a list$"):
            op()
    with pytest.raises(TypeError):
        d.lpush("l", None)


def test_list_ttl_and_expired_list(d: SharedDict) -> None:
    d.rpush("l", 1)
    d.expire("l", 100)
    d.rpush("l", 2)  # pushing keeps the ttl
    assert 99 < d.ttl("l") <= 100
    d.flush_all()
    assert d.llen("l") == 0 and d.lpop("l") is None
    assert d.rpush("l", 9) == 1  # pushing onto an expired list starts a new one
    assert d.ttl("l") == 0
    big = [f"item-{i}" * 10 for i in range(300)]
    for v in big:
        d.rpush("big", v)
    assert [d.lpop("big") for _ in range(300)] == big


def test_flush_expired_and_get_keys(d: SharedDict) -> None:
    for i in range(10):
        d.set(f"k{i}", i)
    assert len(d.get_keys()) == 10
    assert len(d.get_keys(3)) == 3
    assert d.get_keys(1) == ["k9"]  # most recently used first
    d.flush_all()
    assert d.get_keys(0) == []
    d.set("live", 1)  # a write frees up to two expired items at the LRU tail, as nginx does
    assert d.flush_expired(4) == 4
    assert d.flush_expired() == 4
    assert d.flush_expired() == 0
    assert d.get_keys(0) == ["live"]
    for i in range(1100):
        d.set(f"m{i}", 1)
    assert len(d.get_keys()) == 1024 and len(d.get_keys(0)) == 1101


def test_key_and_argument_checks(d: SharedDict) -> None:
    with pytest.raises(ValueError, match="empty key"):
        d.get("")
    with pytest.raises(ValueError, match="key too long"):
        d.set("k" * 65536, 1)
    d.set("k" * 65535, 1)
    assert d.get("k" * 65535) == 1
    with pytest.raises(TypeError):
        d.get(12)
    with pytest.raises(ValueError, match="exptime"):
        d.set("k", 1, -1)
    with pytest.raises(ValueError, match="flags"):
        d.set("k", 1, 0, -1)
    with pytest.raises(TypeError):
        d.set("k", object())
    with pytest.raises(ValueError):
        d.set("k", 1 << 64)
    with pytest.raises(ValueError):
        d.get_keys(-1)


def test_long_keys_and_values_span_chunks(d: SharedDict) -> None:
    for klen in (1, 23, 24, 25, 83, 84, 85, 300):
        key = "k" * klen
        d.set(key, 41)
        assert d.incr(key, 1) == 42  # the number may straddle two chunks
        for vlen in (0, 1, 59, 60, 61, 1000):
            d.set(key, "v" * vlen)
            assert d.get(key) == "v" * vlen


def test_memory_and_eviction(d: SharedDict) -> None:
    cap = d.capacity()
    assert cap == 256 * 1024
    free = d.free_space()
    d.set("a", "x" * 1000)
    assert d.free_space() < free
    d.delete("a")
    assert d.free_space() == free
    with pytest.raises(errors.NoMemoryError, match="^no memory$"):
        d.set("huge", b"x" * cap)
    with pytest.raises(errors.NoMemoryError):
        d.safe_set("huge", b"x" * cap)
    forcible = False
    for i in range(2000):
        forcible = d.set(f"k{i}", "v" * 200) or forcible
    assert forcible
    assert d.get("k1999") == "v" * 200 and d.get("k0") is None  # least recently used went first
    keys = set(d.get_keys(0))
    with pytest.raises(errors.NoMemoryError):
        d.safe_set("new", "v" * 200)
    assert set(d.get_keys(0)) == keys  # a failed write changes nothing


def test_get_refreshes_lru(d: SharedDict) -> None:
    d.set("keep", "v" * 200)
    for i in range(2000):
        d.set(f"k{i}", "v" * 200)
        d.get("keep")
    assert d.get("keep") == "v" * 200


def test_python_niceties(d: SharedDict) -> None:
    d["a"] = 1
    assert d["a"] == 1 and "a" in d and "b" not in d
    with pytest.raises(KeyError):
        d["b"]
    del d["a"]
    assert "a" not in d


def test_ngx_shared_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    zone = shdict.create("cats", 16384)
    try:
        monkeypatch.setattr(core.RT, "shdicts", {"cats": zone})
        cats = pyngx.shared.cats
        assert cats is pyngx.shared["cats"]
        cats.set("n", 1)
        assert pyngx.shared.cats.get("n") == 1
        assert "cats" in pyngx.shared and list(pyngx.shared) == ["cats"]
        with pytest.raises(AttributeError):
            pyngx.shared.dogs  # noqa: B018
        with pytest.raises(KeyError):
            pyngx.shared["dogs"]
    finally:
        zone.close()


def test_statistics(d: SharedDict) -> None:
    d.set("a", 1)
    stats = d._zone.statistics()
    assert stats["capacity"] == 256 * 1024 and stats["items"] == 1
    assert stats["free"] == d.free_space()


def test_reentering_the_lock_raises_instead_of_hanging(d: SharedDict) -> None:
    d.set("a", 1)
    region = d._zone._r
    region.lock()  # as a finalizer running inside a shared dict call would find it
    try:
        with pytest.raises(RuntimeError, match="re-entered"):
            d.get("a")
        with pytest.raises(RuntimeError, match="re-entered"):
            d.llen("a")
    finally:
        region.unlock()
    assert d.get("a") == 1


def test_threads_take_turns(d: SharedDict) -> None:
    import threading

    def work() -> None:
        for i in range(2000):
            d.incr("n", 1, 0)
            if i % 10 == 0:
                d.lpush("l", 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert d.get("n") == 8000 and d.llen("l") == 800


@pytest.mark.parametrize("engine", ENGINES)
def test_swap_turns_one_key_into_another_in_its_room(engine: str) -> None:
    """Zone.swap (the event log's spare → tombstone): one step, so a full zone still has room."""
    zone = shdict.create("swap", 64 * 1024, engine)
    try:
        zone.safe_add("spare", b"")
        i = 0
        while True:  # fill every chunk but the spare's
            try:
                zone.safe_add(f"k{i}", "v" * 10)
            except errors.NoMemoryError:
                break
            i += 1
        assert zone.free_space() == 0
        with pytest.raises(errors.NoMemoryError):
            zone.safe_add("record", b"\xc0")
        with pytest.raises(errors.KeyExistsError):
            zone.swap("spare", "k0", b"\xc0")  # nothing changes
        assert zone.get("spare") == b"" and zone.get("k0") == "v" * 10
        with pytest.raises(errors.NoMemoryError):
            zone.swap("spare", "record", b"x" * 500)  # does not fit in the spare's room: nothing changes
        assert zone.get("spare") == b"" and zone.get("record") is None
        zone.swap("spare", "record", b"\xc0")
        assert zone.get("spare") is None and zone.get("record") == b"\xc0"
        zone.check()
    finally:
        zone.close()
