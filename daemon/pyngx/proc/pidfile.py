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
