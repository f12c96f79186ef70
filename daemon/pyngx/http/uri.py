"""The request target: raw bytes → the normalised ``$uri`` and ``$args``.

Owns nginx's URI rules (``ngx_http_parse_complex_uri``): percent-decoding,
merging ``//``, resolving ``.`` and ``..`` (a ``..`` above the root is a
400), no NUL. Knows nothing of connections.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import httptools


class BadTarget(Exception):
    """The request target cannot be served (the connection answers 400)."""

    status = 400


def split(url: bytes) -> tuple[str, str]:
    """(uri, args) for a request target (origin-form or absolute-form).

    Raises BadTarget.
    """
    if url[:1] != b"/":
        url = _origin_form(url)
    path, sep, query = url.partition(b"?")
    if b"%" in path or b"/." in path or b"//" in path:
        path = _normalise(path)
    elif b"\x00" in path:
        raise BadTarget("NUL in URI")
    args = query.decode("utf-8", "surrogateescape") if sep else ""
    return path.decode("utf-8", "surrogateescape"), args


def _origin_form(url: bytes) -> bytes:
    """``http://host/path?q`` → ``/path?q`` (RFC 9112 §3.2.2); ``*`` and garbage are refused."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise BadTarget("invalid URL") from None
    if parsed.schema not in (b"http", b"https") or not parsed.host:
        raise BadTarget("invalid URL")
    out = parsed.path or b"/"
    if parsed.query is not None:
        out += b"?" + parsed.query
    return out


def _normalise(path: bytes) -> bytes:
    raw = unquote_to_bytes(path)
    if b"\x00" in raw:
        raise BadTarget("NUL in URI")
    parts: list[bytes] = []
    segments = raw.split(b"/")
    for seg in segments[1:-1]:
        _step(parts, seg)
    last = segments[-1] if len(segments) > 1 else b""
    trailing = last in (b"", b".", b"..")
    _step(parts, last)
    out = b"/" + b"/".join(parts)
    if trailing and parts:
        out += b"/"
    return out


def _step(parts: list[bytes], seg: bytes) -> None:
    if seg in (b"", b"."):
        return
    if seg == b"..":
        if not parts:
            raise BadTarget("URI above the root")
        parts.pop()
        return
    parts.append(seg)


# nginx takes bytes >= 0x80 in the request target (``GET /é``, ``/?x=\xff``); llhttp refuses
# them. They travel through the parser as ``%~XX`` (a ``%~`` already there as ``%~25~``)
# and `unescape_line` puts them back before anything reads the target.
_HIGH = re.compile(rb"[\x80-\xff]|%(?=~)")
_UNESCAPE = re.compile(rb"%~([0-9a-f]{2})")


def escape_line(data: bytes) -> bytes | None:
    """DATA with the bytes >= 0x80 of its first line escaped, or None when it has none there.

    DATA starts inside a request line (CRLFs before a request are skipped as the parser does).
    Known gap: a second pipelined request in the same read is not escaped (it gets a 400).
    """
    start = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\n", start)
    if end < 0:
        end = len(data)
    line = _HIGH.sub(_escape_byte, data[start:end])
    if len(line) == end - start:
        return None
    return data[:start] + line + data[end:]


def unescape_line(url: bytes) -> bytes:
    """The request target as the client sent it (undoes `escape_line`)."""
    return _UNESCAPE.sub(_unescape_byte, url)


def _escape_byte(m: re.Match[bytes]) -> bytes:
    return b"%%~%02x" % m.group()[0]


def _unescape_byte(m: re.Match[bytes]) -> bytes:
    return bytes.fromhex(m.group(1).decode())
