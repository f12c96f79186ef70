"""``ngx.req``: the request line, arguments, headers and body, read and rewritten.

Thin, as lua-resty-core's ``ngx/req.lua``: check the phase (`pyngx.request._exchange`),
validate, change the `Exchange`. What a call changes is what later phases see:
``set_header`` changes ``ngx.var.http_*`` and ``get_headers()``, ``set_uri`` changes
``ngx.var.uri`` (and with ``jump=True`` in rewrite the location is looked up again,
as nginx's ``rewrite ... last``).
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from pyngx.errors import Error, WrongContextError
from pyngx.http import bodystream, native, variables
from pyngx.http.exchange import Exchange, Redirect
from pyngx.request import _DONE, OUTPUT, READ
from pyngx.request import _exchange as exchange
from pyngx.runtime import phase

__all__ = ["req"]

BODY_READ = phase.YIELDING | {phase.LOG}
# ngx.HTTP_GET...: OpenResty's method numbers (ngx_http_request.h NGX_HTTP_*)
METHODS = {2: "GET", 4: "HEAD", 8: "POST", 16: "PUT", 32: "DELETE", 64: "MKCOL", 128: "COPY", 256: "MOVE",
           512: "OPTIONS", 1024: "PROPFIND", 2048: "PROPPATCH", 4096: "LOCK", 8192: "UNLOCK", 16384: "PATCH",
           32768: "TRACE"}


def method_name(method: int | str, api: str) -> str:
    """An ngx.HTTP_* number or a method name, as the method's name."""
    if isinstance(method, str) and method and method.isascii() and method.isalpha():
        return method.upper()
    if isinstance(method, int) and not isinstance(method, bool) and method in METHODS:
        return METHODS[method]
    raise ValueError(f"{api}: unsupported HTTP method: {method!r}")


def encode_args(args: str | Mapping[str, Any]) -> str:
    """A query string from a str (kept as is) or a dict (a list repeats a key, True is a bare key)."""
    if isinstance(args, str):
        return args
    if not isinstance(args, Mapping):
        raise TypeError(f"bad args: a str or a dict expected, got {type(args).__name__}")
    parts = []
    for key, value in args.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            name = quote(str(key), safe="")
            if item is True:
                parts.append(name)
            elif item is not False and item is not None:
                parts.append(f"{name}={quote(str(item), safe='')}")
    return "&".join(parts)


def _raw(ex: Exchange) -> list[tuple[bytes, bytes]]:
    more = ex.more
    return more.raw_headers if more is not None and more.raw_headers is not None else ex.headers


def _keep_raw(ex: Exchange) -> None:
    """Remember the head as received before the first change (raw_header returns it)."""
    more = ex.extra()
    if more.raw_headers is None:
        more.raw_headers = ex.headers
        more.raw_line = ex.request_line()


class _Req:
    """``ngx.req``."""

    __slots__ = ()

    # -- the request line --
    @staticmethod
    def get_method() -> str:
        """The request method, e.g. ``"GET"``."""
        return exchange("ngx.req.get_method", READ).method.decode("latin-1")

    @staticmethod
    def set_method(method: int | str) -> None:
        """``ngx.req.set_method(ngx.HTTP_POST)`` (a method name works too)."""
        ex = exchange("ngx.req.set_method")
        _keep_raw(ex)
        ex.method = method_name(method, "ngx.req.set_method").encode("ascii")

    @staticmethod
    def http_version() -> float:
        """The request's HTTP version: 1.0 or 1.1."""
        return float(exchange("ngx.req.http_version", READ).version)

    @staticmethod
    def get_uri() -> str:
        """The normalised request path (``$uri``), without the query string."""
        return exchange("ngx.req.get_uri", READ).uri

    @staticmethod
    def set_uri(uri: str, jump: bool = False) -> None:
        """Change ``$uri``; with JUMP (rewrite phase only) look the location up again."""
        if jump:
            ex = exchange("ngx.req.set_uri", frozenset((phase.REWRITE,)))
        else:
            ex = exchange("ngx.req.set_uri")
        if not isinstance(uri, str):
            raise TypeError("bad uri argument: a str expected")
        if not uri:
            raise ValueError("attempt to use zero-length uri")
        if jump:
            raise Redirect(uri, ex.args, keep_ctx=True)
        ex.uri = uri

    @staticmethod
    def set_uri_args(args: str | Mapping[str, Any]) -> None:
        """Change ``$args``: a str, or a dict (a list repeats a key, True is a bare key)."""
        exchange("ngx.req.set_uri_args").args = encode_args(args)

    # (get_uri_args and get_headers are shown unannotated, the C extension's signature, whichever runs)
    @staticmethod
    def get_uri_args(max_args=100):  # type: ignore[no-untyped-def]
        """The query string's arguments: a repeated key gives a list, a bare key True (at most MAX_ARGS; 0: all)."""
        args = variables.uri_args(exchange("ngx.req.get_uri_args", READ).args)
        if max_args and len(args) > max_args:
            args = dict(list(args.items())[:max_args])
        return args

    @staticmethod
    def start_time() -> float:
        """When the request began, in seconds since the epoch (with milliseconds)."""
        ex = exchange("ngx.req.start_time", READ)
        return time.time() - (ex.conn.loop.time() - ex.start)

    # -- headers --
    @staticmethod
    def get_headers(max_headers=100, raw=False):  # type: ignore[no-untyped-def]
        """Request headers with lower-case names (a repeated one gives a list); RAW keeps names as sent, first value only."""
        ex = exchange("ngx.req.get_headers", READ)
        if raw:
            out: dict[str, Any] = {}
            for key, value in ex.headers[: max_headers or None]:
                out.setdefault(key.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            return out
        return ex.request_headers().copy()

    @staticmethod
    def raw_header(no_request_line: bool = False) -> str:
        """The request head as received (set_header does not change it), CRLFs and all."""
        ex = exchange("ngx.req.raw_header", READ)
        line = ex.more.raw_line if ex.more is not None and ex.more.raw_line is not None else ex.request_line()
        lines = [] if no_request_line else [line.encode("latin-1") + b"\r\n"]
        lines.extend(b"%b: %b\r\n" % (k, v) for k, v in _raw(ex))
        lines.append(b"\r\n")
        return b"".join(lines).decode("utf-8", "surrogateescape")

    @staticmethod
    def set_header(name: str, value: Any) -> None:
        """Replace request header NAME (``_`` in NAME is ``-``); a list repeats it; None removes it."""
        ex = exchange("ngx.req.set_header")
        if not isinstance(name, str) or not name:
            raise ValueError("bad header name")
        name = name.replace("_", "-")
        key = name.lower().encode("latin-1")
        if any(c in name for c in "\r\n: "):
            raise ValueError(f"bad header name: {name!r}")
        _keep_raw(ex)
        headers = [(k, v) for k, v in ex.headers if k.lower() != key]
        values = value if isinstance(value, (list, tuple)) else (() if value is None else (value,))
        for item in values:
            text = item if isinstance(item, str) else str(item)
            text = text.replace("\r", "%0D").replace("\n", "%0A")  # no header injection, as OpenResty
            headers.append((name.encode("latin-1"), text.encode("utf-8", "surrogateescape")))
        ex.headers = headers
        ex._headers_cache = None

    @staticmethod
    def clear_header(name: str) -> None:
        """Remove the request header NAME for later phases (as ``set_header(name, None)``)."""
        _Req.set_header(name, None)

    # -- body --
    @staticmethod
    def read_body() -> Any:
        """Read the whole body (bounded by client_max_body_size); usually it already is."""
        ex = exchange("ngx.req.read_body")
        stream = ex.more.stream if ex.more is not None else None
        if stream is None:
            return _DONE
        if stream.taken:
            raise Error("ngx.req.read_body: the body was streamed already")
        return bodystream.collect(ex, stream)

    @staticmethod
    def get_body_data() -> bytes | None:
        """The request body, or None when there was none (or it was discarded)."""
        ex = exchange("ngx.req.get_body_data", BODY_READ)
        return None if ex.more is not None and ex.more.discarded else ex.body

    @staticmethod
    def discard_body() -> None:
        """Drop the request body: get_body_data() and $request_body are None from now on."""
        ex = exchange("ngx.req.discard_body")
        ex.extra().discarded = True
        ex.body = None

    @staticmethod
    def get_post_args(max_args: int = 100) -> dict[str, Any]:
        """The body as ``application/x-www-form-urlencoded`` arguments (as get_uri_args)."""
        ex = exchange("ngx.req.get_post_args")
        if ex.more is not None and ex.more.discarded:
            raise WrongContextError("ngx.req.get_post_args: request body discarded")
        if not ex.body:
            return {}
        args = variables.parse_args(ex.body.decode("utf-8", "surrogateescape"))
        if max_args and len(args) > max_args:
            args = dict(list(args.items())[:max_args])
        return args

    @staticmethod
    def stream() -> AsyncIterator[bytes]:
        """``async for chunk in ngx.req.stream():`` the body's bytes, piece by piece."""
        ex = exchange("ngx.req.stream")
        stream = ex.more.stream if ex.more is not None else None
        if stream is None:
            return bodystream.whole(ex)  # read whole before the handler ran (see bodystream)
        if stream.taken:
            raise Error("ngx.req.stream: the body was read already")
        stream.taken = True
        return stream.chunks(ex)  # type: ignore[no-any-return]


req = _Req()

# The Python functions; with the C extension they answer every call it does not (tests compare the two).
python_get_uri_args, python_get_headers = _Req.get_uri_args, _Req.get_headers
_fast = native.load()
if _fast is not None:  # get_uri_args() and get_headers() of a request seen before in C; every other call here
    _fast.setup_req(READ, variables._ARGS, python_get_uri_args, python_get_headers)
    _Req.get_uri_args = _fast.get_uri_args  # type: ignore[assignment]
    _Req.get_headers = _fast.get_headers  # type: ignore[assignment]
