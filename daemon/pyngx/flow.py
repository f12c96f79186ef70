"""The request's control flow: ngx.exec, ngx.location.capture*, ngx.send_headers, ngx.eof,
ngx.on_abort, ngx.headers_sent, ngx.arg (body filter) and ngx.get_phase.

Thin, as lua-nginx-module's ``ngx_http_lua_control.c`` and lua-resty-core's
``ngx/resp.lua``: check the phase, validate, hand over to `pyngx.http.phases`
and `pyngx.http.subrequest`.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyngx.errors import Error, WrongContextError
from pyngx.http import aborts, phases, subrequest
from pyngx.http.exchange import Redirect
from pyngx.http.subrequest import Response as Response
from pyngx.req import encode_args, method_name
from pyngx.request import OUTPUT, READ
from pyngx.request import _exchange as exchange
from pyngx.runtime import phase

Response.__module__ = "pyngx"


__all__ = ["get_phase", "exec", "send_headers", "eof", "headers_sent", "on_abort", "location", "arg"]


def get_phase() -> str | None:
    """The running phase as OpenResty names it: ``"rewrite"``, ``"access"``, ``"content"``, ``"log"``..."""
    here = phase.current()
    return phase.SHORT.get(here) if here is not None else None


def _split(uri: str, args: str | Mapping[str, Any] | None, api: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"{api}: uri is empty" if isinstance(uri, str) else f"{api}: bad uri argument")
    path, _, query = uri.partition("?")
    if "\0" in path or any(part == ".." for part in path.split("/")):
        raise ValueError(f'{api}: unsafe uri "{uri}"')  # ngx_http_parse_unsafe_uri
    extra = encode_args(args) if args is not None else ""
    if extra:
        query = f"{query}&{extra}" if query else extra
    return path, query


def exec(uri: str, args: str | Mapping[str, Any] | None = None) -> None:  # noqa: A001 - OpenResty's name
    """Internal redirect: serve this request again at URI (``/path?args`` or ``@named``); ends the handler."""
    ex = exchange("ngx.exec", OUTPUT)
    if ex.sent or ex.out:
        raise WrongContextError("attempt to call ngx.exec after sending out response headers")
    path, query = _split(uri, args, "ngx.exec")
    if path.startswith("@"):
        query = ex.args  # nginx: a named location keeps the request's arguments
    raise Redirect(path, query)


def send_headers() -> None:
    """Send the response head now (after the header filter); the body follows later."""
    phases.send_headers(exchange("ngx.send_headers", OUTPUT))


def eof() -> None:
    """End the response now (the client has it all); the handler goes on, its output dropped."""
    phases.eof(exchange("ngx.eof", OUTPUT))


def headers_sent() -> bool:
    """Whether the response head has gone out (``ngx.headers_sent``)."""
    ex = exchange("ngx.headers_sent", READ)
    return ex.sent or ex.done


def on_abort(fn: Callable[[], Any]) -> None:
    """Call FN (plain or ``async``) when the client closes the connection before the answer is
    complete; ``ngx.exit(...)`` in FN ends the request. Once per request (``"duplicate call"``)."""
    ex = exchange("ngx.on_abort", OUTPUT)
    if not callable(fn):
        raise TypeError("bad callback: a callable expected")
    if ex.more is not None and ex.more.aborts:
        raise Error("duplicate call")
    aborts.on_abort(ex, fn, contextvars.copy_context())


class _Location:
    """``ngx.location``: subrequests to other locations of this server, in process."""

    __slots__ = ()

    @staticmethod
    async def capture(uri: str, *, method: int | str = "GET", body: bytes | str | None = None,
                      args: str | Mapping[str, Any] | None = None, ctx: dict[str, Any] | None = None,
                      vars: Mapping[str, Any] | None = None, copy_all_vars: bool = False,  # noqa: A002
                      share_all_vars: bool = False, always_forward_body: bool = False) -> Response:
        """Serve URI as a subrequest; its ``status``, ``header`` (a dict) and ``body`` (bytes)."""
        return (await _Location.capture_multi([(uri, {
            "method": method, "body": body, "args": args, "ctx": ctx, "vars": vars, "copy_all_vars": copy_all_vars,
            "share_all_vars": share_all_vars, "always_forward_body": always_forward_body})]))[0]

    @staticmethod
    async def capture_multi(requests: Sequence[str | tuple[str] | tuple[str, Mapping[str, Any]]]) -> list[Response]:
        """Several subrequests at once (``[(uri, options), ...]``); their answers in order."""
        ex = exchange("ngx.location.capture", OUTPUT)
        prepared = []
        for item in requests:
            uri, options = (item, {}) if isinstance(item, str) else (item[0], item[1] if len(item) > 1 else {})
            prepared.append(_prepare(ex, uri, options or {}))
        return await subrequest.capture_multi(ex, prepared)


_OPTIONS = frozenset(("method", "body", "args", "ctx", "vars", "copy_all_vars", "share_all_vars",
                      "always_forward_body"))


def _prepare(ex: Any, uri: str, options: Mapping[str, Any]) -> tuple[Any, ...]:
    unknown = set(options) - _OPTIONS
    if unknown:
        raise ValueError(f"ngx.location.capture: unknown option {sorted(unknown)[0]!r}")
    path, query = _split(uri, options.get("args"), "ngx.location.capture")
    method = method_name(options.get("method") or "GET", "ngx.location.capture")
    body = options.get("body")
    if isinstance(body, str):
        body = body.encode()
    if body is not None and not isinstance(body, (bytes, bytearray)):
        raise TypeError("ngx.location.capture: bad body option: bytes or str expected")
    ctx = options.get("ctx")
    if ctx is not None and not isinstance(ctx, dict):
        raise TypeError("ngx.location.capture: bad ctx option: a dict expected")
    variables: dict[str, str] = {}
    if options.get("copy_all_vars") or options.get("share_all_vars"):
        variables.update(ex.vars or {})
    for name, value in (options.get("vars") or {}).items():
        variables[str(name)] = str(value)
    return (path, query, method, None if body is None else bytes(body), ctx, variables,
            bool(options.get("always_forward_body")))


class _Arg:
    """``ngx.arg`` in ``body_filter_by_python``: ``ngx.arg[1]`` the chunk (bytes; assign bytes, str,
    or None/b"" to drop it), ``ngx.arg[2]`` eof (assign True to end the body here)."""

    __slots__ = ()

    @staticmethod
    def _now() -> phases.Arg:
        if phase.current() != phase.BODY_FILTER or not phases.ARG:
            raise WrongContextError(f"ngx.arg: API disabled in the context of {phase.current() or 'this process'}"
                                    f" (allowed in {phase.BODY_FILTER})")
        return phases.ARG[-1]

    def __getitem__(self, index: int) -> Any:
        """``ngx.arg[1]``: the chunk (bytes); ``ngx.arg[2]``: whether it is the last (eof)."""
        arg = self._now()
        if index == 1:
            return arg.chunk
        if index == 2:
            return arg.eof
        raise IndexError("ngx.arg: 1 (the chunk) or 2 (eof)")

    def __setitem__(self, index: int, value: Any) -> None:
        arg = self._now()
        if index == 1:
            if value is None:
                value = b""
            elif isinstance(value, str):
                value = value.encode()
            elif not isinstance(value, (bytes, bytearray)):
                raise TypeError("ngx.arg[1]: bytes, str or None expected")
            arg.chunk = bytes(value)
        elif index == 2:
            arg.eof = bool(value)
        else:
            raise IndexError("ngx.arg: 1 (the chunk) or 2 (eof)")


location = _Location()
arg = _Arg()
