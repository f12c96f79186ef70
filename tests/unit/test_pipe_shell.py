"""pyngx.shell.run with real commands, each test body run on uvloop and on the plain asyncio loop."""
from __future__ import annotations

import os
import signal

import pytest

import support
from support import Run
from pyngx import shell
from pyngx.errors import Error



def test_stdout_stderr_and_status(run: Run) -> None:
    async def body() -> None:
        assert await shell.run("echo yes; echo he >&2") == (True, b"yes\n", b"he\n", "exit", 0)
        assert await shell.run(["sh", "-c", "printf yes; exit 2"]) == (False, b"yes", b"", "exit", 2)
        assert await shell.run("kill -KILL $$") == (False, b"", b"", "signal", signal.SIGKILL)
    run(body)


def test_stdin_is_fed_while_output_is_read(run: Run) -> None:
    async def body() -> None:
        assert await shell.run(["wc", "-c"], "1234" * 2048) == (True, b"8192\n", b"", "exit", 0)
        data = os.urandom(3 << 20)  # far more than a pipe holds both ways: no deadlock
        ok, out, _, reason, status = await shell.run(["cat"], data, 30, 8 << 20)
        assert (ok, reason, status) == (True, "exit", 0) and out == data
        assert await shell.run("head -c 1", b"x" * (1 << 20)) == (True, b"x", b"", "exit", 0)
    run(body)


def test_too_much_data_is_cut_and_the_command_killed(run: Run) -> None:
    async def body() -> None:
        assert await shell.run("echo he >&2; printf 'yes!!!yes~'", None, 3, 3) == \
            (False, b"yes", b"he\n", "too much data", None)
        ok, out, _, reason, status = await shell.run(["yes"], max_size=100_000)
        assert (ok, len(out), reason, status) == (False, 100_000, "too much data", None)
    run(body)


def test_timeout_kills_the_whole_group(run: Run) -> None:
    async def body() -> None:
        result = await shell.run("echo $$; sleep 30 | cat", None, 0.2)
        ok, out, err, reason, status = result
        assert (ok, err, reason, status) == (False, b"", "timeout", None)
        group = int(out)
        support.wait_until(lambda: not _group_alive(group), 5, what="the command's group to die")
    run(body)


def test_no_limit_and_bad_arguments(run: Run) -> None:
    async def body() -> None:
        assert await shell.run("echo hi", timeout=0) == (True, b"hi\n", b"", "exit", 0)
        with pytest.raises(ValueError):
            await shell.run("echo hi", max_size=0)
        with pytest.raises(TypeError):
            await shell.run("cat", stdin=42)  # type: ignore[arg-type]
        with pytest.raises(Error, match="no-such-program-here"):
            await shell.run(["no-such-program-here"])
    run(body)


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process is in group PGID; zombies wait for init, which is not ours to hurry."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
