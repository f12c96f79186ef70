"""Tree-wide named locks (the ``unique=`` of ``every``) between real processes."""
from __future__ import annotations

import os
import signal

from pyngx.runtime import treelock


def _in_child(fn_name: str, name: str) -> bool:
    """Run treelock.FN_NAME(NAME) in a forked child; its result."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(wr, b"1" if getattr(treelock, fn_name)(name) else b"0")
        finally:
            os._exit(0)
    os.close(wr)
    try:
        return os.read(rd, 1) == b"1"
    finally:
        os.close(rd)
        os.waitpid(pid, 0)


def test_one_holder_at_a_time_and_the_holder_may_take_it_again() -> None:
    assert treelock.try_lock("a")
    try:
        assert treelock.try_lock("a")  # POSIX locks do not count: the caller tracks holders
        assert not _in_child("try_lock", "a")
        assert _in_child("try_lock", "b")  # another name is another byte
    finally:
        treelock.unlock("a")
    assert _in_child("try_lock", "a")


def test_a_killed_holder_frees_its_lock() -> None:
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child holds "job" until killed
        treelock.try_lock("job")
        os.write(wr, b"1")
        signal.pause()
        os._exit(0)
    os.close(wr)
    assert os.read(rd, 1) == b"1"
    os.close(rd)
    assert not treelock.try_lock("job")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert treelock.try_lock("job")
    treelock.unlock("job")


def test_names_map_to_distinct_stable_bytes() -> None:
    assert treelock.offset("job") == treelock.offset("job")
    assert len({treelock.offset(f"name{i}") for i in range(1000)}) == 1000
    assert treelock.offset("x") < 2 ** 56
