"""The error log in nginx's line format, shared safely by every process.

A line is ``2026/11/23 07:30:55 [notice] 1234#0: message``. Each line goes out
in one ``write()`` on a descriptor opened with ``O_APPEND``, so lines from the
master, the workers and the agent never interleave mid-line (nginx
``ngx_log_error_core`` does the same). Before the configured log is open,
lines go to stderr.
"""
from __future__ import annotations

import io
import os
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import TextIO

# nginx's levels, numbered as lua-nginx-module numbers ngx.EMERG .. ngx.DEBUG.
STDERR, EMERG, ALERT, CRIT, ERR, WARN, NOTICE, INFO, DEBUG = range(9)
LEVEL_NAMES = ("stderr", "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")
LEVELS = {name: number for number, name in enumerate(LEVEL_NAMES)}


class ErrorLog:
    """One error log: a path, a level, and the descriptor lines are written to."""

    __slots__ = ("path", "level", "fd", "also_stderr", "stdio", "context")

    def __init__(self) -> None:
        self.path: str | None = None
        self.level = NOTICE
        self.fd = 2
        self.also_stderr = False
        # True once fds 1 and 2 are this file (daemon on): every open and reopen moves them too
        self.stdio = False
        # What a line written inside a request ends with (", client: ..."); set by the HTTP server
        self.context: Callable[[], str] | None = None

    def open(self, path: str | None, level: int) -> None:
        """Start writing to PATH (None: stderr) at LEVEL; the old file is closed.

        Raises OSError when the file cannot be opened; the old log stays.
        """
        fd = 2
        if path is not None and path != "stderr":
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old = self.fd
        self.path, self.level, self.fd = (None if fd == 2 else path), level, fd
        if self.stdio and fd > 2:
            redirect_stdio(fd)
        if old > 2 and old != fd:
            os.close(old)

    def reopen(self) -> None:
        """Reopen the file by its path (logrotate renamed it; USR1)."""
        if self.path is not None:
            self.open(self.path, self.level)

    def write(self, level: int, msg: str) -> None:
        if level > self.level:
            return
        if self.context is not None:
            msg += self.context()
        line = format_line(level, msg)
        data = line.encode("utf-8", "backslashreplace")
        try:
            os.write(self.fd, data)
            if self.also_stderr and self.fd != 2:
                os.write(2, data)
        except OSError:
            pass  # a full disk must not take the process down


_stamp = [-1, ""]  # the second and its text: strftime() once a second, not once a line


def format_line(level: int, msg: str) -> str:
    now = int(time.time())
    if now != _stamp[0]:
        _stamp[0], _stamp[1] = now, time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(now))
    return f"{_stamp[1]} [{LEVEL_NAMES[level]}] {os.getpid()}#0: {msg}\n"


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


_reopen_hooks: list[Callable[[], None]] = []


def on_reopen(fn: Callable[[], None]) -> None:
    """Call FN on USR1 after the error log is reopened (the access log registers here)."""
    if fn not in _reopen_hooks:
        _reopen_hooks.append(fn)


def reopen_all() -> None:
    """USR1: reopen the error log by its path, then every registered log file."""
    try:
        error_log.reopen()
    except OSError as exc:
        error_log.write(ALERT, f'reopen() "{error_log.path}" failed ({exc.errno}: {exc.strerror})')
    for fn in list(_reopen_hooks):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one log that will not reopen must not stop the others
            exception("reopening a log failed", exc, ALERT)


def stderr(msg: str) -> None:
    """Write a line to the terminal whatever the log says (cli only)."""
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# -- stdout and stderr of a serving process --

def redirect_stdio(fd: int) -> None:
    """Point fds 1 and 2 at FD (the error log): what C code, a crashing interpreter or a
    subprocess writes there lands in the log (nginx redirects stderr the same way)."""
    for target in (1, 2):
        try:
            os.dup2(fd, target)
        except OSError:
            pass


class LogStream(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a serving process: each line written becomes an
    error log line at notice, tagged with the writer's file and line, as OpenResty's
    ``print()`` does. ECHO (a terminal, with ``daemon off``) gets the text as written too."""

    def __init__(self, fd: int, echo: TextIO | None) -> None:
        super().__init__()
        self._fd, self._echo, self._buf, self._where = fd, echo, "", ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return self._echo is not None

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._echo is not None and error_log.fd != 2:
            self._echo.write(text)
            self._echo.flush()
        if not self._buf:
            frame = sys._getframe(1)  # print() is C: the frame that called it
            self._where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        self._buf += text
        if "\n" in text:
            done, _, self._buf = self._buf.rpartition("\n")
            self._emit(done)
            if self._buf:  # the rest began with this write
                frame = sys._getframe(1)
                self._where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return len(text)

    def flush(self) -> None:
        if self._buf:
            text, self._buf = self._buf, ""
            self._emit(text)

    def _emit(self, text: str) -> None:
        if NOTICE <= error_log.level:
            for line in text.split("\n"):
                error_log.write(NOTICE, f"[python] {self._where}: {line}")


def capture_stdio(echo: bool) -> None:
    """From now on print() and sys.stdout/sys.stderr go to the error log at notice; with
    ECHO, a terminal on stdout or stderr still shows what is written to it."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        try:
            tty = echo and old is not None and old.isatty()
        except (ValueError, OSError):
            tty = False
        if old is not None:
            try:
                old.flush()
            except (ValueError, OSError):
                pass
        setattr(sys, name, LogStream(fd, old if tty else None))


# -- ngx.log --
#
# `pyngx/__init__.py` binds the name `log` to ngx.log, which hides this module
# as the attribute ``pyngx.log``: after that, ``from pyngx import log`` would
# give the function. So this module is itself callable and IS ngx.log; every
# spelling (``ngx.log(ngx.ERR, ...)``, ``from pyngx import log; log.error(...)``)
# then works.

def user(level: int, args: tuple[object, ...], filename: str, lineno: int) -> None:
    """ngx.log: ARGS concatenated (``str()`` of each, bytes decoded), tagged with the caller's FILENAME:LINENO."""
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= DEBUG:
        raise ValueError(f"bad log level: {level!r}")
    if level > error_log.level:
        return
    msg = "".join(a if isinstance(a, str) else _text(a) for a in args)
    error_log.write(level, f"[python] {filename}:{lineno}: {msg}")


def _text(value: object) -> str:
    """Bytes as their UTF-8 text, anything else as str() (``None``, ``True``: Python's words)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


class _LogModule(types.ModuleType):
    """This module, callable as ``ngx.log(level, *args)``."""

    def __call__(self, level: int, *args: object) -> None:
        """Write ARGS (concatenated; None as "nil") to the error log at LEVEL (ngx.ERR, ngx.INFO, ...),
        tagged with the caller's file:line; dropped when LEVEL is below error_log's. Raises ValueError
        for a level that is not one of ngx's."""
        frame = sys._getframe(1)
        user(level, args, frame.f_code.co_filename, frame.f_lineno)


sys.modules[__name__].__class__ = _LogModule
