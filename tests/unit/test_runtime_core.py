"""The process record (runtime/core.py): what a Runtime is made of, how its parts start and stop."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx.conf.model import Config, HttpConf
from pyngx.errors import WrongContextError
from pyngx.proc import cycle as cycles
from pyngx.runtime import core, eventbus, lifecycle, state, tree
from pyngx.runtime import loop as loops


@pytest.fixture
def record() -> Iterator[None]:
    previous = core.RT
    yield
    core.install(previous)


def test_a_plain_record_has_no_parts(record: None) -> None:
    core.install(core.Process(state.MASTER, master_pid=os.getpid()))
    rt = core.RT
    assert (rt.timers, rt.channel, rt.bus, rt.tree, rt.pools, rt.cluster, rt.loop) == (None,) * 7
    assert tuple(rt.servers) == ()
    with pytest.raises(AttributeError):
        rt.timers = object()  # type: ignore[misc] # the master holds no engine
    with pytest.raises(WrongContextError, match="ngx.timer.at"):
        __import__("pyngx").timer.at(0, print)


def test_install_returns_the_record_it_replaces(record: None) -> None:
    first, second = core.Process(state.MASTER), core.Process(state.MASTER)
    core.install(first)
    assert core.install(second) is first and core.RT is second and core.current() is second


def test_a_runtime_is_made_from_its_generation(record: None, tmp_path: Path) -> None:
    config = Config(file=str(tmp_path / "c.conf"), prefix=str(tmp_path), http=HttpConf(), worker_processes=3)
    events = eventbus.Registry()
    cyc = cycles.Cycle(config, 7, globals={"x": 1}, events=events)
    loop = loops.new_loop()
    table = tree.Tree()
    try:
        rt = core.Runtime(cyc, state.WORKER, loop, worker_id=2, worker_count=3, master_pid=1, table=table)
        assert (rt.kind, rt.worker_id, rt.worker_count, rt.master_pid, rt.prefix) == (
            state.WORKER, 2, 3, 1, str(tmp_path))
        assert rt.config is config and rt.generation == 7 and rt.globals is cyc.globals and rt.events is events
        assert rt.cycle is cyc and rt.loop is loop and rt.tree is table and not rt.exiting
        assert rt.timers is None and rt.channel is None  # nothing runs before start()
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_start_makes_the_parts_in_order_and_the_exit_hooks_stop_them(record: None) -> None:
    loop = loops.new_loop()
    table = tree.Tree()
    table.set_generation(1, os.getpid())
    table.add(os.getpid(), state.SINGLE, 0, 1)
    rt = core.Runtime(None, state.SINGLE, loop, worker_id=0, master_pid=os.getpid(), table=table)
    core.install(rt)
    assert rt.STEPS == ("timers", "channel")

    async def main() -> None:
        rt.start(10, 5)
        assert rt.timers is not None and rt.timers.max_pending == 10
        assert rt.channel is not None and not rt.channel.closed
        assert [fn.__self__ for fn in rt.exits.waits] == [rt.timers, rt.channel]  # type: ignore[attr-defined]
        await lifecycle.graceful(2)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert rt.exiting and rt.exits.started
    assert rt.channel is not None and rt.channel.closed
    assert rt.timers is not None and rt.timers.closing
