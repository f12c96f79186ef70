"""Every exception a user of pyngx can catch.

``str(exc)`` is OpenResty's error string for the same failure, so code ported
from Lua can match on the text it knows. This module imports nothing of ours.
"""
from __future__ import annotations

import builtins

__all__ = [
    "Error",
    "WrongContextError",
    "TooManyTimersError",
    "ProcessExitingError",
    "NoMemoryError",
    "KeyExistsError",
    "KeyNotFoundError",
    "NotANumberError",
    "NotAListError",
    "IsAListError",
    "IPCError",
    "TimeoutError",
    "ClosedError",
]


class Error(Exception):
    """Base class of every pyngx error."""


class WrongContextError(Error):
    """An API was called in a phase where it is not allowed."""


class TooManyTimersError(Error):
    """More timers than ``python_max_pending_timers`` are pending."""

    def __init__(self, msg: str = "too many pending timers") -> None:
        super().__init__(msg)


class ProcessExitingError(Error):
    """A timer was created after graceful exit began."""

    def __init__(self, msg: str = "process exiting") -> None:
        super().__init__(msg)


class NoMemoryError(Error):
    """A shared dict write does not fit in its zone."""

    def __init__(self, msg: str = "no memory") -> None:
        super().__init__(msg)


class KeyExistsError(Error):
    """``add`` found the key present."""

    def __init__(self, msg: str = "exists") -> None:
        super().__init__(msg)


class KeyNotFoundError(Error):
    """``replace``, ``incr``, ``ttl`` or ``expire`` found no such key."""

    def __init__(self, msg: str = "not found") -> None:
        super().__init__(msg)


class NotANumberError(Error):
    """``incr`` on a value that is not a number."""

    def __init__(self, msg: str = "not a number") -> None:
        super().__init__(msg)


class NotAListError(Error):
    """A list operation on a value that is not a list."""

    def __init__(self, msg: str = "value not a list") -> None:
        super().__init__(msg)


class IsAListError(Error):
    """``get`` or ``get_stale`` on a list value."""

    def __init__(self, msg: str = "value is a list") -> None:
        super().__init__(msg)


class IPCError(Error):
    """An IPC alert could not be sent."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - OpenResty's name
    """An operation did not finish in its timeout."""

    def __init__(self, msg: str = "timeout") -> None:
        super().__init__(msg)


class ClosedError(Error):
    """A read or write on a pipe that is closed."""

    def __init__(self, msg: str = "closed") -> None:
        super().__init__(msg)
