"""What every serving mode does before it serves: the log, the user, the pid file, the title.

Shared by the master (`pyngx.proc.master`) and the single process
(`pyngx.proc.single`); nothing here forks children or loops.
"""
from __future__ import annotations

import os
import socket
import sys

from pyngx import log
from pyngx.conf.model import Config
from pyngx.proc import cycle as cycles
from pyngx.proc import pidfile, service, spawn
from pyngx.proc.cycle import Cycle, CycleError
from pyngx.runtime import core

# Loaded in the master before the first fork, so every child shares their pages: what a
# worker needs to serve its first request (`import pyngx` alone loads none of the API modules:
# the common ones of a handler are here, ngx.say/header/var/exit, ngx.req, ngx.shared, ngx.timer,
# whose own imports are in this list already).
PRELOAD = ("uvloop", "httptools", "msgpack", "pyngx.http.server", "pyngx.runtime.timers",
           "pyngx.runtime.channel", "pyngx.runtime.ipcrequest", "pyngx.runtime.eventbus", "pyngx.shm.shdict",
           "pyngx.request", "pyngx.req", "pyngx.shared", "pyngx.timer")


Booted = tuple[spawn.Credentials | None, dict[tuple[str, int], socket.socket]]


def boot_process(config: Config, kind: str) -> Booted | None:
    """What every serving mode does first: bytecode off, error log, the process record, user, LISTEN_FDS."""
    # A module edited within the same second as its .pyc would be hidden by it after a reload.
    sys.dont_write_bytecode = True
    core.install(core.Process(kind, master_pid=os.getpid(), prefix=config.prefix,
                              worker_count=config.worker_processes))
    try:
        log.error_log.open(config.error_log.path, config.error_log.level)
    except OSError as exc:
        log.stderr(f'pyngx: [emerg] open() "{config.error_log.path}" failed ({exc.errno}: {exc.strerror})')
        return None
    try:
        creds = spawn.credentials(config)
    except KeyError as exc:
        startup_failed(CycleError(str(exc.args[0])))
        return None
    return creds, service.listen_fds()


def start(config: Config, kind: str) -> tuple[Cycle, spawn.Credentials | None, int] | None:
    """Boot this process as KIND, build the first generation, detach, write the pid file.

    Returns (cycle, credentials for children, pid), or None when start-up failed
    (already logged: the caller exits 1).
    """
    booted = boot_process(config, kind)
    if booted is None:
        return None
    creds, inherited = booted
    try:
        cycle = cycles.build(config, None, generation=1, inherited=inherited, creds=creds)
    except CycleError as err:
        startup_failed(err)
        return None
    detach(config)
    pid = os.getpid()
    core.RT.master_pid = pid  # daemon on: the pid changed
    if not write_pid(config, pid):
        return None
    return cycle, creds, pid


def detach(config: Config) -> None:
    """``daemon on``: leave the terminal; from now on stdout and stderr are the error log
    (nginx moves stderr), and every reopen moves them to the new file.

    In both modes print() and sys.stdout/sys.stderr become error log lines at notice (what
    OpenResty's print() does); with ``daemon off`` a terminal still shows them as well.
    """
    if config.daemon:
        service.daemonize()
        if log.error_log.fd > 2:
            log.error_log.stdio = True
            log.redirect_stdio(log.error_log.fd)
        else:
            service.redirect_stderr(log.error_log.fd)
    log.capture_stdio(echo=not config.daemon)


def startup_failed(err: CycleError) -> int:
    """Log a startup error where the operator sees it (the log and the terminal); returns 1."""
    log.emerg(str(err))
    if err.detail:
        log.error(err.detail.rstrip())
    if log.error_log.fd != 2:
        log.stderr(f"pyngx: [emerg] {err}")
    return 1


def write_pid(config: Config, pid: int) -> bool:
    try:
        pidfile.write(pid_path(config), pid)
    except OSError as exc:
        startup_failed(CycleError(exc.strerror or str(exc)))
        return False
    pidfile.remove_verdict(pid_path(config))
    return True


def check_files(config: Config) -> None:
    """``pyngx -t``: open the files the daemon will write, as ``nginx -t`` does.

    The error log and the access log are opened for append (created when
    missing); the pid file is opened if it exists, else a file is created and
    removed beside it. Raises CycleError with nginx's ``open() "PATH" failed``.
    """
    paths = [config.error_log.path]
    if config.http is not None:
        paths.append(config.http.access_log.path)
    for path in paths:
        if path and path != "stderr":
            _try_open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    pid = pid_path(config)
    if os.path.exists(pid):
        _try_open(pid, os.O_RDWR)
    else:
        probe = f"{pid}.{os.getpid()}.tmp"
        _try_open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, shown=pid)
        os.unlink(probe)


def _try_open(path: str, flags: int, shown: str | None = None) -> None:
    try:
        os.close(os.open(path, flags | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        raise CycleError(f'open() "{shown or path}" failed ({exc.errno}: {exc.strerror})') from None


def announce(config: Config, pid: int) -> None:
    """``daemon off`` in a terminal: one line saying where it serves and how to stop it
    (as development servers do). A daemon, or a start under systemd, stays quiet."""
    term = sys.__stderr__
    if config.daemon or term is None or not term.isatty():
        return
    urls = []
    for server in config.http.servers if config.http is not None else ():
        for listen in server.listens:
            host = f"[{listen.addr}]" if ":" in listen.addr else listen.addr
            if (url := f"http://{host}:{listen.port}/") not in urls:
                urls.append(url)
    where = "serving " + ", ".join(urls) if urls else "running (no listen address)"
    term.write(f"pyngx: {where} (pid {pid}); press Ctrl-C to stop\n")
    term.flush()


def pid_path(config: Config) -> str:
    return cycles.pid_path(config)


def set_master_title(argv: list[str]) -> None:
    from pyngx.proc.child import set_title

    set_title("pyngx: master process " + command_line(argv))


def command_line(argv: list[str]) -> str:
    """The command line as the operator typed it (nginx shows its binary and arguments).

    ``python -m pyngx`` leaves ``.../pyngx/__main__.py`` in argv[0]; the kernel's
    copy of the command line still says ``python3 -m pyngx`` then.
    """
    if argv and argv[0].endswith("__main__.py"):
        try:
            with open("/proc/self/cmdline", "rb") as f:
                raw = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            if "-m" in raw:
                return " ".join(raw)
        except OSError:
            pass
        return " ".join([os.path.basename(sys.executable), "-m", "pyngx", *argv[1:]])
    return " ".join(argv)


def preload() -> None:
    """Import what every child needs before forking (copy-on-write sharing)."""
    import importlib

    # boot_process turned bytecode writing off for the user's modules; these are ours and the
    # dependencies': their bytecode is cached as the environment says (-B, PYTHONDONTWRITEBYTECODE)
    write_off, sys.dont_write_bytecode = sys.dont_write_bytecode, bool(sys.flags.dont_write_bytecode)
    try:
        for name in PRELOAD:
            if name.startswith("pyngx."):
                importlib.import_module(name)  # our own: a failure here is a bug to see at once
                continue
            try:
                importlib.import_module(name)
            except ImportError:  # a dependency missing: the child fails on it with the real error
                pass
    finally:
        sys.dont_write_bytecode = write_off


def version() -> str:
    """pyngx's version (from the package: importlib.metadata scans sys.path, ~0.1 s)."""
    import pyngx

    return pyngx.__version__


def hand_logs_to(config: Config, creds: spawn.Credentials | None) -> None:
    """Create the log files the workers open or reopen, owned by ``user``.

    Workers run as ``user`` and open the access log themselves (and reopen both
    logs on USR1) in directories that may belong to root: the master, still root,
    creates the files first and gives them to that user (nginx opens them as root).
    """
    if creds is None:
        return
    paths = [log.error_log.path]
    if config.http is not None:
        paths.append(config.http.access_log.path)
    for path in paths:
        if not path:
            continue
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
            os.chown(path, creds.uid, creds.gid)
        except OSError as exc:
            log.alert(f'chown("{path}", {creds.uid}) failed ({exc.errno}: {exc.strerror})')

