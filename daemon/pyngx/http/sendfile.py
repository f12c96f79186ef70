"""A file's response: validators, 304/412, ranges (206/416, multipart), and the body out.

Owns nginx's not_modified and range filters for files (``ETag`` as
``"MTIME-SIZE"`` in hex, ``Last-Modified``, ``If-None-Match``,
``If-Modified-Since`` per ``if_modified_since``, ``If-Match``,
``If-Unmodified-Since``, ``Range`` and ``If-Range``, ``max_ranges``) and
writing the head and the body straight to the socket: ``os.sendfile`` (or
32k ``pread`` pieces with ``sendfile off``), never the whole file through
Python. The fast case (the socket takes it all) completes in the caller; when
the socket is full the rest is sent from writability callbacks (on a ``dup``
of the socket, since the transport owns its fd), bounded by
``send_timeout``, with the connection marked busy so pipelined requests wait.
"""
from __future__ import annotations

import errno
import os
from itertools import count
from typing import TYPE_CHECKING, Union

from pyngx import log
from pyngx.http import replies

if TYPE_CHECKING:
    from os import stat_result

    from pyngx.http.exchange import Exchange
    from pyngx.http.protocol import HttpProtocol
    from pyngx.http.static import Files

CHUNK = 32768  # sendfile off: nginx's output_buffers 2 32k
_MAX = 1 << 62
Piece = Union[bytes, tuple[int, int]]  # bytes to write, or (offset, count) of the file
_boundaries = count(1)
_dates: dict[int, str] = {}
_GONE = frozenset((errno.EPIPE, errno.ECONNRESET))
NONE = ()  # a header value of no items renders no line (here: no Content-Type on a 304)


def http_date(mtime: int) -> str:
    """``Thu, 03 Dec 2026 08:23:17 GMT`` for MTIME, remembered (files repeat)."""
    text = _dates.get(mtime)
    if text is None:
        if len(_dates) > 4096:
            _dates.clear()
        text = _dates[mtime] = replies.http_date(mtime)
    return text


def _parse_date(value: bytes) -> int | None:
    from calendar import timegm  # here: email's import is a twentieth of a start, and few requests
    from email.utils import parsedate  # carry a date to compare

    parsed = parsedate(value.decode("latin-1"))
    if parsed is None:
        return None
    try:
        return timegm(parsed)
    except (ValueError, OverflowError):
        return None


def fill(ex: Exchange, status: int) -> None:
    """Make EX's answer STATUS with nginx's page (as `pyngx.http.answers.fill`, which this room cannot import)."""
    ex.status = status
    body = replies.page(status)
    ex.out_headers = {"content-type": ("Content-Type", "text/html")} if body or status >= 300 else None
    ex.out = [body] if body else []


def answer(conn: HttpProtocol, ex: Exchange, status: int) -> None:
    """Answer STATUS with nginx's page: the file's writer ends the exchange itself."""
    fill(ex, status)
    conn.finish(ex)


# -- the not_modified filter --

def _match(value: bytes, etag: str | None, weak: bool) -> bool:
    """ngx_http_test_if_match: ``*`` or one of the listed tags equals ETAG (weakly for If-None-Match)."""
    if etag is None:
        return False
    text = value.decode("latin-1").strip()
    if text == "*":
        return True
    mine = etag[2:] if weak and etag.startswith("W/") else etag
    for tag in text.split(","):
        tag = tag.strip()
        if weak and tag.startswith("W/"):
            tag = tag[2:]
        if tag == mine:
            return True
    return False


_WANTED = frozenset((b"if-unmodified-since", b"if-match", b"if-modified-since", b"if-none-match", b"if-range",
                     b"range"))


def _wanted(ex: Exchange) -> dict[bytes, bytes]:
    """The conditional and range headers of EX, in one pass (most requests have none)."""
    found: dict[bytes, bytes] = {}
    for name, value in ex.headers:
        if name[:1] in b"iIrR" and len(name) in (5, 8, 17, 13, 19):  # range, if-match, if-(none-)match...
            key = name.lower()
            if key in _WANTED and key not in found:
                found[key] = value
    return found


def _condition(hdrs: dict[bytes, bytes], files: Files, mtime: int, etag: str | None) -> int:
    """200, 304 or 412 for the request's conditional headers (nginx's not_modified filter)."""
    ius = hdrs.get(b"if-unmodified-since")
    if ius is not None:
        when = _parse_date(ius)
        if when is not None and when < mtime:
            return 412
    im = hdrs.get(b"if-match")
    if im is not None and not _match(im, etag, False):
        return 412
    ims = hdrs.get(b"if-modified-since")
    inm = hdrs.get(b"if-none-match")
    if ims is None and inm is None:
        return 200
    if ims is not None:
        mode = files.conf.if_modified_since
        when = _parse_date(ims) if mode != "off" else None
        if when is None or (when != mtime and (mode == "exact" or when < mtime)):
            return 200
    if inm is not None and not _match(inm, etag, True):
        return 200
    return 304


# -- the range filter --

def _if_range(hdrs: dict[bytes, bytes], mtime: int, etag: str | None) -> bool:
    value = hdrs.get(b"if-range")
    if value is None:
        return True
    if value.startswith(b'"'):
        return etag is not None and value.decode("latin-1").strip() == etag
    return _parse_date(value) == mtime


def ranges(spec: bytes, size: int, limit: int) -> list[tuple[int, int]] | int:
    """ngx_http_range_parse: [(start, end-exclusive)], or 200 (serve it whole) or 416."""
    text = spec[6:].decode("latin-1")
    left = limit if limit >= 0 else _MAX
    out: list[tuple[int, int]] = []
    total = 0
    for item in text.split(","):
        first, dash, second = item.strip(" ").partition("-")
        first, second = first.strip(" "), second.strip(" ")
        if not dash or (first and not first.isdigit()) or not (second.isdigit() or (first and not second)):
            return 416
        if not second.isascii() or not first.isascii():
            return 416
        if not first:  # a suffix: the last N bytes
            n = int(second)
            start, end = (size - n if n < size else 0), size
        else:
            start = int(first)
            end = size if not second or int(second) >= size else int(second) + 1
        if start < end:
            out.append((start, end))
            total += end - start
            if left == 0:
                return 200
            left -= 1
        elif start == 0:
            return 200
    if not out:
        return 416
    if total > size:
        return 200
    return out


# -- the response --

def respond(conn: HttpProtocol, ex: Exchange, files: Files, fd: int, st: stat_result) -> None:
    """Answer EX with the open file FD (closed here, whatever happens)."""
    size = st.st_size
    mtime = int(st.st_mtime)
    conf = files.conf
    etag = f'"{mtime:x}-{size:x}"' if conf.etag else None
    hdrs = ex.out_headers = {"content-type": ("Content-Type", files.content_type(ex.uri)),
                             "last-modified": ("Last-Modified", http_date(mtime))}
    if etag is not None:
        hdrs["etag"] = ("ETag", etag)
    wanted = _wanted(ex)
    status = _condition(wanted, files, mtime, etag) if wanted else 200
    if status != 200:
        os.close(fd)
        if status == 304:
            ex.status = 304
            hdrs["content-type"] = ("Content-Type", NONE)
            return send(conn, ex, -1, [ex.head(None)], 0, files)
        return answer(conn, ex, 412)
    pieces: list[Piece]
    spec = wanted.get(b"range")
    found: list[tuple[int, int]] | int = 200
    if conf.max_ranges != 0 and ex.version != "0.9":
        if spec is not None and len(spec) >= 7 and spec[:6].lower() == b"bytes=" and _if_range(wanted, mtime, etag):
            found = ranges(spec, size, conf.max_ranges)
    if found == 416:
        os.close(fd)
        ex.status = 416
        ex.out = [replies.page(416)]
        ex.out_headers = {"content-type": ("Content-Type", "text/html"),
                          "content-range": ("Content-Range", f"bytes */{size}")}
        return conn.finish(ex)
    if isinstance(found, list):
        ex.status = 206
        pieces, length = _partial(ex, hdrs, found, size)
    else:
        if conf.max_ranges != 0:
            hdrs["accept-ranges"] = ("Accept-Ranges", "bytes")
        pieces, length = ([(0, size)] if size else []), size
    if conn.site.draining:
        ex.keep_alive = False
    head = ex.head(length)
    if ex.head_only:
        os.close(fd)
        return send(conn, ex, -1, [head], 0, files)
    send(conn, ex, fd, [head, *pieces], length, files)


def _partial(ex: Exchange, hdrs: dict, found: list[tuple[int, int]], size: int) -> tuple[list[Piece], int]:
    """The pieces of a 206: one range as it is, several as multipart/byteranges (nginx's layout)."""
    if len(found) == 1:
        start, end = found[0]
        hdrs["content-range"] = ("Content-Range", f"bytes {start}-{end - 1}/{size}")
        return [(start, end - start)], end - start
    boundary = f"{next(_boundaries):020d}"
    ctype = hdrs["content-type"][1]
    hdrs["content-type"] = ("Content-Type", f"multipart/byteranges; boundary={boundary}")
    pieces: list[Piece] = []
    length = 0
    for start, end in found:
        part = (f"\r\n--{boundary}\r\nContent-Type: {ctype}\r\n"
                f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n").encode("latin-1")
        pieces += [part, (start, end - start)]
        length += len(part) + end - start
    tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
    pieces.append(tail)
    return pieces, length + len(tail)


# -- writing --

def _push(sock: int, fd: int, pieces: list[Piece], use_sendfile: bool) -> int:
    """Write PIECES to SOCK until done or the socket is full; returns the body bytes written.

    Consumed pieces are removed; a partly written one is replaced by its rest. Raises OSError
    (not BlockingIOError) when the connection is gone.
    """
    body = 0
    try:
        while pieces:
            piece = pieces[0]
            if isinstance(piece, bytes):
                n = os.write(sock, piece)
                if n < len(piece):
                    pieces[0] = piece[n:]
                    return body
            else:
                offset, left = piece
                if use_sendfile:
                    n = os.sendfile(sock, fd, offset, left)
                else:
                    n = os.write(sock, os.pread(fd, min(left, CHUNK), offset))
                if n == 0:  # the file shrank under us (nginx: "... was truncated")
                    raise OSError(0, "file was truncated while being sent")
                body += n
                if n < left:
                    pieces[0] = (offset + n, left - n)
                    continue
            del pieces[0]
    except BlockingIOError:
        pass
    return body


def send(conn: HttpProtocol, ex: Exchange, fd: int, pieces: list[Piece], length: int, files: Files) -> None:
    """Send PIECES (head first) then finish EX; at once when the socket takes it all, else as it drains."""
    ex.sent = True
    transport = conn.transport
    if conn.closed:
        return _done(conn, ex, fd)
    if transport.get_write_buffer_size() == 0:  # nothing of an earlier answer waits in the transport
        sock = transport.get_extra_info("socket").fileno()
        try:
            ex.body_bytes += _push(sock, fd, pieces, files.conf.sendfile)
        except OSError as exc:
            return _failed(conn, ex, fd, exc)
        if not pieces:
            ex.body_bytes = length  # multipart separators count, as nginx's $body_bytes_sent
            return _done(conn, ex, fd)
    try:
        _Rest(conn, ex, fd, pieces, files.conf.sendfile, length)
    except OSError as exc:  # no descriptor left for the watch (EMFILE): end this answer, keep the worker
        _failed(conn, ex, fd, exc)


class _Rest:
    """What the socket did not take at once, sent as it drains (callbacks on a writer watch, no task).

    The connection is ``busy`` meanwhile, so pipelined requests wait. The watch is on a ``dup()``
    of the socket: the transport owns the descriptor and the loop allows one watcher per fd.
    ``send_timeout`` bounds each pause, as nginx.
    """

    __slots__ = ("conn", "ex", "fd", "pieces", "use_sendfile", "sock", "watch", "timer", "last", "length")

    def __init__(self, conn: HttpProtocol, ex: Exchange, fd: int, pieces: list[Piece], use_sendfile: bool,
                 length: int) -> None:
        loop = conn.loop
        self.length = length
        self.conn, self.ex, self.fd, self.pieces, self.use_sendfile = conn, ex, fd, pieces, use_sendfile
        self.sock = conn.transport.get_extra_info("socket").fileno()
        self.watch = os.dup(self.sock)
        self.last = loop.time()
        conn.busy = True
        loop.add_writer(self.watch, self.writable)
        self.timer = loop.call_later(conn.site.conf.send_timeout, self.check_timeout)

    def writable(self) -> None:
        conn = self.conn
        if conn.closed:
            return self.end(None)
        if conn.transport.get_write_buffer_size():
            return None  # an earlier answer still drains from the transport; we come back (level-triggered)
        try:
            sent = _push(self.sock, self.fd, self.pieces, self.use_sendfile)
        except OSError as exc:
            return self.end(exc)
        self.ex.body_bytes += sent
        self.last = conn.loop.time()
        if not self.pieces:
            self.end(None)

    def check_timeout(self) -> None:
        conn = self.conn
        left = conn.site.conf.send_timeout - (conn.loop.time() - self.last)
        if left > 0 and not conn.closed:
            self.timer = conn.loop.call_later(left, self.check_timeout)
            return
        if not conn.closed:
            peer = conn.peer[0] if isinstance(conn.peer, tuple) and conn.peer else "unix"
            log.info(f"client timed out (110: Connection timed out) while sending response to client, "
                     f"client: {peer}, request: \"{self.ex.request_line()}\"")
            conn.abort()
        self.end(None)

    def end(self, exc: OSError | None) -> None:
        conn = self.conn
        conn.loop.remove_writer(self.watch)
        os.close(self.watch)  # the loop let go of it in remove_writer (libuv: uv_close, epoll DEL)
        self.timer.cancel()
        conn.busy = False
        if exc is not None:
            return _failed(conn, self.ex, self.fd, exc)
        if not self.pieces:
            self.ex.body_bytes = self.length
        _done(conn, self.ex, self.fd)


def _done(conn: HttpProtocol, ex: Exchange, fd: int) -> None:
    if fd >= 0:
        os.close(fd)
    conn.finish(ex)


def _failed(conn: HttpProtocol, ex: Exchange, fd: int, exc: OSError) -> None:
    """The client went away mid-answer (or the file failed us): close, count, log as nginx."""
    level = log.INFO if exc.errno in _GONE else log.CRIT
    log.log(level, f"sendfile() failed ({exc.errno}: {exc.strerror}) while sending response to client, "
            f"request: \"{ex.request_line()}\"")
    conn.abort()
    _done(conn, ex, fd)
