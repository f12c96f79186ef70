"""Argument values: sizes, times, flags, numbers.

Each parser returns the value or raises `Invalid` with nginx's reason
("invalid value "12x""); the directive framework adds the directive's name and
the file:line. Knows nothing of directives or files.
"""
from __future__ import annotations

import re


class Invalid(Exception):
    """A bad argument: the reason follows ``"NAME" directive `` unless WHOLE (then it is the message)."""

    def __init__(self, reason: str, *, whole: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.whole = whole


_SIZE = re.compile(r"(\d+)([kKmMgG]?)", re.ASCII)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TIME = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|M|y|)", re.ASCII)
_TIME_UNITS = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
               "M": 2592000.0, "y": 31536000.0}


def size(text: str) -> int:
    """``512``, ``64k``, ``1m``, ``2G`` → bytes (units in either case, as nginx)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise Invalid(f'invalid value "{text}"')
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def time(text: str) -> float:
    """``30``, ``30s``, ``500ms``, ``1m``, ``2h``, ``1d``, ``1h30m`` → seconds (a bare number is seconds)."""
    total, pos = 0.0, 0
    while pos < len(text):
        m = _TIME.match(text, pos)
        if m is None or m.end() == pos:
            raise Invalid(f'invalid value "{text}"')
        total += float(m.group(1)) * _TIME_UNITS[m.group(2)]
        pos = m.end()
        if m.group(2) == "" and pos < len(text):
            raise Invalid(f'invalid value "{text}"')
    if not text:
        raise Invalid('invalid value ""')
    return total


def flag(text: str) -> bool:
    """``on``/``off`` (case-insensitive, as nginx)."""
    low = text.lower()
    if low == "on":
        return True
    if low == "off":
        return False
    raise Invalid(f'invalid value "{text}", it must be "on" or "off"')


def number(text: str, low: int = 0) -> int:
    """A decimal integer >= LOW."""
    if not text.isdigit() or not text.isascii():
        raise Invalid(f'invalid number "{text}"')
    value = int(text)
    if value < low:
        raise Invalid(f'invalid number "{text}", it must be at least {low}')
    return value


def positive(text: str) -> int:
    """A decimal integer >= 1."""
    return number(text, 1)


def word(text: str) -> str:
    """The argument as written."""
    return text


# -- a default value as the docs show it (the inverse of the parsers above) --

def show_size(value: int) -> str:
    for unit, scale in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if value and value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


def show_time(value: float | None) -> str:
    if value is None:
        return "off"
    if value < 1 or value != int(value):
        return f"{round(value * 1000)}ms"
    return f"{int(value)}s"


def show_flag(value: bool) -> str:
    return "on" if value else "off"
