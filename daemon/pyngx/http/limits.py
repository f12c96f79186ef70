"""What a request head may be, checked as nginx checks it: sizes and the Host header.

Owns the limits (``MAX_URI``, ``MAX_HEADERS_SIZE``) and `RequestError`, the
exception that carries the status a refused request is answered with. Knows
nothing of connections: `pyngx.http.protocol` calls these checks and answers.
"""
from __future__ import annotations

MAX_URI = 8192
MAX_HEADERS_SIZE = 32768


class RequestError(Exception):
    """The request cannot be served; the connection answers STATUS and closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def check_host(value: bytes) -> None:
    """Raise RequestError(400) for a Host nginx would refuse (ngx_http_validate_host)."""
    if b"/" in value or b"\\" in value or b".." in value or value[:1] == b"." or b"\x00" in value:
        raise RequestError(400)


def check_head(url: bytes, size: int) -> None:
    """Raise RequestError(414) for a request target over MAX_URI, 431 for a head over MAX_HEADERS_SIZE."""
    if len(url) > MAX_URI:
        raise RequestError(414)
    if size - len(url) > MAX_HEADERS_SIZE:
        raise RequestError(431)
