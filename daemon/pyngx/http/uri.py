"""The request target: raw bytes → the normalised ``$uri`` and ``$args``.

Owns nginx's URI rules (``ngx_http_parse_complex_uri``): percent-decoding,
merging ``//``, resolving ``.`` and ``..`` (a ``..`` above the root is a
400), no NUL. Knows nothing of connections.
"""
from __future__ import annotations

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
