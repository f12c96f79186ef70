"""The error log in nginx's line format, shared safely by every process.

A line is ``2026/11/23 07:30:55 [notice] 1234#0: message``. Each line goes out
in one ``write()`` on a descriptor opened with ``O_APPEND``, so lines from the
master, the workers and the agent never interleave mid-line (nginx
``ngx_log_error_core`` does the same). Before the configured log is open,
lines go to stderr.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

# nginx's levels, numbered as lua-nginx-module numbers ngx.EMERG .. ngx.DEBUG.
STDERR, EMERG, ALERT, CRIT, ERR, WARN, NOTICE, INFO, DEBUG = range(9)
LEVEL_NAMES = ("stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
LEVELS = {name: number for number, name in enumerate(LEVEL_NAMES)}


class ErrorLog:
    """One error log: a path, a level, and the descriptor lines are written to."""

    __slots__ = ("path", "level", "fd", "also_stderr")

    def __init__(self) -> None:
        self.path: str | None = None
        self.level = NOTICE
        self.fd = 2
        self.also_stderr = False

    def open(self, path: str | None, level: int) -> None:
        """Start writing to PATH (None: stderr) at LEVEL; the old file is closed.

        Raises OSError when the file cannot be opened; the old log stays.
        """
        fd = 2
        if path is not None and path != "stderr":
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old = self.fd
        self.path, self.level, self.fd = (None if fd == 2 else path), level, fd
        if old > 2 and old != fd:
            os.close(old)

    def reopen(self) -> None:
        """Reopen the file by its path (logrotate renamed it; USR1)."""
        if self.path is not None:
            self.open(self.path, self.level)

    def write(self, level: int, msg: str) -> None:
        if level > self.level:
            return
        line = format_line(level, msg)
        data = line.encode("utf-8", "backslashreplace")
        try:
            os.write(self.fd, data)
            if self.also_stderr and self.fd != 2:
                os.write(2, data)
        except OSError:
            pass  # a full disk must not take the process down


def format_line(level: int, msg: str) -> str:
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime())
    return f"{stamp} [{LEVEL_NAMES[level]}] {os.getpid()}#0: {msg}\n"


error_log = ErrorLog()


def log(level: int, msg: str) -> None:
    error_log.write(level, msg)


def enabled(level: int) -> bool:
    return level <= error_log.level


def debug(msg: str) -> None:
    error_log.write(DEBUG, msg)


def info(msg: str) -> None:
    error_log.write(INFO, msg)


def notice(msg: str) -> None:
    error_log.write(NOTICE, msg)


def warn(msg: str) -> None:
    error_log.write(WARN, msg)


def error(msg: str) -> None:
    error_log.write(ERR, msg)


def crit(msg: str) -> None:
    error_log.write(CRIT, msg)


def alert(msg: str) -> None:
    error_log.write(ALERT, msg)


def emerg(msg: str) -> None:
    error_log.write(EMERG, msg)


def exception(msg: str, exc: BaseException, level: int = ERR) -> None:
    """Log MSG followed by EXC's traceback (the user's file and line in it)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    error_log.write(level, f"{msg}: {tb.rstrip()}")


def stderr(msg: str) -> None:
    """Write a line to the terminal whatever the log says (cli only)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
