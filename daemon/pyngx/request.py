"""The response API of the request phases: ngx.say/print/flush/exit/status/header/var/ctx/redirect.

Each call names the phases it works in (``OUTPUT``, ``EXIT``, ``READ``), as
OpenResty's README gives each API's context; ``ngx.req`` is in `pyngx.req`,
``ngx.exec``/``ngx.location``/``ngx.eof``... in `pyngx.flow`.

Thin, as lua-resty-core's ``ngx.resp``/``ngx.req``: find the current
exchange through its context variable, check the phase, convert, delegate
to `pyngx.http.exchange`. Outside a request every call raises
`WrongContextError`, except say/print/flush under ``pyngx -e``, which go to
stdout as under ``resty -e``, and ``exit``, which also ends a timer callback or
``-e`` code (checked only where the error would be raised, so a request pays
nothing for it).
"""
from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any

from pyngx import log as _log
from pyngx.errors import WrongContextError
from pyngx.http import native, phases, replies, variables
from pyngx.http.exchange import _NAMES, CURRENT, Exchange, clean_value, header_name
from pyngx.http.route import PHASED
from pyngx.runtime import core, phase
from pyngx.runtime.phase import Exit

__all__ = ["say", "print", "flush", "exit", "redirect", "header", "var", "get_status", "set_status",
           "get_ctx"]

_current = CURRENT.get
_fast = native.load()  # the C extension of the HTTP path (say, print and ngx.header's setters), or None
# the context variable's own get (no wrapper call on the hot path), else the public reader
_phase = getattr(getattr(phase, "_phase", None), "get", phase.current)
_CONTENT = phase.CONTENT
_EXIT_ELSEWHERE = (phase.TIMER, phase.EXEC)  # where ngx.exit also ends the running code
_LOG = phase.LOG
_AFTER_HEAD = frozenset((phase.BODY_FILTER, phase.LOG))  # the head is out (in nginx) by then
_SETTABLE = phase.REQUEST - _AFTER_HEAD  # where ngx.header may be set (until the head is out)
# Where each group of the API works (lua-nginx-module's README, each API's "context:" line).
OUTPUT = phase.YIELDING  # say, print, flush, redirect, exec, capture, read_body, set_*
EXIT = phase.YIELDING | {phase.HEADER_FILTER}
HEADERS_SET = phase.YIELDING | {phase.HEADER_FILTER}
READ = phase.REQUEST  # var, ctx, status and headers read, get_method, get_uri_args, get_headers
_ORDER = (phase.REWRITE, phase.ACCESS, phase.CONTENT, phase.HEADER_FILTER, phase.BODY_FILTER, phase.LOG)


def _exchange(api: str, allowed: frozenset[str] = OUTPUT) -> Exchange:
    """The current request, when the running phase is one of ALLOWED; else WrongContextError."""
    ex = _current()
    here = _phase()
    if ex is not None and here in allowed and (not ex.done or here is _LOG):
        return ex
    where = ", ".join(p for p in _ORDER if p in allowed)
    raise WrongContextError(f"{api}: API disabled in the context of {here or 'this process'} (allowed in {where})")




# Request text that was not UTF-8 ($uri of /a%ff, args, headers) holds its bytes as lone
# surrogates (surrogateescape); encoding the same way writes those bytes back, as OpenResty
# writes a Lua string as it is.
_ENC = "utf-8"
_ERRORS = "surrogateescape"


def _encode(args: tuple[Any, ...]) -> bytes:
    if len(args) == 1:
        a = args[0]
        if type(a) is str:
            return a.encode(_ENC, _ERRORS)
        if type(a) is bytes:
            return a
    return b"".join(a if isinstance(a, (bytes, bytearray)) else str(a).encode(_ENC, _ERRORS) for a in args)


def _stdout(data: bytes) -> None:
    """``pyngx -e``: DATA to stdout, after what print() left in the text layer."""
    out = sys.stdout
    out.flush()
    raw = getattr(out, "buffer", None)
    if raw is None:
        out.write(data.decode(errors="replace"))  # a text-only stdout (replaced by the caller)
    else:
        raw.write(data)


# (say and print are shown as ``(*args)``, the C extension's signature, whichever runs)
def say(*args):  # type: ignore[no-untyped-def]
    """Buffer ARGS (concatenated, str() for non-bytes) and a newline for the response body."""
    ex = _current()
    if ex is None or ex.done or _phase() != _CONTENT:
        if core.RT.exec_mode:
            return _stdout(_encode(args) + b"\n")
        _exchange("ngx.say")
    ex.out.append(_encode(args) + b"\n")  # type: ignore[union-attr]


def print(*args):  # type: ignore[no-untyped-def]  # noqa: A001 - OpenResty's name
    """Buffer ARGS (concatenated) for the response body."""
    ex = _current()
    if ex is None or ex.done or _phase() != _CONTENT:
        if core.RT.exec_mode:
            return _stdout(_encode(args))
        _exchange("ngx.print")
    ex.out.append(_encode(args))  # type: ignore[union-attr]


if _fast is not None:  # one str in the content phase is appended in C; every other case comes here
    _fast.setup_output(say, print)
    say = _fast.say  # noqa: F811
    print = _fast.print  # noqa: A001


class _Done:
    """What ngx.flush / ngx.req.read_body return when there is nothing to wait for:
    awaitable, and harmless when not awaited (a plain block may call them)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


class _Wait:
    __slots__ = ("future",)

    def __init__(self, future: Any) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, None]:
        return (yield from self.future.__await__())


_DONE = _Done()


def flush() -> _Done | _Wait:
    """Send the response head and the buffered body now (chunked); awaiting it waits
    until the socket takes more."""
    ex = _current()
    if ex is None or ex.done or _phase() != _CONTENT:
        if core.RT.exec_mode:
            sys.stdout.flush()
            return _DONE
        _exchange("ngx.flush")
    route = ex.route  # type: ignore[union-attr]
    if route is not None and route.kind is PHASED:
        waiter = phases.flush(ex)  # type: ignore[arg-type]
    else:
        waiter = ex.conn.flush(ex)  # type: ignore[union-attr,arg-type]
    return _DONE if waiter is None else _Wait(waiter)


def exit(status: int) -> None:  # noqa: A001 - OpenResty's name
    """End the handler now. STATUS >= 200 answers with it (nginx's page when nothing was printed);
    0 (ngx.OK) sends what was printed. In a timer callback or ``pyngx -e`` it ends that code
    and STATUS is ignored, as in OpenResty's ``ngx.timer`` context."""
    ex = _current()
    if ex is None or ex.done or _phase() != _CONTENT:
        if _phase() in _EXIT_ELSEWHERE:
            int(status)  # a status that is not a number is still an error
            raise Exit
        ex = _exchange("ngx.exit", EXIT)
    status = int(status)
    if status == 444:  # nginx's "close the connection, answer nothing"
        ex.conn.abort()
    elif status >= 200 and not ex.sent:
        ex.status = status
        if not ex.out and status >= 300:
            ex.out = [replies.page(status)]
            _set_header(ex, "Content-Type", "text/html")
    raise Exit(status)


def redirect(uri: str, status: int = 302) -> None:
    """Answer with a redirect to URI and end the handler."""
    ex = _exchange("ngx.redirect")
    if status not in (301, 302, 303, 307, 308):
        raise ValueError(f"only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT,"
                         f" ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed (got {status})")
    if ex.sent:
        raise WrongContextError("attempt to call ngx.redirect after sending out the headers")
    ex.status = status
    _set_header(ex, "Location", clean_value(uri))
    _set_header(ex, "Content-Type", "text/html")
    ex.out = [replies.page(status)]
    raise Exit


def get_status() -> int:
    return _exchange("ngx.status", READ).status


def set_status(value: int) -> None:
    ex = _exchange("ngx.status", READ)
    if ex.sent or ex.done or _phase() in _AFTER_HEAD:
        _log.error("attempt to set ngx.status after sending out response headers")
        return
    ex.status = int(value)


def get_ctx() -> dict[str, Any]:
    ex = _exchange("ngx.ctx", READ)
    if ex.ctx is None:
        ex.ctx = {}
    return ex.ctx


def _set_header(ex: Exchange, name: str, value: Any) -> None:
    hit = _NAMES.get(name)
    name, key = hit if hit is not None else header_name(name)
    hdrs = ex.out_headers
    if hdrs is None:
        hdrs = ex.out_headers = {}
    if type(value) is str:
        hdrs[key] = (name, value if "\r" not in value and "\n" not in value else clean_value(value))
    elif value is None or (isinstance(value, (list, tuple)) and not value):
        hdrs.pop(key, None)
    elif isinstance(value, (list, tuple)):
        hdrs[key] = (name, [clean_value(v) for v in value])
    else:
        hdrs[key] = (name, clean_value(value))


if _fast is not None:  # the common ngx.header[...] = ... in C; the rest comes to `_Header._set`
    _fast.setup_header(_NAMES, _SETTABLE)
    _HeaderBase: Any = _fast.HeaderBase
else:
    class _HeaderBase:
        __slots__ = ()

        def __setitem__(self, name: str, value: Any) -> None:
            self._set(name, value)  # type: ignore[attr-defined]

        def __delitem__(self, name: str) -> None:
            self._set(name, None)  # type: ignore[attr-defined]

        def __setattr__(self, name: str, value: Any) -> None:
            self._set(name, value)  # type: ignore[attr-defined]

        def __delattr__(self, name: str) -> None:
            self._set(name, None)  # type: ignore[attr-defined]


class _Header(_HeaderBase):
    """``ngx.header``: response headers by name, ``ngx.header["X-Foo"]`` or ``ngx.header.x_foo``."""

    # Setting one (``ngx.header[NAME] = V``, ``ngx.header.NAME = V``, ``del``) goes through the base
    # class: with the C extension, a name seen before with a str value is set right there.
    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        """The response header NAME as set so far (case-insensitive; ``_`` reads as ``-``), else None."""
        ex = _exchange("ngx.header", READ)
        item = (ex.out_headers or {}).get(header_name(name)[1])
        return None if item is None else item[1]

    def _set(self, name: str, value: Any) -> None:
        """Set (None: remove) the response header NAME."""
        ex = _current()
        if ex is not None and not ex.sent and not ex.done and _phase() in _SETTABLE:
            return _set_header(ex, name, value)  # the common case, with the checks below in one line
        ex = _exchange("ngx.header", READ)
        if ex.sent or ex.done or _phase() in _AFTER_HEAD:
            _log.error(f"attempt to set ngx.header.{name} after sending out response headers")
            return
        _set_header(ex, name, value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __contains__(self, name: str) -> bool:
        return self[name] is not None


class _Var:
    """``ngx.var``: nginx variables by name (``ngx.var.uri``), captures by number (``ngx.var[1]``)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        ex = _current()
        if ex is None or _phase() not in READ or ex.done:  # (`_exchange`'s check, inline: a hot read)
            ex = _exchange("ngx.var", READ)
        return variables.get(ex, name)

    def __setattr__(self, name: str, value: Any) -> None:
        variables.assign(_exchange("ngx.var", READ), name, value)

    def __getitem__(self, key: str | int) -> Any:
        """The variable KEY (``ngx.var["uri"]``), or regex capture KEY when it is an int; None when unset."""
        ex = _exchange("ngx.var", READ)
        if isinstance(key, int):
            return variables.capture(ex, key)
        return variables.get(ex, key)

    def __setitem__(self, key: str, value: Any) -> None:
        variables.assign(_exchange("ngx.var", READ), str(key), value)


header = _Header()
var = _Var()
