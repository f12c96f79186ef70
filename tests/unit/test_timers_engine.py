"""The timer engine and its facade in a plain uvloop loop (no daemon)."""
from __future__ import annotations

import asyncio
import contextvars
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pyngx as ngx
from pyngx import log
from pyngx.errors import ProcessExitingError, TooManyTimersError, WrongContextError
from pyngx.runtime import core, lifecycle, phase, state, timers, treelock
from pyngx.runtime import loop as loops


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[Path]:
    """Send the error log to a file at info level for the test, then put it back."""
    path = tmp_path / "error.log"
    old_path, old_level = log.error_log.path, log.error_log.level
    log.error_log.open(str(path), log.INFO)
    yield path
    log.error_log.open(old_path, old_level)


@pytest.fixture
def run() -> Iterator[Callable[..., Any]]:
    """run(async_fn, max_pending=1024, max_running=256): a fresh loop and engine per call."""
    loops_made: list[asyncio.AbstractEventLoop] = []

    def go(fn: Callable[[], Awaitable[Any]], max_pending: int = 1024, max_running: int = 256) -> Any:
        loop = loops.new_loop()
        loops_made.append(loop)
        rt = core.Runtime(None, state.WORKER, loop)
        previous = core.install(rt)

        async def main() -> Any:
            rt.timers = timers.start(rt, max_pending, max_running)
            return await asyncio.wait_for(fn(), 20)

        try:
            return loop.run_until_complete(main())
        finally:
            if rt.timers is not None:
                rt.timers.final(False)
            loop.run_until_complete(asyncio.sleep(0.01))  # let cancelled callbacks finish
            core.install(previous)

    yield go
    for loop in loops_made:
        loop.close()
    asyncio.set_event_loop(None)


async def wait_idle() -> None:
    """Until no timer of the current runtime is pending or running."""
    engine = core.RT.timers
    if engine is not None:
        await engine.wait_idle()


def statistics() -> dict[str, Any]:
    return timers.statistics(core.RT.timers)


async def until(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    """Let the loop run until PRED() holds: a deadline, not a margin that a loaded machine can miss."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "the condition did not hold in time"
        await asyncio.sleep(0.001)


def test_at_zero_runs_next_turn_with_args_and_timer_phase(run: Callable[..., Any]) -> None:
    seen: list[Any] = []

    async def main() -> None:
        ngx.timer.at(0, lambda premature, a, b: seen.append((premature, a, b, phase.current())), 1, "x")
        assert seen == []  # not before the next loop turn
        assert ngx.timer.pending_count() == 1
        await wait_idle()

    run(main)
    assert seen == [(False, 1, "x", phase.TIMER)]


def test_order_and_delays(run: Callable[..., Any]) -> None:
    seen: list[str] = []

    async def main() -> None:
        t0 = time.monotonic()
        ngx.timer.at(0.05, lambda p: seen.append("late"))
        ngx.timer.at(0.01, lambda p: seen.append("soon"))
        ngx.timer.at(0, lambda p: seen.append("now"))
        await wait_idle()
        assert time.monotonic() - t0 >= 0.045

    run(main)
    assert seen == ["now", "soon", "late"]


def test_cancel(run: Callable[..., Any]) -> None:
    seen: list[int] = []

    async def main() -> None:
        a = ngx.timer.at(0.01, seen.append)
        b = ngx.timer.at(0, seen.append)
        c = ngx.timer.at(0.02, seen.append)
        assert a.cancel() is True and a.cancel() is False
        assert b.cancel() is True
        assert ngx.timer.pending_count() == 1
        await wait_idle()
        assert c.cancel() is False  # already ran

    run(main)
    assert seen == [False]


def test_async_callback_counts_as_running_while_it_awaits(run: Callable[..., Any]) -> None:
    seen: list[Any] = []

    async def job(premature: bool) -> None:
        seen.append(("in", ngx.timer.running_count(), phase.current()))
        await release
        seen.append("out")

    async def main() -> None:
        nonlocal release
        release = asyncio.get_running_loop().create_future()
        ngx.timer.at(0, job)
        await until(lambda: seen)
        assert ngx.timer.running_count() == 1 and ngx.timer.pending_count() == 0
        release.set_result(None)
        await wait_idle()
        assert ngx.timer.running_count() == 0

    release: asyncio.Future[None]
    run(main)
    assert seen == [("in", 1, phase.TIMER), "out"]


def test_bad_arguments(run: Callable[..., Any]) -> None:
    async def main() -> None:
        for bad in (-1, -0.001, math.nan):
            with pytest.raises(ValueError):
                ngx.timer.at(bad, print)
        for bad in (0, -1, math.nan):
            with pytest.raises(ValueError):
                ngx.timer.every(bad, print)
        with pytest.raises(TypeError):
            ngx.timer.at(0, "not callable")
        with pytest.raises(ValueError):
            ngx.timer.every(1, print, unique="")
        assert ngx.timer.pending_count() == 0

    run(main)


def test_no_engine_and_init_phase_are_wrong_context() -> None:
    assert core.RT.timers is None
    with pytest.raises(WrongContextError, match="ngx.timer.at"):
        ngx.timer.at(0, print)
    assert ngx.timer.pending_count() == 0 and ngx.timer.running_count() == 0


def test_pending_limit(run: Callable[..., Any]) -> None:
    async def main() -> None:
        kept = [ngx.timer.at(1, print) for _ in range(10)]
        with pytest.raises(TooManyTimersError, match="^too many pending timers$"):
            ngx.timer.at(0, print)
        with pytest.raises(TooManyTimersError):
            ngx.timer.every(1, print)
        assert ngx.timer.pending_count() == 10
        kept[0].cancel()
        ngx.timer.at(0, print).cancel()  # a cancelled timer frees its place

    run(main, max_pending=10)


def test_over_the_running_limit_timers_wait_and_all_run(run: Callable[..., Any], errlog: Path) -> None:
    done: list[int] = []
    peak = [0]

    async def job(premature: bool, i: int) -> None:
        peak[0] = max(peak[0], ngx.timer.running_count())
        await ngx.sleep(0.01)
        done.append(i)

    async def main() -> dict[str, Any]:
        for i in range(300):
            ngx.timer.at(0, job, i)
        await wait_idle()
        return statistics()

    stats = run(main, max_running=256)
    assert sorted(done) == list(range(300))  # OpenResty drops 44 of them
    assert peak[0] == 256
    assert stats["waited_for_slot"] == 44 and stats["fired"] == 300
    text = errlog.read_text()
    assert text.count("python_max_running_timers (256) are not enough") == 1
    assert "44 expired timers waited for a free running slot" in text


def test_one_warning_per_burst(run: Callable[..., Any], errlog: Path) -> None:
    async def job(premature: bool) -> None:
        await ngx.sleep(0.01)

    async def main() -> None:
        for _burst in range(2):
            for _ in range(5):
                ngx.timer.at(0, job)
            await wait_idle()

    run(main, max_running=2)
    assert errlog.read_text().count("are not enough") == 2


def test_every_keeps_a_fixed_grid(run: Callable[..., Any]) -> None:
    stamps: list[float] = []
    dues: list[float] = []
    holder: list[Any] = []

    def job(premature: bool) -> None:
        stamps.append(asyncio.get_running_loop().time() - start[0])
        dues.append(holder[0].due)  # the next due time, already planned
        time.sleep(0.008)  # a run that takes time must not push the grid

    start = [0.0]

    async def main() -> None:
        start[0] = asyncio.get_running_loop().time()
        holder.append(ngx.timer.every(0.02, job))
        await until(lambda: len(stamps) >= 4)
        assert holder[0].cancel() is True
        assert ngx.timer.pending_count() == 0

    run(main)
    assert len(stamps) >= 3
    for due in dues:  # due times are start + k * interval, never k * (interval + run time)
        k = (due - dues[0]) / 0.02
        assert abs(k - round(k)) < 1e-6, dues
    assert stamps[0] >= 0.019  # the first run is one interval after every()


def test_every_never_overlaps_itself(run: Callable[..., Any]) -> None:
    active = [0]
    overlap = [False]
    runs = [0]

    async def slow(premature: bool) -> None:
        active[0] += 1
        overlap[0] |= active[0] > 1
        runs[0] += 1
        await ngx.sleep(0.045)  # longer than two intervals
        active[0] -= 1

    async def main() -> dict[str, Any]:
        t = ngx.timer.every(0.02, slow)
        await until(lambda: runs[0] >= 3)
        t.cancel()
        await wait_idle()
        return statistics()

    stats = run(main)
    assert not overlap[0] and runs[0] == 3
    assert stats["skipped_overlap"] >= 2


def test_every_cancelled_from_its_own_callback(run: Callable[..., Any]) -> None:
    runs: list[int] = []

    def job(premature: bool) -> None:
        runs.append(1)
        if len(runs) == 3:
            assert holder[0].cancel() is True

    holder: list[Any] = []

    async def main() -> None:
        holder.append(ngx.timer.every(0.005, job))
        await wait_idle()

    run(main)
    assert len(runs) == 3


def test_exception_is_logged_with_traceback_and_the_loop_carries_on(run: Callable[..., Any], errlog: Path) -> None:
    seen: list[str] = []
    code = compile("def broken(premature):\n    x = 1\n    raise RuntimeError('boom')\n", "conf/pyngx.conf", "exec")
    namespace: dict[str, Any] = {}
    exec(code, namespace)

    async def abroken(premature: bool) -> None:
        await ngx.sleep(0)
        raise KeyError("akey")

    async def main() -> dict[str, Any]:
        ngx.timer.at(0, namespace["broken"])
        ngx.timer.at(0, abroken)
        ngx.timer.at(0.01, lambda p: seen.append("after"))
        await wait_idle()
        return statistics()

    stats = run(main)
    assert seen == ["after"] and stats["failed"] == 2
    text = errlog.read_text()
    assert "[error]" in text and "timer callback broken (conf/pyngx.conf:1) failed" in text
    assert 'File "conf/pyngx.conf", line 3, in broken' in text and "RuntimeError: boom" in text
    assert "KeyError: 'akey'" in text
    assert "runtime/timers.py" not in text.split("broken (conf")[1].split("RuntimeError")[0]


def test_ngx_exit_ends_a_callback_quietly(run: Callable[..., Any], errlog: Path) -> None:
    """OpenResty allows ngx.exit in the timer context: it ends the callback, not the process."""
    seen: list[str] = []

    def plain(premature: bool) -> None:
        seen.append("plain")
        ngx.exit(ngx.HTTP_OK)
        seen.append("plain after exit")

    async def awaiting(premature: bool) -> None:
        await ngx.sleep(0)
        seen.append("async")
        ngx.exit(0)
        seen.append("async after exit")

    def every(premature: bool) -> None:
        seen.append("every")
        if seen.count("every") == 3:
            handle.cancel()
        ngx.exit(0)

    async def main() -> dict[str, Any]:
        nonlocal handle
        ngx.timer.at(0, plain)  # the at(0) fast path
        ngx.timer.at(0.001, plain)  # a timer on the loop's clock
        ngx.timer.at(0, awaiting)
        handle = ngx.timer.every(0.001, every)
        await wait_idle()
        return statistics()

    handle: Any = None
    stats = run(main)
    assert sorted(seen) == ["async", "every", "every", "every", "plain", "plain"]
    assert stats["failed"] == 0 and stats["running"] == 0 and stats["pending"] == 0
    assert "[error]" not in errlog.read_text()


class NotAnException(BaseException):
    """What a careless callback might raise: not caught by ``except Exception``."""


def test_a_callback_raising_a_base_exception_is_logged_and_the_rest_run(run: Callable[..., Any], errlog: Path) -> None:
    seen: list[str] = []

    def odd(premature: bool) -> None:
        raise NotAnException("odd")

    def cancelled(premature: bool) -> None:
        raise asyncio.CancelledError()

    async def main() -> dict[str, Any]:
        for fn in (odd, cancelled):
            ngx.timer.at(0, fn)  # the at(0) fast path
            ngx.timer.at(0.001, fn)  # a timer on the loop's clock
        ngx.timer.at(0, lambda p: seen.append("next"))
        ngx.timer.at(0.002, lambda p: seen.append("later"))
        await wait_idle()
        return statistics()

    stats = run(main)
    assert seen == ["next", "later"]
    assert stats["failed"] == 4 and stats["running"] == 0 and stats["pending"] == 0
    text = errlog.read_text()
    # the same failure twice within the repeat interval: one traceback (the count follows later)
    assert text.count("NotAnException: odd") == 1 and text.count("\nasyncio.exceptions.CancelledError") == 1


def test_callbacks_do_not_see_the_creators_context(run: Callable[..., Any]) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    async def main() -> None:
        var.set("the request")
        token = phase.set(phase.CONTENT)
        ngx.timer.at(0, lambda p: seen.append(var.get() + "/" + str(phase.current())))
        phase.reset(token)
        await wait_idle()

    run(main)
    assert seen == ["none/timer"]


def test_plain_callback_returning_a_coroutine_is_awaited(run: Callable[..., Any]) -> None:
    seen: list[str] = []

    async def inner() -> None:
        await ngx.sleep(0)
        seen.append("awaited")

    async def main() -> None:
        ngx.timer.at(0, lambda p: inner())
        await wait_idle()

    run(main)
    assert seen == ["awaited"]


def test_graceful_exit_fires_pending_timers_premature(run: Callable[..., Any]) -> None:
    seen: list[tuple[str, bool, bool]] = []

    def rec(name: str) -> Callable[[bool], None]:
        return lambda premature: seen.append((name, premature, ngx.worker.exiting()))

    async def main() -> None:
        ngx.timer.at(100, rec("at"))
        ngx.timer.at(0, rec("now"))
        ngx.timer.every(100, rec("every"))
        await lifecycle.graceful(5)
        with pytest.raises(ProcessExitingError, match="^process exiting$"):
            ngx.timer.at(0, print)
        with pytest.raises(ProcessExitingError):
            ngx.timer.every(1, print)
        assert ngx.timer.pending_count() == 0

    run(main)
    assert sorted(seen) == [("at", True, True), ("every", True, True), ("now", True, True)]


def test_graceful_exit_waits_for_running_and_runs_a_running_every_once_more(run: Callable[..., Any]) -> None:
    seen: list[Any] = []

    async def job(premature: bool) -> None:
        seen.append(("start", premature))
        await ngx.sleep(0.03)
        seen.append(("end", premature))

    async def main() -> None:
        ngx.timer.every(0.01, job)
        await until(lambda: seen)  # the first run is going
        await lifecycle.graceful(5)

    run(main)
    assert seen == [("start", False), ("end", False), ("start", True), ("end", True)]


def test_shutdown_timeout_cancels_a_stuck_callback(run: Callable[..., Any], errlog: Path) -> None:
    seen: list[str] = []

    async def stuck(premature: bool) -> None:
        try:
            await ngx.sleep(3600)
        finally:
            seen.append("cleaned up")

    async def main() -> dict[str, Any]:
        ngx.timer.at(0, stuck)
        await until(lambda: ngx.timer.running_count() == 1)
        t0 = time.monotonic()
        await lifecycle.graceful(0.1)
        assert time.monotonic() - t0 < 2
        return statistics()

    stats = run(main)
    assert seen == ["cleaned up"] and stats["cancelled_at_exit"] == 1
    assert "timer callback test_shutdown_timeout_cancels_a_stuck_callback.<locals>.stuck" in errlog.read_text()
    assert "still running at worker_shutdown_timeout, cancelled" in errlog.read_text()


def test_fast_stop_runs_none(run: Callable[..., Any]) -> None:
    seen: list[bool] = []

    async def main() -> None:
        ngx.timer.at(0, seen.append)
        ngx.timer.at(0.01, seen.append)
        ngx.timer.every(0.01, seen.append)
        lifecycle.final(False)
        await asyncio.sleep(0.05)
        assert ngx.timer.pending_count() == 0

    run(main)
    assert seen == []


def test_waiting_timers_run_at_exit_without_waiting_for_a_slot(run: Callable[..., Any]) -> None:
    seen: list[tuple[int, bool]] = []

    async def job(premature: bool, i: int) -> None:
        await ngx.sleep(0.02)
        seen.append((i, premature))

    async def main() -> None:
        for i in range(4):
            ngx.timer.at(0, job, i)
        ngx.timer.at(50, job, 9)
        await until(lambda: statistics()["waiting_for_slot"] == 2)  # 0 and 1 run, 2 and 3 wait for a slot
        assert ngx.timer.running_count() == 2
        await lifecycle.graceful(5)

    run(main, max_running=2)
    assert sorted(seen) == [(0, False), (1, False), (2, False), (3, False), (9, True)]


def _hold_lock_in_child(name: str) -> tuple[int, int]:
    """Fork a process that holds NAME's unique lock until its pipe closes; (pid, write end)."""
    rd, wr = os.pipe()
    ready_rd, ready_wr = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(wr)
            assert treelock.try_lock(name)
            os.write(ready_wr, b"1")
            os.read(rd, 1)
        finally:
            os._exit(0)
    os.close(rd)
    os.close(ready_wr)
    assert os.read(ready_rd, 1) == b"1"
    os.close(ready_rd)
    return pid, wr


def test_unique_runs_only_in_the_holder_and_fails_over(run: Callable[..., Any], errlog: Path) -> None:
    pid, wr = _hold_lock_in_child("job")  # another process of the tree holds "job"
    runs: list[float] = []
    try:
        async def main() -> dict[str, Any]:
            loop = asyncio.get_running_loop()
            twin = ngx.timer.every(0.02, lambda p: runs.append(-1), unique="job")  # same name, same process
            ngx.timer.every(0.02, lambda p: runs.append(loop.time()), unique="job")
            twin.cancel()
            await asyncio.sleep(0.1)
            assert runs == []  # the other process holds the job
            os.close(wr)  # the holder exits: the kernel frees its lock
            os.waitpid(pid, 0)
            gone = loop.time()
            while not runs and loop.time() - gone < 2:
                await asyncio.sleep(0.005)
            # taken over at the next due time: within one interval (0.02), plus what a
            # loaded machine adds to a loop turn
            assert runs and runs[0] - gone <= 0.1
            return statistics()

        stats = run(main)
    finally:
        try:
            os.close(wr)
        except OSError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    assert stats["unique_held"] == ["job"]
    assert -1 not in runs
    assert 'timer "job" runs in this process now' in errlog.read_text()


def test_unique_in_one_process_runs_one_of_two_timers(run: Callable[..., Any]) -> None:
    runs: list[str] = []

    async def main() -> None:
        a = ngx.timer.every(0.01, lambda p: runs.append("a"), unique="same")
        ngx.timer.every(0.01, lambda p: runs.append("b"), unique="same")
        await until(lambda: len(runs) >= 3)
        assert set(runs) == {"a"}
        a.cancel()  # the holder goes: the other takes over
        await until(lambda: runs[-1] == "b")

    run(main)
    assert runs[-1] == "b"


def test_unique_non_holder_does_not_run_at_exit(run: Callable[..., Any]) -> None:
    pid, wr = _hold_lock_in_child("exitjob")
    seen: list[bool] = []
    try:
        async def main() -> None:
            ngx.timer.every(100, seen.append, unique="exitjob")
            await lifecycle.graceful(5)

        run(main)
    finally:
        os.close(wr)
        os.waitpid(pid, 0)
    assert seen == []


def test_wait_idle_and_statistics_without_setup() -> None:
    assert statistics() == {"pending": 0, "running": 0}
    asyncio.run(wait_idle())
    asyncio.set_event_loop(None)


def test_timer_repr_and_module() -> None:
    assert ngx.timer.Timer.__module__ == "pyngx.timer"


def test_a_callback_with_the_wrong_arguments_is_one_log_line(run: Callable[..., Any], errlog: Path) -> None:
    def no_args() -> None:
        pass

    async def main() -> None:
        ngx.timer.at(0, no_args)
        await wait_idle()

    run(main)
    text = errlog.read_text()
    assert "no_args() takes 0 positional arguments but 1 was given" in text
    assert "Traceback" not in text and "runtime/timers.py" not in text


def test_a_zero_shutdown_timeout_runs_nothing_after_the_end(run: Callable[..., Any]) -> None:
    seen: list[bool] = []

    async def main() -> None:
        ngx.timer.at(60, seen.append)
        lifecycle.begin()  # the flush is planned for the next turn...
        lifecycle.final(False)  # ...but the process ends first
        await asyncio.sleep(0.02)
        assert ngx.timer.pending_count() == 0

    run(main)
    assert seen == []


def test_a_stuck_every_gets_no_premature_run_after_the_timeout(run: Callable[..., Any]) -> None:
    seen: list[bool] = []

    async def job(premature: bool) -> None:
        seen.append(premature)
        await ngx.sleep(3600)

    async def main() -> None:
        ngx.timer.every(0.005, job)
        while not seen:
            await asyncio.sleep(0.005)
        await lifecycle.graceful(0.05)
        await asyncio.sleep(0.02)

    run(main)
    assert seen == [False]
