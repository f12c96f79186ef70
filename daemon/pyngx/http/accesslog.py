"""The access log in nginx's ``combined`` format.

Owns the file (opened ``O_APPEND``, reopened on USR1) and the line format.
Lines of one loop turn go out in one ``write()``, so a busy worker makes one
syscall per batch rather than per request, and each line is whole (nginx
writes the same way with ``buffer=``).
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from pyngx import log

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange

_ESCAPE = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}


def escape(text: str) -> str:
    """nginx's escaping of variables in log lines: ``"``, ``\\`` and non-printables as ``\\xHH``."""
    if text.isprintable() and text.isascii() and '"' not in text and "\\" not in text:
        return text
    raw = text.encode("utf-8", "surrogateescape")
    return "".join(_ESCAPE.get(b, chr(b)) for b in raw)


class AccessLog:
    """One ``access_log PATH;`` file."""

    __slots__ = ("path", "fd", "loop", "pending", "stamp_second", "stamp")

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self.loop = loop
        self.fd = -1
        self.pending: list[str] = []
        self.stamp_second = -1
        self.stamp = ""
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the file by its path; a failure is logged and the old file kept."""
        self._flush()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            log.alert(f'open() "{self.path}" failed ({exc.errno}: {exc.strerror})')
            return
        old, self.fd = self.fd, fd
        if old >= 0:
            os.close(old)

    def write(self, ex: Exchange) -> None:
        if not self.pending:
            self.loop.call_soon(self._flush)
        self.pending.append(self.line(ex))

    def line(self, ex: Exchange) -> str:
        now = int(time.time())
        if now != self.stamp_second:
            self.stamp_second = now
            self.stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(now))
        peer = ex.conn.peer
        addr = peer[0] if isinstance(peer, tuple) else "-"
        referer = ex.header(b"referer")
        agent = ex.header(b"user-agent")
        return (f'{addr} - - [{self.stamp}] "{escape(ex.request_line())}" {ex.status} {ex.body_bytes} '
                f'"{_header(referer)}" "{_header(agent)}"\n')

    def _flush(self) -> None:
        if not self.pending or self.fd < 0:
            return
        data = "".join(self.pending).encode("utf-8", "surrogateescape")
        self.pending.clear()
        try:
            os.write(self.fd, data)
        except OSError as exc:
            log.alert(f'write() to "{self.path}" failed ({exc.errno}: {exc.strerror})')

    def close(self) -> None:
        self._flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _header(value: bytes | None) -> str:
    return "-" if value is None else escape(value.decode("utf-8", "surrogateescape"))
