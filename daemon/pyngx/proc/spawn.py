"""Fork one child of the master; in the child, run its main and never return.

The child resets what it inherited from the master (signal handlers, the
wake-up pipe, the master's end of the status pipe), drops root for workers
when ``user`` is set, arms the parent-death signal, runs `child.run` and
leaves with ``os._exit`` so the master's atexit handlers and buffered files
never run twice (gunicorn ``spawn_worker``; nginx ``ngx_spawn_process``).
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from pyngx import log
from pyngx.proc import child, limits, service
from pyngx.conf.model import Config
from pyngx.proc.cycle import Cycle
from pyngx.runtime import state
from pyngx.runtime.tree import Tree

# Exit codes a child may leave with: FATAL means "do not respawn" (nginx:
# "exited with fatal code 2 and cannot be respawned").
OK = 0
FAILED = 1
FATAL = 2


class Credentials:
    """Whom workers run as: None when the master is not root or ``user`` is unset."""

    __slots__ = ("user", "uid", "gid")

    def __init__(self, user: str, uid: int, gid: int) -> None:
        self.user, self.uid, self.gid = user, uid, gid


def credentials(config: Config) -> Credentials | None:
    """Resolve the ``user`` directive when it applies (we are root).

    Raises KeyError with nginx's getpwnam()/getgrnam() wording.
    """
    conf = config.user
    if conf is None or os.geteuid() != 0:
        return None
    uid, gid = service.resolve_user(conf.user, conf.group)
    return Credentials(conf.user, uid, gid)


def fork(cycle: Cycle, kind: str, worker_id: int | None, *, master_pid: int, status_fd: int,
         close_fds: Iterable[int], creds: Credentials | None, table: Tree) -> int:
    """Fork a KIND child of CYCLE; returns its pid in the master, never returns in the child.

    Raises OSError when fork() fails.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    mask = service.block_child_signals()
    try:
        pid = os.fork()
    finally:
        if os.getpid() == master_pid:
            service.restore_mask(mask)
    if pid:
        return pid
    code = FAILED
    try:
        service.reset_signals()
        for fd in close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        limits.apply(cycle.config)  # worker_rlimit_nofile, while still root
        if creds is not None and kind == state.WORKER:
            code = FATAL  # a worker that cannot drop root must not be respawned in a loop
            service.drop_privileges(creds.user, creds.uid, creds.gid)
            code = FAILED
        service.set_parent_death_signal(signal.SIGQUIT)
        if os.getppid() != master_pid:  # the master died before prctl armed the signal
            os._exit(OK)
        code = child.run(cycle, kind, worker_id, master_pid=master_pid, status_fd=status_fd, table=table)
    except BaseException as exc:  # noqa: BLE001 - nothing may escape into the master's code
        try:
            if code == FATAL and isinstance(exc, OSError):
                log.emerg(exc.strerror or str(exc))  # drop_privileges names the call and errno
            else:
                log.exception(f"{kind} process failed", exc, log.ALERT)
        finally:
            os._exit(code)
    os._exit(code)
