"""The event log under real concurrency: forked processes post and read one zone
at the same time; every process must see every event once, in one order."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pyngx.errors import NoMemoryError
from pyngx.runtime.eventbus import Registry
from pyngx.runtime.eventlog import Bus, Settings

try:
    from pyngx.shm import shdict as _shdict
except ImportError:  # pragma: no cover
    _shdict = None  # type: ignore[assignment]

PROCS = 3
READY = "test:ready"


def child(zone: Any, me: int, posts: int, poll_every: int, out: Path) -> None:
    """One process: join, wait for the others, post while reading, write what it saw."""
    seen: list[Any] = []
    reg = Registry()
    reg.add(lambda data, event, source, pid: seen.append(data), False, "t", ())
    bus = Bus(zone, "ev", Settings(), reg, pid=me, peers=lambda: range(1, PROCS + 1))
    bus.join()
    zone.incr(READY, 1)
    while zone.get(READY) < PROCS:
        time.sleep(0.001)
    refused = 0
    i = 0
    deadline = time.monotonic() + 60
    while i < posts and time.monotonic() < deadline:
        try:
            bus.post("t", "e", [me, i], None)
        except NoMemoryError:  # the others have not read enough yet: read, then retry
            refused += 1
            bus.poll()
            time.sleep(0.0005)
            continue
        i += 1
        if poll_every and i % poll_every == 0:
            bus.poll()
    deadline = time.monotonic() + 60
    while len(seen) < PROCS * posts and time.monotonic() < deadline:
        bus.poll()
        time.sleep(0.001)
    out.write_bytes(msgpack.packb({"seen": seen, "refused": refused, "lost": bus.stats["lost"]}))


@pytest.mark.parametrize(("zone_size", "poll_every"), [(4 << 20, 97), (64 << 10, 0)])
def test_forked_processes_agree_on_every_event(tmp_path: Path, zone_size: int, poll_every: int) -> None:
    if _shdict is None or not hasattr(_shdict, "create"):
        pytest.skip("shared dict zones are not there yet")
    zone = _shdict.create("ev", zone_size)
    zone.safe_add(READY, 0)
    posts = 4000
    pids = []
    try:
        for me in range(1, PROCS + 1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    child(zone, me, posts, poll_every, tmp_path / f"out-{me}")
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in list(pids):
            _, status = os.waitpid(pid, 0)
            pids.remove(pid)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        for pid in pids:  # a failed test leaves no process behind
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        zone.close()
    reports = [msgpack.unpackb((tmp_path / f"out-{me}").read_bytes()) for me in range(1, PROCS + 1)]
    first = reports[0]["seen"]
    assert len(first) == PROCS * posts
    assert sorted(map(tuple, first)) == sorted((me, i) for me in range(1, PROCS + 1) for i in range(posts))
    for report in reports:
        assert report["seen"] == first
        assert report["lost"] == 0
    for me in range(1, PROCS + 1):  # each sender's events keep their order
        assert [i for who, i in first if who == me] == list(range(posts))
    if not poll_every:
        assert sum(r["refused"] for r in reports) > 0  # the small zone did push back
