"""persist=PATH files and rebuild-on-resize: MRU first, expired dropped, bad files refused."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx.shm import shdict

ENGINES = ["c", "py"] if shdict.c_available() else ["py"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def zone(engine: str) -> Iterator[shdict.Zone]:
    z = shdict.create("persist", 256 * 1024, engine)
    yield z
    z.close()


def _fill(zone: shdict.Zone, n: int, size: int = 50) -> list[str]:
    keys = [f"key{i}" for i in range(n)]
    for k in keys:
        zone.set(k, k * (size // len(k) + 1))
    return keys


def test_save_and_load_round_trip(zone: shdict.Zone, engine: str, tmp_path: Path) -> None:
    zone.set("s", "héllo", 0, 3)
    zone.set("b", b"\x00\x01")
    zone.set("i", 42, 500)
    zone.set("f", 1.5)
    zone.set("t", True)
    zone.set("m", {"a": [1, 2]})
    zone.rpush("l", "x")
    zone.rpush("l", 7)
    zone.set("gone", 1)
    zone.delete("gone")
    path = str(tmp_path / "zone.db")
    zone.save(path)
    assert os.listdir(tmp_path) == ["zone.db"]  # no temp file left behind
    other = shdict.create("persist", 256 * 1024, engine)
    try:
        assert other.load(path) == 7
        assert other.get_keys(0) == zone.get_keys(0)  # the same LRU order
        other.check()
        assert other.get("s") == "héllo" and other.get_flags("s") == 3
        assert other.get("b") == b"\x00\x01" and other.get("f") == 1.5 and other.get("t") is True
        assert other.get("m") == {"a": [1, 2]} and other.get("gone") is None
        assert 499 < other.ttl("i") <= 500
        assert other.lpop("l") == "x" and other.lpop("l") == 7
    finally:
        other.close()


def test_expired_items_are_not_loaded(zone: shdict.Zone, engine: str, tmp_path: Path) -> None:
    _fill(zone, 10)
    zone.flush_all()
    zone.set("live", 1)
    path = str(tmp_path / "zone.db")
    zone.save(path)
    other = shdict.create("persist", 256 * 1024, engine)
    try:
        assert other.load(path) == 1
        assert other.get_keys(0) == ["live"]
    finally:
        other.close()


@pytest.mark.parametrize("damage", ["foreign", "empty", "flipped", "truncated"])
def test_bad_files_raise_value_error(zone: shdict.Zone, tmp_path: Path, damage: str) -> None:
    _fill(zone, 20)
    path = tmp_path / "zone.db"
    zone.save(str(path))
    data = path.read_bytes()
    bad = {
        "foreign": b"this is not a zone dump",
        "empty": b"",
        "flipped": data[:40] + bytes([data[40] ^ 1]) + data[41:],
        "truncated": data[:-10],
    }[damage]
    path.write_bytes(bad)
    fresh = shdict.create("persist", 64 * 1024)
    try:
        with pytest.raises(ValueError):
            fresh.load(str(path))
        assert fresh.get_keys(0) == []  # nothing half-loaded
        fresh.check()
    finally:
        fresh.close()


def test_save_replaces_atomically(zone: shdict.Zone, tmp_path: Path) -> None:
    path = tmp_path / "zone.db"
    path.write_bytes(b"old")
    zone.set("k", 1)
    zone.save(str(path))
    assert path.read_bytes().startswith(b"PYNGXSD") and os.listdir(tmp_path) == ["zone.db"]


def test_rebuild_smaller_keeps_most_recent(zone: shdict.Zone) -> None:
    keys = _fill(zone, 2000)
    for k in keys[:10]:
        zone.get(k)  # the oldest ten become the most recently used
    order = zone.get_keys(0)
    small = shdict.rebuild(zone, 32 * 1024)
    try:
        small.check()
        kept = small.get_keys(0)
        assert 100 < len(kept) < len(order)
        assert kept == order[:len(kept)]  # a prefix of the MRU order, in the same order
        assert all(small.get(k) == zone.get(k) for k in keys[:10])
        assert small.capacity() == 32 * 1024
    finally:
        small.close()


def test_rebuild_bigger_keeps_everything_but_expired(zone: shdict.Zone) -> None:
    _fill(zone, 300)
    zone.flush_all()
    keys = _fill(zone, 100, 200)
    zone.incr("n", 5, 0, 100)
    big = shdict.create("persist", 1 << 20, zone.impl)
    try:
        assert big.rebuild(zone, 1 << 20) == 101
        big.check()
        assert sorted(big.get_keys(0)) == sorted(keys + ["n"])
        assert big.incr("n", 1) == 6 and 99 < big.ttl("n") <= 100
    finally:
        big.close()


def test_load_into_a_smaller_zone_keeps_most_recent(zone: shdict.Zone, tmp_path: Path) -> None:
    keys = _fill(zone, 2000)
    path = str(tmp_path / "zone.db")
    zone.save(path)
    small = shdict.create("persist", 16 * 1024, zone.impl)
    try:
        n = small.load(path)
        assert 0 < n < 2000 and small.get_keys(0) == keys[::-1][:n]
        small.check()
    finally:
        small.close()
