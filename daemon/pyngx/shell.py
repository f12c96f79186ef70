"""``shell.run()``: one command, its whole output and status (OpenResty's resty.shell).

Built on `pyngx.pipe`. Unlike resty.shell, stdin is written while stdout and
stderr are read, so a command that answers before it has read all its input
(``cat`` on a large stdin) cannot deadlock; and the whole run shares one
deadline. On a timeout or too much output the command's whole process group
is killed, so a ``sh -c`` pipeline leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import os
import signal

from pyngx import pipe
from pyngx.errors import ClosedError

__all__ = ["run"]

BUFFER_SIZE = 32 * 1024  # resty.shell's spawn buffer
DEFAULT_MAX_SIZE = 128 * 1024


class _TooMuch(Exception):
    """Output over max_size (internal: ends the run)."""


async def run(cmd: list[str] | str, stdin: bytes | str | None = None, timeout: float | None = None,
              max_size: int = DEFAULT_MAX_SIZE) -> tuple[bool, bytes, bytes, str, int | None]:
    """Run CMD to its end; returns (ok, stdout, stderr, reason, status).

    ``reason`` is "exit" (status: the exit code) or "signal" (the signal
    number); "timeout" when CMD ran past TIMEOUT seconds and was killed, "too
    much data" when stdout or stderr went over MAX_SIZE bytes (cut there, CMD
    killed); in those two cases ``ok`` is False and ``status`` None. TIMEOUT
    None means ngx.pipe's default, 10 seconds; 0 means no limit.
    Raises pyngx.errors.Error when CMD cannot be started.
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
        raise ValueError("bad max_size argument")
    if stdin is not None and not isinstance(stdin, (bytes, bytearray, str)):
        raise TypeError(f"bad stdin argument: str or bytes expected, got {type(stdin).__name__}")
    limit = pipe.DEFAULT_TIMEOUT if timeout is None else pipe._timeout_value(timeout, 0.0)
    proc = pipe.spawn(cmd, buffer_size=BUFFER_SIZE)
    proc.set_timeouts(0, 0, 0, 0)  # one deadline for the whole run, below
    out: list[bytes] = []
    err: list[bytes] = []
    tasks = [asyncio.ensure_future(_feed(proc, stdin)),
             asyncio.ensure_future(_drain(proc.stdout_read_any, out, max_size)),
             asyncio.ensure_future(_drain(proc.stderr_read_any, err, max_size)),
             asyncio.ensure_future(proc.wait())]
    reason: str | None = None
    try:
        done, _ = await asyncio.wait(tasks, timeout=limit or None, return_when=asyncio.FIRST_EXCEPTION)
        if any(not t.cancelled() and isinstance(t.exception(), _TooMuch) for t in done):
            reason = "too much data"
        elif not all(t in done for t in tasks) and not any(t.exception() for t in done):
            reason = "timeout"
    finally:
        if reason is not None or not all(t.done() for t in tasks):
            _kill_group(proc)
        await _settle(tasks)
    stdout, stderr = b"".join(out)[:max_size], b"".join(err)[:max_size]
    if reason is not None:
        return False, stdout, stderr, reason, None
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc] - a bug or a bad argument, not the command
    ok, why, status = tasks[3].result()
    return ok, stdout, stderr, why, status


async def _feed(proc: pipe.Proc, stdin: bytes | str | None) -> None:
    try:
        if stdin:
            await proc.write(stdin)
    except ClosedError:
        pass  # the command exited or closed its stdin without reading it all: not our error
    finally:
        proc.shutdown("stdin")


async def _drain(read: object, into: list[bytes], max_size: int) -> None:
    size = 0
    while True:
        try:
            data = await read(max_size - size + 1)  # type: ignore[operator]
        except ClosedError:
            return
        into.append(data)
        size += len(data)
        if size > max_size:
            raise _TooMuch()


def _kill_group(proc: pipe.Proc) -> None:
    """SIGKILL the command's process group (it leads it); nothing to do once it was reaped and its group is empty."""
    try:
        os.killpg(proc.pid(), signal.SIGKILL)
    except OSError:
        pass


async def _settle(tasks: list[asyncio.Future[object]]) -> None:
    """Let the killed command's readers see EOF and its wait() see the exit; cancel what still hangs."""
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, pending_set = await asyncio.wait(pending, timeout=1.0)
        for task in pending_set:
            task.cancel()
        if pending_set:
            await asyncio.wait(pending_set)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" noise
