"""Status lines and nginx's built-in answer pages, rendered once.

Owns the bytes of ``HTTP/1.1 404 Not Found`` and of the small HTML page
nginx sends for an error or a redirect (``ngx_http_special_response.c``).
Knows nothing of connections or requests.
"""
from __future__ import annotations

import time
from http import HTTPStatus

SERVER = "pyngx"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# nginx's own reason phrases where they differ from the RFC names Python knows.
_REASONS = {
    302: "Moved Temporarily",
    405: "Not Allowed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    416: "Requested Range Not Satisfiable",
    444: "No Response",
    494: "Request Header Too Large",
    499: "Client Closed Request",
}

NO_BODY = frozenset((204, 304))  # and every 1xx (RFC 9110 §6.4.1)


def http_date(seconds: float) -> str:
    """``Thu, 03 Dec 2026 08:23:17 GMT``: RFC 9110's IMF-fixdate, in English whatever the locale.

    What ``email.utils.formatdate(seconds, usegmt=True)`` writes, without its import (email
    and its charsets: a twentieth of a start).
    """
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def reason(code: int) -> str:
    """The reason phrase for CODE ("Unknown" for codes nobody named)."""
    if code in _REASONS:
        return _REASONS[code]
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _line(code: int) -> bytes:
    return f"HTTP/1.1 {code} {reason(code)}\r\n".encode("latin-1")


STATUS_LINES: dict[int, bytes] = {code: _line(code) for code in range(100, 600)}


def status_line(code: int) -> bytes:
    """``HTTP/1.1 CODE REASON\\r\\n`` (precomputed for 100..599)."""
    line = STATUS_LINES.get(code)
    return line if line is not None else f"HTTP/1.1 {code} Unknown\r\n".encode("latin-1")


def _page(code: int) -> bytes:
    title = f"{code} {reason(code)}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>{SERVER}</center>\r\n</body>\r\n</html>\r\n"
    ).encode("latin-1")


# nginx sends a page for redirects and errors; other codes answer with no body.
PAGES: dict[int, bytes] = {code: _page(code) for code in range(300, 600) if code not in NO_BODY}


def page(code: int) -> bytes:
    """nginx's HTML page for CODE, or b"" for codes that get none (2xx, 1xx, 204, 304)."""
    return PAGES.get(code, b"")

