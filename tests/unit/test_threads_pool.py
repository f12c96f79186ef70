"""Thread pools: the thread_pool directive, and ngx.run_worker_thread on a real loop (no daemon)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

import support
import pyngx as ngx
from pyngx import conf
from pyngx.runtime import core, phase, threads


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Callable[[], Awaitable[Any]]], Any]]:
    def go(fn: Callable[[], Awaitable[Any]]) -> Any:
        return uvloop.run(fn()) if request.param == "uvloop" else asyncio.run(fn())
    yield go


@pytest.fixture
def pools() -> Iterator[Callable[[str], None]]:
    """Use the thread pools of a config text for the test (a runtime of its own)."""
    with support.as_runtime() as rt:
        def use(text: str, tmp: Path | None = None) -> None:
            rt.config = None
            if text:
                assert tmp is not None
                (tmp / "c.conf").write_text(text)
                rt.config = conf.load("c.conf", str(tmp))
        yield use
        rt.exits.final(False)  # the pools' idle threads end


def test_thread_pool_directive(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("thread_pool io threads=4 max_queue=10;\nworker_stall_warn 50ms;\n"
                                     "worker_stall_timeout off;\n")
    c = conf.load("c.conf", str(tmp_path))
    assert [(p.name, p.threads, p.max_queue) for p in c.thread_pools] == [("default", 32, 65536), ("io", 4, 10)]
    assert (c.worker_stall_warn, c.worker_stall_timeout) == (0.05, None)
    (tmp_path / "c.conf").write_text("thread_pool default threads=2;\n")
    c = conf.load("c.conf", str(tmp_path))
    assert [(p.name, p.threads, p.max_queue) for p in c.thread_pools] == [("default", 2, 65536)]
    assert (c.worker_stall_warn, c.worker_stall_timeout) == (0.2, 60.0)


def test_results_exceptions_and_arguments_cross_the_thread(run: Any, pools: Any) -> None:
    pools("")
    main = threading.get_ident()

    def where(a: int, b: int = 0, *, c: int = 0) -> tuple[bool, int]:
        return threading.get_ident() != main, a + b + c

    def boom() -> None:
        raise KeyError("boom")

    async def body() -> None:
        assert await ngx.run_worker_thread("default", where, 1, 2, c=3) == (True, 6)
        with pytest.raises(KeyError, match="boom") as info:
            await ngx.run_worker_thread("default", boom)
        assert "boom" in "".join(__import__("traceback").format_tb(info.value.__traceback__))
        # the pool's own name may be a keyword of fn
        assert await ngx.run_worker_thread("default", dict, pool=1, fn=2) == {"pool": 1, "fn": 2}
    run(body)


def test_unknown_pool_bad_arguments_and_the_init_phase(run: Any, pools: Any) -> None:
    pools("")

    async def coro() -> None:
        pass

    async def body() -> None:
        with pytest.raises(ngx.Error, match='^thread_pool "nope" not found$'):
            await ngx.run_worker_thread("nope", len, "x")
        with pytest.raises(TypeError, match="function expected"):
            await ngx.run_worker_thread("default", 42)
        with pytest.raises(TypeError, match="plain function"):
            await ngx.run_worker_thread("default", coro)
        token = phase.set(phase.INIT)
        try:
            with pytest.raises(ngx.WrongContextError, match="init_by_python"):
                await ngx.run_worker_thread("default", len, "x")
        finally:
            phase.reset(token)
    run(body)


def test_a_full_queue_refuses_at_once(run: Any, pools: Any, tmp_path: Path) -> None:
    pools("thread_pool small threads=2 max_queue=3;\n", tmp_path)
    gate = threading.Event()

    async def body() -> None:
        calls = [asyncio.ensure_future(ngx.run_worker_thread("small", gate.wait, 5)) for _ in range(5)]
        await asyncio.sleep(0)
        with pytest.raises(ngx.Error, match='^thread pool "small" queue overflow: 3 tasks waiting$'):
            await ngx.run_worker_thread("small", gate.wait, 5)
        stats = threads.statistics()["small"]
        assert (stats.started, stats.in_flight, stats.waiting, stats.rejected) == (2, 5, 3, 1)
        gate.set()
        assert await asyncio.gather(*calls) == [True] * 5
        assert threads.statistics()["small"].in_flight == 0
    run(body)


def test_calls_run_threads_at_a_time(run: Any, pools: Any, tmp_path: Path) -> None:
    """20 calls of 50 ms on 4 threads take about 5 × 50 ms, and the loop keeps turning meanwhile."""
    pools("thread_pool four threads=4;\n", tmp_path)

    async def body() -> None:
        turns = 0

        async def spin() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0.005)

        spinner = asyncio.ensure_future(spin())
        start = time.monotonic()
        await asyncio.gather(*(ngx.run_worker_thread("four", time.sleep, 0.05) for _ in range(20)))
        took = time.monotonic() - start
        spinner.cancel()
        assert 0.25 <= took < 2.0, took
        assert turns >= 20, turns  # the loop was never blocked by the calls
    run(body)
