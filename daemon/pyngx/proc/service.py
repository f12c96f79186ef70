"""Living as a service: daemonize, drop privileges, sd_notify, socket activation.

No dependencies: sd_notify is one datagram to ``$NOTIFY_SOCKET``
(sd_notify(3)), socket activation reads ``$LISTEN_PID``/``$LISTEN_FDS``
(sd_listen_fds(3)). Knows nothing of the master loop or the config grammar.
"""
from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal
import socket
import time

SD_LISTEN_FDS_START = 3
PR_SET_PDEATHSIG = 1


def daemonize() -> None:
    """Detach from the terminal: fork, setsid, fork again, stdio to /dev/null.

    The first parent exits at once with status 0 (``os._exit``: its atexit
    handlers and buffers belong to the process that goes on).
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def redirect_stderr(fd: int) -> None:
    """Send fd 2 to FD (the error log), as nginx does once it runs detached."""
    if fd > 2:
        os.dup2(fd, 2)
    else:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 2)
        os.close(null)


# -- users --

def resolve_user(user: str, group: str | None) -> tuple[int, int]:
    """(uid, gid) for USER and GROUP (default: the user's primary group).

    Raises KeyError with nginx's wording when either is unknown.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise KeyError(f'getpwnam("{user}") failed') from None
    if group is None:
        return pw.pw_uid, pw.pw_gid
    try:
        return pw.pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise KeyError(f'getgrnam("{group}") failed') from None


def drop_privileges(user: str, uid: int, gid: int) -> None:
    """Become UID/GID with USER's supplementary groups (root only; group first).

    Raises OSError naming the failed call.
    """
    for call, fn in (("setgid", lambda: os.setgid(gid)), ("initgroups", lambda: os.initgroups(user, gid)),
                     ("setuid", lambda: os.setuid(uid))):
        try:
            fn()
        except OSError as exc:
            raise OSError(exc.errno, f"{call}({uid if call == 'setuid' else gid}) failed "
                                     f"({exc.errno}: {exc.strerror})") from None


def set_parent_death_signal(signo: int) -> bool:
    """Ask Linux to send SIGNO when our parent dies (prctl PR_SET_PDEATHSIG).

    Cleared by a credential change, so call it after dropping privileges.
    Returns False where prctl is not available.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signo, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# -- systemd --

def notify(*fields: str) -> bool:
    """Send FIELDS ("READY=1", ...) to $NOTIFY_SOCKET; False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), path)
        return True
    except OSError:
        return False


def notify_ready(pid: int) -> bool:
    return notify("READY=1", f"MAINPID={pid}", "STATUS=serving")


def notify_reloading() -> bool:
    """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload requires."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")


def notify_stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")


def listen_fds() -> dict[tuple[str, int], socket.socket]:
    """Sockets handed over by systemd socket activation, keyed by (addr, port).

    Takes them once: the variables are removed so children never see them.
    """
    try:
        ours = int(os.environ.get("LISTEN_PID", "0")) == os.getpid()
        count = int(os.environ.get("LISTEN_FDS", "0")) if ours else 0
    except ValueError:
        count = 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    out: dict[tuple[str, int], socket.socket] = {}
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            sock.detach()
            continue
        os.set_inheritable(fd, False)
        host, port = sock.getsockname()[:2]
        out[(host, port)] = sock
    return out


# What the master may send a child; blocked from before fork() until the child's
# own handlers are in place, so a TERM that follows a fork at once is handled,
# not taken with the default action (a worker "exited on signal 15").
CHILD_SIGNALS = frozenset({signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})


def block_child_signals() -> set[signal.Signals]:
    """Block CHILD_SIGNALS; returns the previous mask for `restore_mask`."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)


def restore_mask(mask: set[signal.Signals]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def reset_signals() -> None:
    """Default dispositions, CHILD_SIGNALS still blocked (a fresh child after fork).

    The child unblocks them with `unblock_child_signals` once its loop handles them.
    """
    signal.set_wakeup_fd(-1)
    for signo in (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGCHLD, signal.SIGWINCH):
        signal.signal(signo, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, CHILD_SIGNALS)


def unblock_child_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)
