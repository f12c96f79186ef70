"""The children a process spawns (for `pyngx.pipe`): reaping, process groups, death.

Owns every pid this process forks for pipes until it is reaped, and the
process groups they lead. Knows nothing of pipes, HTTP or the process tree.

- Reaping waits for exactly our own pids, through one pidfd per child watched
  by the event loop (``os.pidfd_open``): no SIGCHLD handler and no
  ``waitpid(-1)``, so it never steals an exit status from the master, from
  asyncio's or uvloop's own child watchers, or from another worker.
- Each child leads its own process group. `kill_all` (a lifecycle
  ``on_final`` hook, registered by the first `prepare` in a process) kills
  every group when the owner exits; a guardian (a ``/bin/sh`` blocked on a
  pipe from its owner) kills them when the owner dies without running its
  hooks, e.g. on SIGKILL: at EOF it reads the list of groups the owner kept
  in an unlinked file and kills them. The file costs a spawn one
  ``write()``; telling the guardian through its pipe woke it up twice per
  spawn. PR_SET_PDEATHSIG would need a ``preexec_fn`` (no vfork: spawns 3x
  slower) and would reach only the direct child, not the rest of its group.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import threading
import time

from pyngx import log
from pyngx.runtime import lifecycle

__all__ = ["Child", "prepare", "adopt", "kill_all", "statistics", "decode", "owned_here", "close_fd"]

# The guardian: waits for EOF on its pipe (its owner is gone, however it died),
# then replays the "+ PGID" / "- PGID" lines of the list file and SIGKILLs every
# group still listed. Plain dash, no forks. sh reads this script from its stdin
# (a memfd) and runs with argv ["pyngx: pipe guard"], so ps shows that title and
# not a script; the two descriptors' numbers come in the environment.
_GUARD_TITLE = "pyngx: pipe guard"
_GUARD_SCRIPT = r"""
trap '' HUP INT QUIT TERM USR1 USR2 PIPE
read -r _ < "/proc/self/fd/$PYNGX_GUARD_PIPE"
g=" "
while read -r op p; do
  case "$op" in
    +) g="$g$p " ;;
    -) case "$g" in *" $p "*) g="${g%% $p *} ${g#* $p }" ;; esac ;;
  esac
done < "/proc/self/fd/$PYNGX_GUARD_LIST"
for p in $g; do kill -s KILL -- "-$p" 2>/dev/null; done
"""
_COMPACT = 256  # rewrite the list file when it holds this many lines more than twice the live groups


class Child:
    """A spawned pid until it is reaped; the registry keeps it, whatever becomes of its Proc."""

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
        self.live: dict[int, Child] = {}
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
        close_fd(child.pidfd)
    close_fd(_reg.guard_fd)
    close_fd(_reg.list_fd)
    _reg = _Registry()


os.register_at_fork(after_in_child=_forget_after_fork)


def close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


# -- reaping -------------------------------------------------------------------------------------

def _watch(child: Child) -> None:
    """Reap CHILD when it exits: a pidfd on the loop, else a thread blocked in waitpid(pid)."""
    try:
        child.pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):  # Linux < 5.3: no pidfd
        threading.Thread(target=_wait_thread, args=(child,), daemon=True).start()
        return
    child.loop.add_reader(child.pidfd, _on_pidfd, child)


def _on_pidfd(child: Child) -> None:
    try:
        pid, status = os.waitpid(child.pid, os.WNOHANG)
    except ChildProcessError:  # reaped behind our back (someone called waitpid(-1))
        pid, status = child.pid, 255 << 8
    if pid:
        _reaped(child, status)


def _wait_thread(child: Child) -> None:
    try:
        _, status = os.waitpid(child.pid, 0)
    except ChildProcessError:
        status = 255 << 8
    try:
        child.loop.call_soon_threadsafe(_reaped, child, status)
    except RuntimeError:  # the loop is closed: record it anyway
        child.status = status


def _reaped(child: Child, status: int) -> None:
    """Record CHILD's exit status, stop watching it, and forget its group once it is empty."""
    if child.status is not None and child.pidfd < 0:
        return
    child.status = status
    if child.pidfd >= 0:
        if not child.loop.is_closed():
            child.loop.remove_reader(child.pidfd)
        close_fd(child.pidfd)
        child.pidfd = -1
    _reg.live.pop(child.pid, None)
    if child.pid == _reg.guard_pid:  # killed by someone: the next spawn starts another
        close_fd(_reg.guard_fd)
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


def decode(status: int) -> tuple[bool, str, int]:
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


def prepare(loop: asyncio.AbstractEventLoop) -> None:
    """Before a spawn: hook kill_all on this process's exit and start its guardian (once each)."""
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
        script = os.memfd_create("pyngx-pipe-guard", os.MFD_CLOEXEC)
        os.write(script, _GUARD_SCRIPT.encode())
        os.lseek(script, 0, os.SEEK_SET)
        r, w = os.pipe()
    except OSError as exc:
        log.warn(f"cannot start the pipe guardian: {exc}")
        return
    env = dict(os.environ, PYNGX_GUARD_PIPE=str(r), PYNGX_GUARD_LIST=str(_reg.list_fd))
    try:
        # its own session: a Ctrl-C or a signal to our group must not take the guardian first
        popen = subprocess.Popen([_GUARD_TITLE], executable="/bin/sh", stdin=script, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, close_fds=True, pass_fds=(r, _reg.list_fd), env=env,
                                 start_new_session=True)
    except OSError as exc:
        close_fd(w)
        log.warn(f"cannot start the pipe guardian: {exc}")
        return
    finally:
        close_fd(r)
        close_fd(script)
    popen.returncode = 0  # reaped through the registry, not by subprocess' own bookkeeping
    _reg.guard_fd, _reg.guard_pid = w, popen.pid
    guard = Child(popen.pid, loop)
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
    close_fd(_reg.guard_fd)
    _reg.guard_fd = -1
    if guard in _reg.live:
        try:
            os.kill(guard, signal.SIGKILL)  # its work is done here, no need to wait for it to run
        except OSError:
            pass
        _reap_now(_reg.live[guard])
    _reg.guard_pid = 0
    _reg.hooked = False  # lifecycle.final() drops its hooks once run: a later spawn hooks again


def _reap_now(child: Child, limit: float = 5.0) -> None:
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


def adopt(pid: int, loop: asyncio.AbstractEventLoop) -> Child:
    """Take charge of PID, just spawned as the leader of its own group: list it, reap it."""
    child = Child(pid, loop)
    _reg.live[pid] = child
    _reg.groups.add(pid)
    _reg.spawned += 1
    _note("+", pid)
    _watch(child)
    if len(_reg.groups) > len(_reg.live):
        _prune_stragglers()
    return child


def _prune_stragglers() -> None:
    """Forget groups whose leader was reaped and whose last member has gone since."""
    for pgid in [g for g in _reg.groups if g not in _reg.live]:
        _prune_group(pgid)


def owned_here() -> bool:
    """False in a process forked from the one that spawned (it must not kill its parent's children)."""
    return _reg.pid == os.getpid()
