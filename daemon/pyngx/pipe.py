"""Non-blocking subprocesses: ``pipe.spawn()`` and ``Proc`` (OpenResty's ngx.pipe).

Owns the children a process spawns: their pipes, their reaping and their
process groups. Knows nothing of HTTP, timers or the process tree.

- Reaping waits for exactly our own pids, through one pidfd per child watched
  by the event loop (``os.pidfd_open``): no SIGCHLD handler and no
  ``waitpid(-1)``, so it never steals an exit status from the master,
  from asyncio's or uvloop's own child watchers, or from another worker.
  A ``Proc`` dropped without ``wait()`` is killed (as OpenResty does when
  the Lua object is collected) and its child is still reaped.
- Each child leads its own process group. ``kill_all`` (a lifecycle
  ``on_final`` hook, registered at the first spawn in a process) kills every
  group when the owner exits; a guardian (a ``/bin/sh`` blocked on a pipe
  from its owner) kills them when the owner dies without running its hooks,
  e.g. on SIGKILL: at EOF it reads the list of groups the owner kept in an
  unlinked file and kills them. The file costs a spawn one ``write()``;
  telling the guardian through its pipe woke it up twice per spawn. PR_SET_PDEATHSIG would need a ``preexec_fn``
  (no vfork: 3x slower spawns) and would only reach the direct child, not
  the rest of its group.
- Reads pull from the pipe only while a read is pending, at most
  ``buffer_size`` ahead of what was asked, so a chatty child blocks on a
  full pipe instead of filling our memory.
"""
from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from pyngx import log
from pyngx.errors import ClosedError, Error, TimeoutError
from pyngx.runtime import lifecycle, phase

__all__ = ["spawn", "Proc", "kill_all", "statistics"]

DEFAULT_TIMEOUT = 10.0  # seconds, for each of the four timeouts (ngx.pipe: 10000 ms)
BIG_READ = 1 << 16  # read_all/read_bytes chunk: nothing is left over, so size is free

# The guardian: waits for EOF on stdin (its owner is gone, however it died),
# then replays the "+ PGID" / "- PGID" lines of the list file (fd $1) and
# SIGKILLs every group still listed. Plain dash, no forks.
_GUARD_SCRIPT = r"""
trap '' HUP INT QUIT TERM USR1 USR2 PIPE
read -r _
g=" "
while read -r op p; do
  case "$op" in
    +) g="$g$p " ;;
    -) case "$g" in *" $p "*) g="${g%% $p *} ${g#* $p }" ;; esac ;;
  esac
done < "/proc/self/fd/$1"
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
"""
_COMPACT = 256  # rewrite the list file when it holds this many lines more than twice the live groups


class _Child:
    """A spawned pid until it is reaped; kept in ``_live`` independently of its Proc."""

    __slots__ = ("pid", "pidfd", "loop", "status", "exited")

    def __init__(self, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid, self.loop = pid, loop
        self.status: int | None = None  # the raw wait status once reaped
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pidfd = -1


class _Registry:
    """Every child of this process, the groups to kill at exit, and the guardian."""

    __slots__ = ("pid", "live", "groups", "guard_fd", "guard_pid", "list_fd", "lines", "spawned", "hooked")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.live: dict[int, _Child] = {}
        self.groups: set[int] = set()
        self.guard_fd = -1
        self.guard_pid = 0
        self.list_fd = -1  # the unlinked file listing our groups, read by the guardian
        self.lines = 0
        self.spawned = 0
        self.hooked = False


_reg = _Registry()


def _forget_after_fork() -> None:
    """A forked child owns none of its parent's children (and must not hold the guardian open)."""
    global _reg
    for child in _reg.live.values():
        _close(child.pidfd)
    _close(_reg.guard_fd)
    _close(_reg.list_fd)
    _reg = _Registry()


os.register_at_fork(after_in_child=_forget_after_fork)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


# -- reaping -------------------------------------------------------------------------------------

def _watch(child: _Child) -> None:
    """Reap CHILD when it exits: a pidfd on the loop, else a thread blocked in waitpid(pid)."""
    try:
        child.pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # Linux < 5.3: no pidfd
        threading.Thread(target=_wait_thread, args=(child,), daemon=True).start()
        return
    child.loop.add_reader(child.pidfd, _on_pidfd, child)


def _on_pidfd(child: _Child) -> None:
    try:
        pid, status = os.waitpid(child.pid, os.WNOHANG)
    except ChildProcessError:  # reaped behind our back (someone called waitpid(-1))
        pid, status = child.pid, 255 << 8
    if pid:
        _reaped(child, status)


def _wait_thread(child: _Child) -> None:
    try:
        _, status = os.waitpid(child.pid, 0)
    except ChildProcessError:
        status = 255 << 8
    try:
        child.loop.call_soon_threadsafe(_reaped, child, status)
    except RuntimeError:  # the loop is closed: record it anyway
        child.status = status


def _reaped(child: _Child, status: int) -> None:
    """Record CHILD's exit status, stop watching it, and forget its group once it is empty."""
    if child.status is not None and child.pidfd < 0:
        return
    child.status = status
    if child.pidfd >= 0:
        if not child.loop.is_closed():
            child.loop.remove_reader(child.pidfd)
        _close(child.pidfd)
        child.pidfd = -1
    _reg.live.pop(child.pid, None)
    if child.pid == _reg.guard_pid:  # killed by someone: the next spawn starts another
        _close(_reg.guard_fd)
        _reg.guard_fd, _reg.guard_pid = -1, 0
        return
    if not child.exited.done() and not child.loop.is_closed():
        child.exited.set_result(None)
    _prune_group(child.pid)


def _prune_group(pgid: int) -> None:
    """Stop tracking PGID when no process is left in it (a background grandchild keeps it)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        _reg.groups.discard(pgid)
        _note("-", pgid)
    except OSError:
        pass


def _decode(status: int) -> tuple[bool, str, int]:
    if os.WIFSIGNALED(status):
        return False, "signal", os.WTERMSIG(status)
    code = os.waitstatus_to_exitcode(status)
    return code == 0, "exit", code


# -- the guardian and the exit hook --------------------------------------------------------------

def _note(op: str, pgid: int) -> None:
    """Add (+) or remove (-) PGID in the list file the guardian reads when we die."""
    if _reg.list_fd < 0:
        return
    try:
        if op == "-" and _reg.lines > 2 * len(_reg.groups) + _COMPACT:
            _rewrite_list()
        else:
            os.write(_reg.list_fd, f"{op} {pgid}\n".encode())
            _reg.lines += 1
    except OSError as exc:
        log.warn(f"pipe: cannot update the group list ({exc.strerror})")


def _rewrite_list() -> None:
    """Replace the list file's lines by the live groups (the guardian reads it only at our death)."""
    os.ftruncate(_reg.list_fd, 0)
    os.lseek(_reg.list_fd, 0, os.SEEK_SET)
    text = "".join(f"+ {pgid}\n" for pgid in _reg.groups)
    if text:
        os.write(_reg.list_fd, text.encode())
    _reg.lines = len(_reg.groups)


def _start_guard(loop: asyncio.AbstractEventLoop) -> None:
    """Start this process's guardian (once), and hook kill_all on its exit."""
    if not _reg.hooked:
        lifecycle.on_final(kill_all)
        _reg.hooked = True
    if _reg.guard_fd >= 0:
        return
    try:
        if _reg.list_fd < 0:
            with tempfile.TemporaryFile(prefix="pyngx-pipe-") as f:  # unlinked: nothing to clean up
                _reg.list_fd = os.dup(f.fileno())
        _rewrite_list()
        r, w = os.pipe()
    except OSError as exc:
        log.warn(f"cannot start the pipe guardian: {exc}")
        return
    try:
        popen = subprocess.Popen(["/bin/sh", "-c", _GUARD_SCRIPT, "pyngx-pipe-guard", str(_reg.list_fd)], stdin=r, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(_reg.list_fd,),
                                 start_new_session=True)
    except OSError as exc:
        _close(w)
        log.warn(f"cannot start the pipe guardian: {exc}")
        return
    finally:
        _close(r)
    popen.returncode = 0  # reaped by us (through _live), not by subprocess' own bookkeeping
    _reg.guard_fd, _reg.guard_pid = w, popen.pid
    guard = _Child(popen.pid, loop)
    _reg.live[popen.pid] = guard
    _watch(guard)


def kill_all(graceful: bool = False) -> None:
    """SIGKILL every child's process group, reap them, and stop the guardian (lifecycle on_final)."""
    guard = _reg.guard_pid
    for pgid in list(_reg.groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    _reg.groups.clear()
    for child in list(_reg.live.values()):
        if child.pid != guard:
            _reap_now(child)
    if _reg.list_fd >= 0:
        try:
            _rewrite_list()  # empty now: the guardian has nothing left to kill
        except OSError:
            pass
    _close(_reg.guard_fd)  # EOF: the guardian wakes up, finds an empty list and leaves
    _reg.guard_fd = -1
    if guard in _reg.live:
        _reap_now(_reg.live[guard])
    _reg.guard_pid = 0


def _reap_now(child: _Child, limit: float = 2.0) -> None:
    """Wait (bounded) for a child that was just killed; the process is leaving or a test ends."""
    deadline = time.monotonic() + limit
    while True:
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = child.pid, 255 << 8
        if pid or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    if pid:
        _reaped(child, status)
    else:
        log.warn(f"pipe child {child.pid} did not exit after SIGKILL")


def statistics() -> dict[str, int]:
    """Children running now (the guardian excluded) and spawned so far in this process."""
    running = len(_reg.live) - (1 if _reg.guard_pid in _reg.live else 0)
    return {"running": running, "spawned": _reg.spawned}


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
    _start_guard(loop)
    fds = _make_pipes(merge_stderr)
    try:
        popen = subprocess.Popen(argv, stdin=fds[0], stdout=fds[2], stderr=fds[4] if not merge_stderr else fds[2],
                                 env=env, close_fds=True, process_group=0)
    except OSError as exc:
        for fd in fds:
            _close(fd)
        raise Error(f'execvp failed while executing "{argv[0]}" ({exc.strerror or exc})') from None
    finally:
        for fd in (fds[0], fds[2], fds[4]):  # the child's ends
            _close(fd)
    popen.returncode = 0  # reaped through our pidfd, not by subprocess' bookkeeping
    child = _Child(popen.pid, loop)
    _reg.live[child.pid] = child
    _reg.groups.add(child.pid)
    _reg.spawned += 1
    _note("+", child.pid)
    _watch(child)
    return Proc(child, loop, fds[1], fds[3], -1 if merge_stderr else fds[5], buffer_size)


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


def _make_pipes(merge_stderr: bool) -> list[int]:
    """[stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w]; our ends non-blocking."""
    fds: list[int] = []
    try:
        for _ in range(2 if merge_stderr else 3):
            fds.extend(os.pipe())
    except OSError:
        for fd in fds:
            _close(fd)
        raise
    if merge_stderr:
        fds.extend((-1, -1))
    for fd in (fds[1], fds[2], fds[4]):
        if fd >= 0:
            os.set_blocking(fd, False)
    # ours: stdin write end (1), stdout read end (2), stderr read end (4)
    return [fds[0], fds[1], fds[3], fds[2], fds[5], fds[4]]


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

    def __init__(self, child: _Child, loop: asyncio.AbstractEventLoop, stdin: int, stdout: int,
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
        return _decode(child.status)

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
                _close(fd)
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
        _close(fd)
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
        return await self._read(self._err, 2, self._read_all, 0)

    async def stderr_read_bytes(self, n: int) -> bytes:
        return await self._read(self._err, 2, self._read_bytes, _count(n, "len", 0))

    async def stderr_read_any(self, max: int) -> bytes:  # noqa: A002
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
                _close(fd)
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
        # instance is collected"; _live keeps its _Child, so it is still reaped.
        child = self._child
        if child.status is None and _reg.pid == os.getpid():
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        for fd in (self._stdin, self._out.fd, self._err.fd if self._err else -1):
            _close(fd)


def _count(n: object, what: str, least: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < least:
        raise ValueError(f"bad {what} argument")
    return n
