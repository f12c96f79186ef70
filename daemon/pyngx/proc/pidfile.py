"""The pid file: atomic write, read with nginx's errors, unlink only if ours.

Knows nothing of signals or the master loop; the master writes, the
signaller reads.
"""
from __future__ import annotations

import os


class PidFileError(Exception):
    """The pid file is missing, unreadable or holds no valid pid (nginx's words)."""


def write(path: str, pid: int) -> None:
    """Write PID to PATH atomically (a reader never sees a half-written file).

    Raises OSError naming the call when the directory is not writable.
    """
    tmp = f"{path}.{pid}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{pid}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None


def read(path: str) -> int:
    """The pid in PATH.

    Raises PidFileError with nginx's message when missing or invalid.
    """
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError as exc:
        raise PidFileError(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None
    if not text.isdigit() or int(text) <= 0:
        raise PidFileError(f'invalid PID number "{text}" in "{path}"')
    return int(text)


def alive(pid: int) -> bool:
    """True when a process with PID exists (signal 0 reaches it or is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def unlink_if_ours(path: str, pid: int) -> None:
    """Remove PATH when it still names PID (a newer master may own it now)."""
    try:
        if read(path) != pid:
            return
        os.unlink(path)
    except (PidFileError, OSError):
        pass


# -- the reload verdict (pyngx -s reload waits for it) --
#
# The master answers every HUP by replacing PIDFILE.reload with one line
# "MASTERPID:SEQ STATUS MESSAGE". The signaller reads the line before it
# sends HUP and waits for a different line from the same master: SEQ grows
# with every reload, so an answer is never mistaken for an older one.

OK = "ok"  # the new generation serves
FAILED = "failed"  # refused: the old generation keeps serving
INIT_FAILED = "init_worker_failed"  # it serves, but init_worker_by_python raised somewhere


def verdict_path(pid_path: str) -> str:
    return pid_path + ".reload"


def write_verdict(pid_path: str, master_pid: int, seq: int, status: str, message: str) -> None:
    """Answer reload number SEQ with STATUS (OK, FAILED, INIT_FAILED) and MESSAGE."""
    path = verdict_path(pid_path)
    tmp = f"{path}.{master_pid}.tmp"
    line = f"{master_pid}:{seq} {status} {message}".replace("\n", " ") + "\n"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(line)
        os.replace(tmp, path)
    except OSError:
        pass  # nobody may be waiting; the error log has the verdict too


def read_verdict(pid_path: str) -> str:
    """The current verdict line, or "" when there is none."""
    try:
        with open(verdict_path(pid_path), encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def parse_verdict(line: str, master_pid: int) -> tuple[str, str] | None:
    """(status, message) when LINE is an answer from MASTER_PID, else None."""
    head, _, rest = line.partition(" ")
    if not head.startswith(f"{master_pid}:"):
        return None
    status, _, message = rest.partition(" ")
    return status, message


def remove_verdict(pid_path: str) -> None:
    try:
        os.unlink(verdict_path(pid_path))
    except OSError:
        pass


# -- is the pid in the file ours? --
#
# A pid file outlives its master (SIGKILL, a crash, a reboot) and the kernel reuses pids:
# `pyngx -s reload` must not send SIGHUP to whatever runs under that number now. A master
# shows ``pyngx: master process <command line>`` as its title, a single process keeps the
# command line; ``-p`` in it (else the directory it was started in) is its prefix.

MASTER_TITLE = "pyngx: master process "


def not_ours(pid: int, prefix: str) -> str | None:
    """Why PID is not a pyngx master (or single process) of PREFIX; None when it is."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return None  # gone: kill() says so in its own words
    except PermissionError:
        return None  # another user's process: kill() is refused with EPERM anyway
    except OSError as exc:
        return f"cannot read /proc/{pid} ({exc.errno}: {exc.strerror})"
    text = raw.decode("utf-8", "replace")
    if text.startswith(MASTER_TITLE):
        args = text[len(MASTER_TITLE):].rstrip("\0").split()
    else:
        args = [a for a in text.split("\0") if a]
        if not any(os.path.basename(a) == "pyngx" or a.endswith("pyngx/__main__.py") for a in args[:3]):
            return f"process {pid} is not a pyngx master process"
    if "pyngx" not in " ".join(args[:3]):
        return f"process {pid} is not a pyngx master process"
    theirs = os.path.realpath(os.path.join(cwd, _prefix_arg(args)))
    if theirs != os.path.realpath(prefix):
        return f'process {pid} is the pyngx master process of prefix "{theirs}", not of "{prefix}"'
    return None


def _prefix_arg(args: list[str]) -> str:
    """The value of ``-p PREFIX`` / ``-pPREFIX`` in ARGS, else "." (the default prefix)."""
    for i, arg in enumerate(args):
        if arg == "-p" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("-p") and len(arg) > 2:
            return arg[2:]
    return "."
