"""Shared dict zones across processes: atomic incr, and holders killed mid-operation.

The master's part is played by the test: it reaps a killed child and calls
zone.force_unlock(pid), as pyngx.proc.master does for every zone.
"""
from __future__ import annotations

import os
import random
import select
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from pyngx import errors
from pyngx.shm import shdict
from pyngx.shm.zone import H_LRU_TAIL

ENGINES = ["c", "py"] if shdict.c_available() else ["py"]


def fork(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:  # noqa: BLE001 - report through the exit code
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def zone(engine: str) -> Iterator[shdict.Zone]:
    z = shdict.create("procs", 64 * 1024, engine)
    yield z
    z.check()
    z.close()


def test_two_processes_incr_exactly(zone: shdict.Zone, engine: str) -> None:
    n = 100_000 if engine == "c" else 20_000  # the same code path; the fallback is ~50x slower

    def work() -> None:
        for _ in range(n):
            zone.incr("n", 1, 0)

    pids = [fork(work), fork(work)]
    assert [reap(p) for p in pids] == [0, 0]
    assert zone.get("n") == 2 * n


def _hammer(zone: shdict.Zone, seed: int) -> Callable[[], None]:
    def body() -> None:
        rnd = random.Random(seed)
        while True:
            key = f"k{rnd.randrange(40)}"
            value = "v" * rnd.choice([4, 100, 1500, 3000])
            try:
                r = rnd.random()
                if r < 0.4:
                    zone.set(key, value, rnd.choice([0, 0.002]))
                elif r < 0.55:
                    zone.incr("count" + key, 1, 0)
                elif r < 0.7:
                    if zone.llen("list" + key) < 20:  # bounded, so a big zone never evicts
                        zone.rpush("list" + key, value[:100])
                elif r < 0.8:
                    zone.lpop("list" + key)
                elif r < 0.9:
                    zone.get(key)
                elif r < 0.95:
                    zone.delete(key)
                else:
                    zone.flush_expired(3)
            except errors.NoMemoryError:
                pass
    return body


def _kill_rounds(zone: shdict.Zone, rounds: int, n_hammers: int = 2) -> int:
    """Keep N_HAMMERS hammering children, SIGKILL one at a random moment each round; the
    test plays the master: reap, force_unlock(pid), check the structure, start a new one."""
    rnd = random.Random(rounds)
    hammers = [fork(_hammer(zone, i)) for i in range(n_hammers)]
    recovered = 0
    try:
        for round_ in range(rounds):
            time.sleep(rnd.uniform(0.001, 0.02))  # a random moment to kill at, not a wait for a result
            victim = hammers.pop(0)
            os.kill(victim, signal.SIGKILL)
            assert reap(victim) == -signal.SIGKILL
            recovered += zone.force_unlock(victim)
            zone.check()
            hammers.append(fork(_hammer(zone, 100 + round_)))
    finally:
        for pid in hammers:
            os.kill(pid, signal.SIGKILL)
            reap(pid)
            zone.force_unlock(pid)
    return recovered


def test_killed_holders_in_a_full_zone_leave_it_whole(zone: shdict.Zone) -> None:
    # The 64k zone evicts all the time, so kills land in multi-step writes. One hammer, never
    # waiting for the lock, is killed mid-write most often: a kill between pack_into's zeroing
    # and its store (the bug this guards against) showed within 300 rounds in 2 runs of 3.
    _kill_rounds(zone, 400, n_hammers=1)
    zone.check()
    zone.set("after", 1)
    assert zone.get("after") == 1


def test_others_carry_on_exactly_while_holders_die(engine: str) -> None:
    zone = shdict.create("big", 512 * 1024, engine)  # roomy: nothing is evicted, so counts are exact
    stop_r, stop_w = os.pipe()

    def survivor() -> None:
        """Counts its own incr calls until the pipe closes; the zone must agree."""
        os.close(stop_w)
        done = 0
        while not (done % 500 == 0 and select.select([stop_r], [], [], 0)[0]):
            zone.incr("survivor", 1, 0)
            done += 1
        assert zone.get("survivor") == done, (zone.get("survivor"), done)

    keeper = fork(survivor)
    os.close(stop_r)
    try:
        _kill_rounds(zone, 20)
    finally:
        os.close(stop_w)
        code = reap(keeper)
        zone.check()
        zone.close()
    assert code == 0


def _die_mid_store(zone: shdict.Zone) -> None:
    """Take the lock, do half of a multi-step write (evictions, unlinks), then die."""
    zone._r.lock()
    zone._store_locked(shdict.SET, False, b"new", 2, b"x" * 3000, 0.0, 0)
    zone._it.remove_item(zone._r.r32(H_LRU_TAIL))  # also drop the LRU tail, uncommitted
    os.kill(os.getpid(), signal.SIGKILL)


def _fill(zone: shdict.Zone) -> dict[str, str]:
    data = {f"k{i}": f"value-{i}" * 20 for i in range(200)}
    for k, v in data.items():
        zone.set(k, v)
    return data


def test_force_unlock_undoes_the_dead_holders_step(zone: shdict.Zone) -> None:
    data = _fill(zone)
    before = sorted(zone.get_keys(0))
    pid = fork(lambda: _die_mid_store(zone))
    assert reap(pid) == -signal.SIGKILL
    assert zone.force_unlock(os.getpid()) is False  # not the holder
    assert zone.force_unlock(pid) is True
    assert zone.force_unlock(pid) is False
    zone.check()
    assert sorted(zone.get_keys(0)) == before
    assert zone.get("new") is None
    assert all(zone.get(k) == v for k, v in data.items())


def test_next_locker_recovers_without_a_master(zone: shdict.Zone) -> None:
    data = _fill(zone)
    pid = fork(lambda: _die_mid_store(zone))
    assert reap(pid) == -signal.SIGKILL
    # nobody calls force_unlock: the next locker finds the holder gone and undoes its step
    assert zone.get("k5") == data["k5"]
    zone.check()
    assert zone.get("new") is None and len(zone.get_keys(0)) == len(data)


def test_killed_in_place_rewrites_leave_whole_values(zone: shdict.Zone) -> None:
    """A value rewritten in its own chunks (same size: no allocation) is journaled word by
    word; a holder killed half-way must leave the old value, never a mix of old and new."""
    keys = [f"k{i}" for i in range(8)]
    for k in keys:
        zone.set(k, "a" * 40, 0, 1)

    def rewriter(seed: int) -> Callable[[], None]:
        def body() -> None:
            rnd = random.Random(seed)
            while True:
                c = rnd.choice("abcdef")
                zone.set(rnd.choice(keys), c * 40, 0, ord(c))

        return body

    rnd = random.Random(7)
    hammers: list[int] = []
    try:
        for round_ in range(60):
            hammers = [fork(rewriter(2 * round_ + i)) for i in range(2)]
            time.sleep(rnd.uniform(0.001, 0.01))  # a random moment to kill at, not a wait for a result
            while hammers:  # both die, so what is read next is still
                victim = hammers.pop()
                os.kill(victim, signal.SIGKILL)
                assert reap(victim) == -signal.SIGKILL
                zone.force_unlock(victim)
            for k in keys:
                value, flags = zone.get(k), zone.get_flags(k)
                assert value == value[0] * 40 and (flags == 1 or flags == ord(value[0])), (k, value, flags)
    finally:
        for pid in hammers:
            os.kill(pid, signal.SIGKILL)
            reap(pid)
            zone.force_unlock(pid)
