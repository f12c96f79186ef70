"""Non-blocking subprocesses: ``pipe.spawn()`` and ``Proc`` (OpenResty's ngx.pipe).

Owns the pipes to a child and the operations on them. The children
themselves — reaping by pidfd, their process groups, killing them all when
this process exits or dies — belong to `pyngx.runtime.children`. Reads pull
from the pipe only while a read is pending, at most ``buffer_size`` ahead of
what was asked, so a chatty child blocks on a full pipe instead of filling
our memory.
"""
from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
from collections.abc import Callable

from pyngx.errors import ClosedError, Error, TimeoutError
from pyngx.http.exchange import CURRENT
from pyngx.runtime import children, phase
from pyngx.runtime.children import close_fd as _close_fd
from pyngx.runtime.children import kill_all as kill_all
from pyngx.runtime.children import statistics as statistics

__all__ = ["spawn", "Proc", "kill_all", "statistics"]

DEFAULT_TIMEOUT = 10.0  # seconds, for each of the four timeouts (ngx.pipe: 10000 ms)
BIG_READ = 1 << 16  # read_all/read_bytes chunk: nothing is left over, so size is free

# -- spawn ---------------------------------------------------------------------------------------

def spawn(args: list[str] | str, *, merge_stderr: bool = False, buffer_size: int = 4096,
          environ: dict[str, str] | None = None) -> Proc:
    """Start ARGS (a list: exec; a str: ``/bin/sh -c``) with pipes on its stdin, stdout and stderr.

    Raises WrongContextError in init_by_python, TypeError/ValueError for bad
    arguments, and pyngx.errors.Error when the program cannot be started.
    """
    phase.forbid(phase.INIT, api="pipe.spawn")
    argv = _argv(args)
    env = _environ(environ)
    if not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size <= 0:
        raise ValueError("bad buffer_size option")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise Error("pipe.spawn: no event loop is running") from None
    children.prepare(loop)
    theirs, ours = _make_pipes(merge_stderr)
    try:
        popen = subprocess.Popen(argv, stdin=theirs[0], stdout=theirs[1], stderr=theirs[2], env=env,
                                 close_fds=True, process_group=0)
    except OSError as exc:
        for fd in ours:
            _close_fd(fd)
        raise Error(f'execvp failed while executing "{argv[0]}" ({exc.strerror or exc})') from None
    finally:
        for fd in set(theirs):
            _close_fd(fd)
    popen.returncode = 0  # reaped by pyngx.runtime.children, not by subprocess' bookkeeping
    child = children.adopt(popen.pid, loop)
    proc = Proc(child, loop, *ours, buffer_size)
    if CURRENT.get() is not None and phase.current() in phase.REQUEST:
        _end_with_request(child, loop)
    return proc


def _end_with_request(child: children.Child, loop: asyncio.AbstractEventLoop) -> None:
    """A child spawned by a request is killed (its process group) when the request ends, as
    OpenResty's ngx.pipe does: the request's task ends with it; a plain handler has no task
    and ends before the loop's next turn."""
    task = asyncio.current_task(loop)
    if task is not None:
        task.add_done_callback(lambda _task: _kill_group(child))
    else:
        loop.call_soon(_kill_group, child)


def _kill_group(child: children.Child) -> None:
    if child.status is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass  # gone already


def _argv(args: object) -> list[str]:
    if isinstance(args, str):
        return ["/bin/sh", "-c", args]
    if isinstance(args, (list, tuple)) and args:
        for arg in args:
            if not isinstance(arg, (str, bytes)):
                raise TypeError(f"bad args arg: non-string value {arg!r}")
        return list(args)
    raise TypeError("bad args arg: a non-empty list or a str expected")


def _environ(environ: object) -> dict[str, str] | None:
    if environ is None:
        return None
    if not isinstance(environ, dict):
        raise TypeError("bad environ option: a dict expected")
    for key, value in environ.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key:
            raise TypeError(f"bad environ option: {key!r}={value!r}")
    return dict(environ)


def _make_pipes(merge_stderr: bool) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The child's (stdin, stdout, stderr) and ours; ours are non-blocking, our stderr -1 when merged."""
    made: list[tuple[int, int]] = []
    try:
        for _ in range(2 if merge_stderr else 3):
            made.append(os.pipe())
    except OSError:
        for r, w in made:
            _close_fd(r)
            _close_fd(w)
        raise
    (in_r, in_w), (out_r, out_w) = made[0], made[1]
    err_r, err_w = made[2] if not merge_stderr else (-1, out_w)
    for fd in (in_w, out_r, err_r):
        if fd >= 0:
            os.set_blocking(fd, False)
    return (in_r, out_w, err_w), (in_w, out_r, err_r)


# -- Proc ----------------------------------------------------------------------------------------

class _Stream:
    """One of our pipe ends: its fd, data read but not returned yet, and its pending operation."""

    __slots__ = ("fd", "buf", "eof", "busy", "waiter", "armed")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.eof = fd < 0
        self.busy = False
        self.waiter: asyncio.Future[None] | None = None
        self.armed = False  # our reader is on the loop for the whole operation, not per wait

    def disarm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.armed:
            self.armed = False
            if self.fd >= 0:
                loop.remove_reader(self.fd)


def _wake_stream(s: _Stream) -> None:
    if s.waiter is not None and not s.waiter.done():
        s.waiter.set_result(None)


def _closed(partial: bytes = b"", msg: str = "closed") -> ClosedError:
    err = ClosedError(msg)
    err.partial = partial  # type: ignore[attr-defined] - ngx.pipe's third return value
    return err


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("timeout"))


def _timeout_value(value: float | None, current: float) -> float:
    if value is None:
        return current
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("bad timeout value")
    return float(value)


class Proc:
    """A spawned child and our ends of its pipes (ngx.pipe's proc object)."""

    __slots__ = ("_child", "_loop", "_stdin", "_out", "_err", "_bufsize", "_timeouts",
                 "_writing", "_writer", "_waiting", "_waited", "__weakref__")

    def __init__(self, child: children.Child, loop: asyncio.AbstractEventLoop, stdin: int, stdout: int,
                 stderr: int, buffer_size: int) -> None:
        self._child, self._loop = child, loop
        self._stdin = stdin
        self._out, self._err = _Stream(stdout), (_Stream(stderr) if stderr >= 0 else None)
        self._bufsize = buffer_size
        # write, stdout read, stderr read, wait; 0 = never
        self._timeouts = [DEFAULT_TIMEOUT] * 4
        self._writing = False
        self._writer: asyncio.Future[None] | None = None
        self._waiting = self._waited = False

    def __repr__(self) -> str:
        return f"<pyngx.pipe.Proc pid={self._child.pid}>"

    def pid(self) -> int:
        """The child's pid."""
        return self._child.pid

    def set_timeouts(self, write_timeout: float | None = None, stdout_read_timeout: float | None = None,
                     stderr_read_timeout: float | None = None, wait_timeout: float | None = None) -> None:
        """Seconds for each operation; None leaves one unchanged, 0 means never time out."""
        values = (write_timeout, stdout_read_timeout, stderr_read_timeout, wait_timeout)
        new = [_timeout_value(v, cur) for v, cur in zip(values, self._timeouts)]
        self._timeouts = new

    # -- the child ------------------------------------------------------------------------------

    def kill(self, sig: int) -> bool:
        """Send SIG to the child (not its group). Raises ClosedError("exited") once it was reaped."""
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError("bad signal arg: a signal number expected")
        if self._child.status is not None:
            raise ClosedError("exited")
        try:
            os.kill(self._child.pid, sig)
        except (ValueError, OverflowError):
            raise Error("invalid signal") from None
        except ProcessLookupError:
            raise ClosedError("exited") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise Error("invalid signal") from None
            raise Error(exc.strerror or str(exc)) from None
        return True

    async def wait(self) -> tuple[bool, str, int]:
        """Wait for the child to exit: (ok, "exit", code) or (False, "signal", signo).

        Raises TimeoutError after wait_timeout, ClosedError("exited") when
        already waited for, Error("pipe busy waiting") while another waits.
        """
        if self._waiting:
            raise Error("pipe busy waiting")
        if self._waited:
            raise ClosedError("exited")
        child = self._child
        if child.status is None:
            self._waiting = True
            try:
                timeout = self._timeouts[3] or None
                await asyncio.wait_for(asyncio.shield(child.exited), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError("timeout") from None
            finally:
                self._waiting = False
        assert child.status is not None
        self._waited = True
        return children.decode(child.status)

    # -- stdin ----------------------------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview | str) -> int:
        """Write all of DATA to the child's stdin; returns its length in bytes.

        Raises ClosedError("closed") when stdin is shut or the child closed it,
        ClosedError("aborted") when shut meanwhile, TimeoutError after
        write_timeout without progress.
        """
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"bad data arg: str or bytes expected, got {type(data).__name__}")
        if self._writing:
            raise Error("pipe busy writing")
        if self._stdin < 0:
            raise ClosedError("closed")
        view = memoryview(data).cast("B")
        total = len(view)
        self._writing = True
        try:
            while view:
                try:
                    view = view[os.write(self._stdin, view):]
                except BlockingIOError:
                    await self._wait_writable()
                except (BrokenPipeError, ConnectionResetError):
                    raise ClosedError("closed") from None
        finally:
            self._writing = False
        return total

    async def _wait_writable(self) -> None:
        loop, fd = self._loop, self._stdin
        fut = self._writer = loop.create_future()
        loop.add_writer(fd, _wake, fut)
        timer = loop.call_later(self._timeouts[0], _expire, fut) if self._timeouts[0] else None
        try:
            await fut
        finally:
            self._writer = None
            if timer is not None:
                timer.cancel()
            if self._stdin >= 0:
                loop.remove_writer(fd)

    def shutdown(self, direction: str) -> bool:
        """Close our end of "stdin", "stdout" or "stderr"; a pending operation there gets ClosedError("aborted")."""
        if direction == "stdin":
            fd, self._stdin = self._stdin, -1
            if fd >= 0:
                if self._writer is not None:
                    self._loop.remove_writer(fd)
                _close_fd(fd)
            if self._writer is not None and not self._writer.done():
                self._writer.set_exception(_closed(msg="aborted"))
            return True
        if direction == "stdout":
            self._shut(self._out)
            return True
        if direction == "stderr":
            if self._err is None:
                raise Error("merged to stdout")
            self._shut(self._err)
            return True
        raise ValueError(f"bad shutdown arg: {direction!r}")

    def _shut(self, s: _Stream) -> None:
        s.disarm(self._loop)
        fd, s.fd, s.eof = s.fd, -1, True
        s.buf.clear()
        _close_fd(fd)
        if s.waiter is not None and not s.waiter.done():
            s.waiter.set_exception(_closed(msg="aborted"))

    # -- stdout and stderr ----------------------------------------------------------------------

    async def stdout_read_line(self) -> bytes:
        """The next line without its LF (or CRLF). At EOF: ClosedError("closed") with ``partial``."""
        return await self._read(self._out, 1, self._read_line, 0)

    async def stdout_read_all(self) -> bytes:
        """Everything up to EOF. Raises ClosedError("closed") once EOF was already returned."""
        return await self._read(self._out, 1, self._read_all, 0)

    async def stdout_read_bytes(self, n: int) -> bytes:
        """Exactly N bytes. At EOF: ClosedError("closed") with the bytes received in ``partial``."""
        return await self._read(self._out, 1, self._read_bytes, _count(n, "len", 0))

    async def stdout_read_any(self, max: int) -> bytes:  # noqa: A002 - ngx.pipe's name
        """What is there (1..MAX bytes) as soon as anything is. At EOF: ClosedError("closed")."""
        return await self._read(self._out, 1, self._read_any, _count(max, "max"))

    async def stderr_read_line(self) -> bytes:
        """As stdout_read_line, from stderr; Error("merged to stdout") with merge_stderr."""
        return await self._read(self._err, 2, self._read_line, 0)

    async def stderr_read_all(self) -> bytes:
        """As stdout_read_all, from stderr; Error("merged to stdout") with merge_stderr."""
        return await self._read(self._err, 2, self._read_all, 0)

    async def stderr_read_bytes(self, n: int) -> bytes:
        """As stdout_read_bytes, from stderr; Error("merged to stdout") with merge_stderr."""
        return await self._read(self._err, 2, self._read_bytes, _count(n, "len", 0))

    async def stderr_read_any(self, max: int) -> bytes:  # noqa: A002
        """As stdout_read_any, from stderr; Error("merged to stdout") with merge_stderr."""
        return await self._read(self._err, 2, self._read_any, _count(max, "max"))

    async def _read(self, s: _Stream | None, which: int,
                    how: Callable[[_Stream, int, float], asyncio.Future[bytes] | object], n: int) -> bytes:
        if s is None:
            raise Error("merged to stdout")
        if s.busy:
            raise Error("pipe busy reading")
        if s.eof and not s.buf:
            raise _closed()
        if how == self._read_bytes and n == 0:
            return b""
        s.busy = True
        try:
            return await how(s, n, self._timeouts[which])  # type: ignore[misc, no-any-return]
        finally:
            s.busy = False
            s.disarm(self._loop)

    async def _fill(self, s: _Stream, size: int, timeout: float) -> bytes:
        """One read of at most SIZE bytes, waiting for data; b"" at EOF."""
        while s.fd >= 0:
            try:
                data = os.read(s.fd, size)
            except BlockingIOError:
                await self._wait_readable(s, timeout)
                continue
            if not data:
                s.disarm(self._loop)
                fd, s.fd, s.eof = s.fd, -1, True
                _close_fd(fd)
            return data
        return b""

    async def _wait_readable(self, s: _Stream, timeout: float) -> None:
        loop = self._loop
        fut = s.waiter = loop.create_future()
        if not s.armed:
            loop.add_reader(s.fd, _wake_stream, s)
            s.armed = True
        timer = loop.call_later(timeout, _expire, fut) if timeout else None
        try:
            await fut
        finally:
            s.waiter = None
            if timer is not None:
                timer.cancel()

    async def _read_line(self, s: _Stream, _: int, timeout: float) -> bytes:
        start = 0
        while True:
            i = s.buf.find(b"\n", start)
            if i >= 0:
                end = i - 1 if i and s.buf[i - 1] == 13 else i  # CRLF or LF
                line = bytes(s.buf[:end])
                del s.buf[:i + 1]
                return line
            start = len(s.buf)
            data = await self._fill(s, self._bufsize, timeout)
            if not data:
                partial = bytes(s.buf)
                s.buf.clear()
                raise _closed(partial)
            s.buf += data

    async def _read_all(self, s: _Stream, _: int, timeout: float) -> bytes:
        chunks = [bytes(s.buf)]
        s.buf.clear()
        try:
            while data := await self._fill(s, max(self._bufsize, BIG_READ), timeout):
                chunks.append(data)
        except BaseException:
            s.buf[:0] = b"".join(chunks)  # a timeout consumes nothing: the next read sees it all
            raise
        return b"".join(chunks)

    async def _read_bytes(self, s: _Stream, n: int, timeout: float) -> bytes:
        while len(s.buf) < n:
            data = await self._fill(s, min(n - len(s.buf), max(self._bufsize, BIG_READ)), timeout)
            if not data:
                partial = bytes(s.buf)
                s.buf.clear()
                raise _closed(partial)
            s.buf += data
        out = bytes(s.buf[:n])
        del s.buf[:n]
        return out

    async def _read_any(self, s: _Stream, n: int, timeout: float) -> bytes:
        if s.buf:
            out = bytes(s.buf[:n])
            del s.buf[:n]
            return out
        data = await self._fill(s, min(n, self._bufsize), timeout)
        if not data:
            raise _closed()
        return data

    # -- end of life ----------------------------------------------------------------------------

    def __del__(self) -> None:
        # ngx.pipe: "The sub-process will be killed via SIGKILL if it is still alive when the
        # instance is collected"; runtime.children still reaps it.
        try:
            child = self._child
            if child.status is None and children.owned_here():
                os.kill(child.pid, signal.SIGKILL)
        except Exception:  # noqa: BLE001 - already gone, or the interpreter is shutting down
            pass
        for fd in (self._stdin, self._out.fd, self._err.fd if self._err else -1):
            _close_fd(fd)


def _count(n: object, what: str, least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ValueError(f"bad {what} argument")
    return n
