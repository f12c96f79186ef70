"""pyngx.pipe with real commands, each test body run on uvloop and on the plain asyncio loop."""
from __future__ import annotations

import asyncio
import builtins
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import support
from support import Run
from pyngx import pipe
from pyngx.errors import ClosedError, Error, TimeoutError, WrongContextError
from pyngx.runtime import phase



def test_echo_line_and_exit_status(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["echo", "hello"])
        assert isinstance(proc.pid(), int) and proc.pid() > 0
        assert await proc.stdout_read_line() == b"hello"
        assert await proc.wait() == (True, "exit", 0)
    run(body)


def test_read_line_strips_lf_and_crlf_and_gives_partial_at_eof(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("printf 'one\\r\\ntwo\\nrest'")
        assert await proc.stdout_read_line() == b"one"
        assert await proc.stdout_read_line() == b"two"
        with pytest.raises(ClosedError) as err:
            await proc.stdout_read_line()
        assert str(err.value) == "closed" and err.value.partial == b"rest"  # type: ignore[attr-defined]
        with pytest.raises(ClosedError, match="^closed$"):
            await proc.stdout_read_line()
        await proc.wait()
    run(body)


def test_read_all_then_closed(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sh", "-c", "echo a; echo b"])
        assert await proc.stdout_read_all() == b"a\nb\n"
        with pytest.raises(ClosedError, match="^closed$"):
            await proc.stdout_read_all()
        assert await proc.wait() == (True, "exit", 0)
    run(body)


def test_read_bytes_exact_zero_and_partial(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("printf abcdefg")
        assert await proc.stdout_read_bytes(0) == b""
        assert await proc.stdout_read_bytes(3) == b"abc"
        with pytest.raises(ClosedError) as err:
            await proc.stdout_read_bytes(10)
        assert err.value.partial == b"defg"  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="bad len argument"):
            await proc.stdout_read_bytes(-1)
        await proc.wait()
    run(body)


def test_read_any_returns_at_most_max_then_closed(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("printf 0123456789")
        first = await proc.stdout_read_any(4)
        assert 1 <= len(first) <= 4
        rest = b""
        with pytest.raises(ClosedError):
            while True:
                rest += await proc.stdout_read_any(1000)
        assert first + rest == b"0123456789"
        with pytest.raises(ValueError, match="bad max argument"):
            await proc.stdout_read_any(0)
        await proc.wait()
    run(body)


def test_stderr_separate_and_merged(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("echo out; echo err >&2")
        assert await proc.stderr_read_line() == b"err"
        assert await proc.stdout_read_all() == b"out\n"
        await proc.wait()
        merged = pipe.spawn("echo out; echo err >&2", merge_stderr=True)
        assert await merged.stdout_read_all() == b"out\nerr\n"
        for call in (merged.stderr_read_line(), merged.stderr_read_all(), merged.stderr_read_bytes(1),
                     merged.stderr_read_any(1)):
            with pytest.raises(Error, match="^merged to stdout$"):
                await call
        with pytest.raises(Error, match="^merged to stdout$"):
            merged.shutdown("stderr")
        await merged.wait()
    run(body)


def test_write_shutdown_stdin_and_write_after_shutdown(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["wc", "-c"])
        assert await proc.write("1234" * 2048) == 8192
        assert await proc.write("é") == 2  # str goes as UTF-8
        assert proc.shutdown("stdin") is True
        assert proc.shutdown("stdin") is True  # again: no side effect
        assert (await proc.stdout_read_line()).strip() == b"8194"
        with pytest.raises(ClosedError, match="^closed$"):
            await proc.write(b"x")
        with pytest.raises(ValueError, match="bad shutdown arg"):
            proc.shutdown("sideways")
        await proc.wait()
    run(body)


def test_write_larger_than_the_pipe_while_reading(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["cat"])
        data = os.urandom(1 << 20)
        writer = asyncio.ensure_future(proc.write(data))
        assert await proc.stdout_read_bytes(len(data)) == data
        assert await writer == len(data)
        proc.shutdown("stdin")
        assert await proc.stdout_read_all() == b""
        assert await proc.wait() == (True, "exit", 0)
    run(body)


def test_write_timeout_and_shutdown_aborting_a_write(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])  # never reads its stdin: the pipe fills up
        proc.set_timeouts(write_timeout=0.05)
        with pytest.raises(TimeoutError, match="^timeout$"):
            await proc.write(b"x" * (1 << 20))
        proc.set_timeouts(write_timeout=0)
        writer = asyncio.ensure_future(proc.write(b"x" * (1 << 20)))
        await asyncio.sleep(0.01)
        with pytest.raises(Error, match="^pipe busy writing$"):
            await proc.write(b"y")
        proc.shutdown("stdin")
        with pytest.raises(ClosedError, match="^aborted$"):
            await writer
        proc.kill(signal.SIGKILL)
        await proc.wait()
    run(body)


def test_write_to_a_child_that_exited_is_closed(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["true"])
        await proc.wait()
        with pytest.raises(ClosedError, match="^closed$"):
            await proc.write(b"x" * (1 << 20))
    run(body)


def test_wait_reasons_and_wait_after_wait(run: Run) -> None:
    async def body() -> None:
        assert await pipe.spawn("exit 3").wait() == (False, "exit", 3)
        proc = pipe.spawn("kill -TERM $$")
        assert await proc.wait() == (False, "signal", signal.SIGTERM)
        with pytest.raises(ClosedError, match="^exited$"):
            await proc.wait()
    run(body)


def test_wait_timeout_busy_and_kill(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])
        proc.set_timeouts(wait_timeout=0.05)
        with pytest.raises(TimeoutError, match="^timeout$") as err:
            await proc.wait()
        assert isinstance(err.value, builtins.TimeoutError)
        proc.set_timeouts(None, None, None, 0)
        first = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0)
        with pytest.raises(Error, match="^pipe busy waiting$"):
            await proc.wait()
        assert not first.done()  # the loop kept running while the child sleeps
        assert proc.kill(signal.SIGKILL) is True
        assert await first == (False, "signal", signal.SIGKILL)
        with pytest.raises(ClosedError, match="^exited$"):
            proc.kill(signal.SIGTERM)
    run(body)


def test_kill_bad_signals(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])
        with pytest.raises(Error, match="^invalid signal$"):
            proc.kill(12345)
        with pytest.raises(TypeError):
            proc.kill("TERM")  # type: ignore[arg-type]
        assert proc.kill(0) is True
        proc.kill(signal.SIGKILL)
        await proc.wait()
    run(body)


def test_read_timeout_consumes_nothing(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("printf part; sleep 0.3; printf ' more'")
        proc.set_timeouts(stdout_read_timeout=0.05)
        with pytest.raises(TimeoutError, match="^timeout$"):
            await proc.stdout_read_all()
        proc.set_timeouts(stdout_read_timeout=5)
        assert await proc.stdout_read_all() == b"part more"
        await proc.wait()
    run(body)


def test_bad_timeouts_and_arguments() -> None:
    async def body() -> None:
        proc = pipe.spawn(["true"])
        with pytest.raises(ValueError, match="bad timeout value"):
            proc.set_timeouts(-1)
        await proc.wait()
        with pytest.raises(TypeError):
            pipe.spawn([])
        with pytest.raises(TypeError):
            pipe.spawn(["echo", 1])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            pipe.spawn(["true"], buffer_size=0)
        with pytest.raises(Error, match="no-such-program-here"):
            pipe.spawn(["no-such-program-here"])
    asyncio.run(body())


def test_busy_reading_and_shutdown_aborts_a_read(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])
        reader = asyncio.ensure_future(proc.stdout_read_line())
        await asyncio.sleep(0.01)
        with pytest.raises(Error, match="^pipe busy reading$"):
            await proc.stdout_read_any(10)
        proc.shutdown("stdout")
        with pytest.raises(ClosedError, match="^aborted$"):
            await reader
        with pytest.raises(ClosedError, match="^closed$"):
            await proc.stdout_read_line()
        proc.kill(signal.SIGKILL)
        await proc.wait()
    run(body)


def test_environ_replaces_the_environment(run: Run) -> None:
    async def body() -> None:
        os.environ["PYNGX_PIPE_LEAK"] = "leak"
        try:
            proc = pipe.spawn("echo \"$FOO-$PYNGX_PIPE_LEAK\"", environ={"FOO": "bar", "PATH": "/usr/bin:/bin"})
            assert await proc.stdout_read_line() == b"bar-"
            await proc.wait()
        finally:
            del os.environ["PYNGX_PIPE_LEAK"]
    run(body)


def test_ten_mib_of_output(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("yes | head -c 10485760")
        data = await proc.stdout_read_all()
        assert len(data) == 10485760 and data[:4] == b"y\ny\n"
        assert await proc.wait() == (True, "exit", 0)
    run(body)


def test_buffer_size_bounds_memory_for_a_chatty_child(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["yes"], buffer_size=256)
        for _ in range(100):
            assert await proc.stdout_read_line() == b"y"
        await asyncio.sleep(0.05)  # yes keeps writing; we read nothing meanwhile
        assert len(proc._out.buf) <= 256  # what we hold is bounded; the rest waits in the pipe
        assert await proc.stdout_read_bytes(4) == b"y\ny\n"
        proc.kill(signal.SIGKILL)
        assert await proc.wait() == (False, "signal", signal.SIGKILL)
    run(body)


def test_a_hundred_pipes_at_once(run: Run) -> None:
    async def body() -> None:
        procs = [pipe.spawn(["sh", "-c", "read x; echo $x-$0", str(i)]) for i in range(100)]
        await asyncio.gather(*(p.write(f"n{i}\n") for i, p in enumerate(procs)))
        lines = await asyncio.gather(*(p.stdout_read_line() for p in procs))
        assert lines == [f"n{i}-{i}".encode() for i in range(100)]
        assert all(r == (True, "exit", 0) for r in await asyncio.gather(*(p.wait() for p in procs)))
    run(body)


def test_dropped_proc_is_killed_and_reaped(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])
        pid = proc.pid()
        quick = pipe.spawn(["true"])
        quick_pid = quick.pid()
        del proc, quick
        for _ in range(500):
            if pid not in support.children(os.getpid()) and quick_pid not in support.children(os.getpid()):
                break
            await asyncio.sleep(0.01)
        assert pid not in support.children(os.getpid())
        assert quick_pid not in support.children(os.getpid())
        assert pipe.statistics()["running"] == 0
    run(body)


def test_kill_all_takes_the_whole_group(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn("sleep 30 & echo $!; sleep 30")
        grandchild = int(await proc.stdout_read_line())
        assert support.pid_alive(grandchild)
        pipe.kill_all()
        support.wait_until(lambda: not support.pid_alive(grandchild), 5, what="the grandchild to die")
        assert await proc.wait() == (False, "signal", signal.SIGKILL)
    run(body)


def test_reaping_leaves_other_children_alone(run: Run) -> None:
    async def body() -> None:
        other = subprocess.Popen(["sh", "-c", "sleep 0.2; exit 5"])
        mine = [pipe.spawn(["true"]) for _ in range(10)]
        sub = await asyncio.create_subprocess_exec("sh", "-c", "exit 6")
        for proc in mine:
            assert await proc.wait() == (True, "exit", 0)
        assert await sub.wait() == 6
        assert other.wait(timeout=10) == 5
    run(body)


def test_a_forked_process_owns_none_of_its_parents_children(run: Run) -> None:
    async def body() -> None:
        proc = pipe.spawn(["sleep", "30"])
        pid = os.fork()
        if pid == 0:  # the child: nothing to kill, nothing to reap, the guardian's pipe closed
            os._exit(0 if pipe.statistics()["running"] == 0 and proc.pid() not in support.children(os.getpid())
                     else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert support.pid_alive(proc.pid())  # the fork's exit killed nothing of ours
        proc.kill(signal.SIGKILL)
        await proc.wait()
    run(body)


def test_spawn_is_refused_in_init_by_python() -> None:
    async def body() -> None:
        token = phase.set(phase.INIT)
        try:
            with pytest.raises(WrongContextError, match="pipe.spawn"):
                pipe.spawn(["true"])
        finally:
            phase.reset(token)
    asyncio.run(body())


OWNER = textwrap.dedent("""
    import asyncio, sys
    from pyngx import pipe
    async def main():
        proc = pipe.spawn("sleep 60 | cat & echo $!; sleep 60")
        print(proc.pid(), int(await proc.stdout_read_line()), flush=True)
        await asyncio.sleep(60)
    asyncio.run(main())
""")


def test_a_sigkilled_owner_takes_its_groups_along() -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        child, background = map(int, owner.stdout.readline().split())
        group = [pid for pid in _all_pids() if os.getpgid(pid) == child] if _exists(child) else []
        assert child in group and len(group) >= 3  # sh, sleep, cat (and the second sleep)
        owner.kill()
        owner.wait()
        support.wait_until(lambda: not any(support.pid_alive(p) for p in group), 10, what="the group to die")
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _all_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                os.getpgid(int(entry))
                pids.append(int(entry))
            except OSError:
                pass
    return pids
