"""nginx variables: ``$uri``, ``$args``, ``$arg_NAME``, ``$http_NAME``, ``set`` ones, ``$1``...

Owns the name → getter table and the ``set``/``return`` value templates,
compiled once at start. Reads an `Exchange`; writes only ``ex.vars``.
"""
from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange

Getter = Callable[["Exchange"], Any]


def _peer(ex: Exchange, i: int) -> str | None:
    peer = ex.conn.peer
    return None if peer is None else str(peer[i])


def _local(ex: Exchange, i: int) -> str | None:
    sock = ex.conn.sockname
    return None if sock is None else str(sock[i])


def _host(ex: Exchange) -> str:
    raw = ex.header(b"host")
    if raw:
        host = raw.decode("latin-1").lower()
        if host.startswith("["):
            return host.split("]", 1)[0] + "]"
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    names = ex.conn.server.server_names if ex.conn.server is not None else ()
    return names[0] if names else ""


def _request_uri(ex: Exchange) -> str:
    return ex.url.decode("utf-8", "surrogateescape")


def _header_var(ex: Exchange, name: str) -> str | None:
    key = name.replace("_", "-").encode("latin-1")
    value = ex.header(key)
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _arg(ex: Exchange, name: str) -> str | None:
    # nginx's $arg_NAME: the first value, still percent-encoded.
    for pair in ex.args.split("&"):
        key, sep, value = pair.partition("=")
        if key == name:
            return value if sep else ""
    return None


def _cookie(ex: Exchange, name: str) -> str | None:
    raw = ex.header(b"cookie")
    if raw is None:
        return None
    for part in raw.decode("utf-8", "surrogateescape").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _sent_header(ex: Exchange, name: str) -> str | None:
    hdrs = ex.out_headers or {}
    item = hdrs.get(name.replace("_", "-"))
    return None if item is None else str(item[1])


def _files(ex: Exchange, what: str) -> str | None:
    """$document_root, $realpath_root, $request_filename: from the location's files (static.Files)."""
    files = ex.route.files if ex.route is not None else None
    if files is None:
        return None
    if what == "request_filename":
        path = files.path(ex, ex.uri)
    else:
        path = files.document_root(ex)
        if what == "realpath_root":
            path = os.path.realpath(path)
    return None if path is None else path.decode("utf-8", "surrogateescape")


def _time_local(ex: Exchange) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime())


GETTERS: dict[str, Getter] = {
    "uri": lambda ex: ex.uri,
    "document_uri": lambda ex: ex.uri,
    "request_uri": _request_uri,
    "args": lambda ex: ex.args or None,
    "query_string": lambda ex: ex.args or None,
    "is_args": lambda ex: "?" if ex.args else "",
    "request_method": lambda ex: ex.method.decode("latin-1"),
    "request": lambda ex: ex.request_line(),
    "server_protocol": lambda ex: f"HTTP/{ex.version}",
    "scheme": lambda ex: "http",
    "https": lambda ex: "",
    "host": _host,
    "hostname": lambda ex: socket.gethostname(),
    "server_name": lambda ex: (ex.conn.server.server_names or ("",))[0] if ex.conn.server else "",
    "remote_addr": lambda ex: _peer(ex, 0),
    "remote_port": lambda ex: _peer(ex, 1),
    "server_addr": lambda ex: _local(ex, 0),
    "server_port": lambda ex: _local(ex, 1),
    "content_length": lambda ex: _header_var(ex, "content_length"),
    "content_type": lambda ex: _header_var(ex, "content_type"),
    "request_body": lambda ex: None if ex.body is None else ex.body.decode("utf-8", "surrogateescape"),
    "status": lambda ex: str(ex.status),
    "body_bytes_sent": lambda ex: str(ex.body_bytes),
    "request_time": lambda ex: f"{max(0.0, time.monotonic() - ex.start):.3f}",
    "msec": lambda ex: f"{time.time():.3f}",
    "time_local": _time_local,
    "time_iso8601": lambda ex: time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime()),
    "pid": lambda ex: str(os.getpid()),
    "connection": lambda ex: str(ex.conn.number),
    "connection_requests": lambda ex: str(ex.conn.requests),
    "nginx_version": lambda ex: "1.0.0",
    "pyngx_version": lambda ex: __import__("pyngx").__version__,
    "document_root": lambda ex: _files(ex, "document_root"),
    "realpath_root": lambda ex: _files(ex, "realpath_root"),
    "request_filename": lambda ex: _files(ex, "request_filename"),
}

PREFIXES: tuple[tuple[str, Callable[[Exchange, str], Any]], ...] = (
    ("http_", _header_var),
    ("arg_", _arg),
    ("cookie_", _cookie),
    ("sent_http_", _sent_header),
)


def get(ex: Exchange, name: str) -> Any:
    """The value of ``$NAME`` for EX, or None when it has none (OpenResty's nil)."""
    local = ex.vars
    if local is not None and name in local:
        return local[name]
    getter = GETTERS.get(name)
    if getter is not None:
        return getter(ex)
    if name.isdigit():
        return capture(ex, int(name))
    m = ex.match
    if m is not None and name in m.re.groupindex:  # a named capture: (?<name>...)
        return m.group(name)
    for prefix, fn in PREFIXES:
        if name.startswith(prefix):
            return fn(ex, name[len(prefix):].lower() if prefix != "arg_" else name[len(prefix):])
    return None


def capture(ex: Exchange, n: int) -> str | None:
    m = ex.match
    if m is None or n > (m.re.groups or 0):
        return None
    return m.group(n)


def assign(ex: Exchange, name: str, value: Any) -> None:
    """``ngx.var.NAME = VALUE`` / ``set $NAME``: a per-request variable (None unsets)."""
    if ex.vars is None:
        ex.vars = {}
    if value is None:
        ex.vars.pop(name, None)
    else:
        ex.vars[name] = value if isinstance(value, str) else str(value)


# -- templates: "prefix $uri ${name}suffix $1" compiled once at start --

_VAR = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([0-9])|([A-Za-z_][A-Za-z0-9_]*))")


class Template:
    """A ``set``/``return`` value with ``$vars`` in it, split once into parts."""

    __slots__ = ("parts", "static")

    def __init__(self, text: str) -> None:
        parts: list[str | tuple[str]] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                parts.append(text[pos:m.start()])
            parts.append((m.group(1) or m.group(2) or m.group(3),))
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.parts = tuple(parts)
        self.static = text if all(isinstance(p, str) for p in parts) else None

    def render(self, ex: Exchange) -> str:
        if self.static is not None:
            return self.static
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = get(ex, part[0])
                out.append("" if value is None else str(value))
        return "".join(out)


# Query strings repeat from one request to the next (the same URLs are asked again): the
# arguments of short ones without a repeated key are kept, parsed, and handed out as copies.
ARGS_CACHED = 1024
ARGS_CACHED_LEN = 256
_ARGS: dict[str, dict[str, Any]] = {}  # (read by the C extension too: copy what it holds before use)


def uri_args(query: str) -> dict[str, Any]:
    """ngx.req.get_uri_args: a repeated key gives a list, a bare key True. A new dict each call."""
    hit = _ARGS.get(query)
    if hit is not None:
        return hit.copy()
    out = parse_args(query)
    if len(query) <= ARGS_CACHED_LEN and list not in map(type, out.values()):
        if len(_ARGS) >= ARGS_CACHED:
            _ARGS.clear()
        _ARGS[query] = out.copy()
    return out


def parse_args(query: str) -> dict[str, Any]:
    """The arguments of QUERY (``a=1&b&a=2``), decoded: a repeated key gives a list, a bare key True."""
    out: dict[str, Any] = {}
    if not query:
        return out
    plain = "%" not in query and "+" not in query  # nothing to decode (most queries)
    for pair in query.split("&"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not plain:
            # bytes that are not UTF-8 (%ff) stay themselves as surrogates, and encode back to them
            key = unquote_plus(key, errors="surrogateescape")
            if sep:
                value = unquote_plus(value, errors="surrogateescape")
        item: Any = value if sep else True
        old = out.get(key)
        if old is None:
            out[key] = item
        elif type(old) is list:
            old.append(item)
        else:
            out[key] = [old, item]
    return out
