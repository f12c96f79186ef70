"""One request and its response: what the request API reads and writes.

Owns the parsed request (method, ``$uri``, ``$args``, headers, body), the
per-request state (status, response headers, ``ngx.ctx``, ``set``
variables, regex captures) and rendering the response head. The connection
(`pyngx.http.protocol`) owns the socket and calls ``head()``/``chunk()``;
the request API (`pyngx.request`) finds the current exchange through the
``CURRENT`` context variable.
"""
from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from pyngx.http.replies import STATUS_LINES, status_line

if TYPE_CHECKING:
    from pyngx.http.protocol import HttpProtocol
    from pyngx.http.route import Route

CURRENT: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar("pyngx_exchange", default=None)

CHUNKED = b"Transfer-Encoding: chunked\r\n"
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
# Response headers nginx writes under its own name whatever the case user code set them in
# (``ngx.header.content_type = ...`` sends ``Content-Type:``): it keeps them apart from the others.
CANONICAL = {"content-type": "Content-Type"}
# Headers the connection writes itself; a value set by user code is ignored.
MANAGED = frozenset(("content-length", "transfer-encoding", "connection", "date", "server"))


class Exchange:
    """One request/response on a connection."""

    __slots__ = (
        # request, as parsed
        "conn", "method", "url", "uri", "args", "version", "headers", "body", "route", "match",
        # per-request state
        "vars", "ctx", "status", "out_headers", "out", "sent", "chunked", "keep_alive", "done",
        "start", "body_bytes", "head_only", "_headers_cache",
        # the rarer request API (phases, subrequests, on_abort...): one `More`, made on first use
        "more",
    )

    def __init__(self, conn: HttpProtocol, method: bytes, url: bytes, target: tuple[str, str, Route | None, Any],
                 version: str, headers: list[tuple[bytes, bytes]], keep_alive: bool, start: float) -> None:
        self.conn = conn
        self.method = method
        self.url = url
        self.uri, self.args, self.route, self.match = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.start = start
        self.body: bytes | None = None
        self.vars: dict[str, str] | None = None
        self.ctx: dict[str, Any] | None = None
        self.status = 200
        self.out_headers: dict[str, tuple[str, Any]] | None = None
        self.out: list[bytes] = []
        self.sent = False
        self.chunked = False
        self.done = False
        self.body_bytes = 0
        self.head_only = method == b"HEAD"
        self._headers_cache: dict[str, Any] | None = None
        self.more: More | None = None

    def extra(self) -> More:
        """The per-request state few requests need, made on first use."""
        more = self.more
        if more is None:
            more = self.more = More()
        return more

    # -- request --
    def header(self, name: bytes) -> bytes | None:
        """The first request header named NAME (lower-case), or None."""
        for key, value in self.headers:
            if len(key) == len(name) and key.lower() == name:
                return value
        return None

    def request_headers(self) -> dict[str, Any]:
        """Lower-case names; a repeated header gives a list (ngx.req.get_headers). Built once a request."""
        cache = self._headers_cache
        if cache is None:
            headers = self.headers
            try:
                # most heads: names seen before, UTF-8 values, no name twice; in one comprehension
                cache = {_LOWER[key]: value.decode() for key, value in headers}
            except (KeyError, UnicodeDecodeError):
                cache = None
            if cache is not None and len(cache) == len(headers):
                self._headers_cache = cache
                return cache
            cache = self._headers_cache = {}
            for key, value in headers:
                name = _LOWER.get(key)
                if name is None:
                    name = _lower_name(key)
                text = value.decode("utf-8", "surrogateescape")
                old = cache.get(name)
                if old is None:
                    cache[name] = text
                elif type(old) is list:
                    old.append(text)
                else:
                    cache[name] = [old, text]
        return cache

    def request_line(self) -> str:
        return f"{self.method.decode('latin-1')} {self.url.decode('latin-1')} HTTP/{self.version}"

    def log_context(self) -> str:
        """What nginx adds to an error log line written in a request (``ngx_http_log_error``)."""
        conn = self.conn
        peer = conn.peer
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unix:"
        server = conn.server.server_names[0] if conn.server is not None and conn.server.server_names else ""
        text = f", client: {client}, server: {server}, request: \"{self.request_line()}\""
        host = self.header(b"host")
        if host is not None:
            text += f", host: \"{host.decode('latin-1')}\""
        referer = self.header(b"referer")
        if referer is not None:
            text += f", referrer: \"{referer.decode('latin-1')}\""
        return text

    # -- response --
    def head(self, length: int | None) -> bytes:
        """The response head for a body of LENGTH bytes (None: chunked or until close)."""
        line = STATUS_LINES.get(self.status) or status_line(self.status)
        hdrs = self.out_headers
        if hdrs:
            text = _render_headers(hdrs)
            if "content-type" not in hdrs and self.route is not None:
                text = self.route.ctype + text
        else:
            text = self.route.ctype if self.route is not None else b""
        if length is not None and self.keep_alive and self.version == "1.1":
            # the common head, in one piece
            return b"%b%b%bContent-Length: %d\r\n\r\n" % (line, self.conn.site.date_server, text, length)
        parts = [line, self.conn.site.date_server, text]
        if length is not None:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif self.chunked:
            parts.append(CHUNKED)
        if not self.keep_alive:
            parts.append(CLOSE)
        elif self.version == "1.0":
            parts.append(KEEP_ALIVE)
        parts.append(b"\r\n")
        return b"".join(parts)


def log_context() -> str:
    """The current request's `Exchange.log_context`, or "" outside a request (`log.ErrorLog.context`)."""
    ex = CURRENT.get()
    return "" if ex is None else ex.log_context()


class More:
    """Per-request state of the rarer request API (kept off the plain request's path)."""

    __slots__ = ("raw_headers", "raw_line", "filtered", "body_ended", "aborts", "abort_task", "aborted", "discarded",
                 "parent", "redirects", "eof", "stream", "files")

    def __init__(self) -> None:
        self.raw_headers: list[tuple[bytes, bytes]] | None = None  # as received, before set_header
        self.raw_line: str | None = None  # the request line as received, before set_method
        self.filtered = False  # header_filter_by_python has run
        self.body_ended = False  # body_filter_by_python set eof: later output is dropped
        self.aborts: list[Any] = []  # ngx.on_abort callbacks, with their contexts
        self.abort_task: Any = None  # the task running the request (ngx.exit in on_abort cancels it)
        self.aborted = False
        self.discarded = False  # ngx.req.discard_body()
        self.parent: Exchange | None = None  # the request of a subrequest (ngx.location.capture)
        self.redirects = 0  # internal redirects so far (ngx.exec, set_uri jump)
        self.eof = False  # ngx.eof() was called
        self.stream: Any = None  # the body as it arrives (pyngx.http.bodystream), when the location streams
        self.files = False  # rewrite and access are done: the location's files answer (pyngx.http.static)


class Redirect(BaseException):
    """Raised by ngx.exec and ngx.req.set_uri(jump=True): serve the request again at another URI."""

    def __init__(self, uri: str, args: str, *, keep_ctx: bool = False) -> None:
        super().__init__(uri, args)
        self.uri = uri
        self.query = args  # (not ``args``: BaseException owns that name)
        self.keep_ctx = keep_ctx


def _render_headers(hdrs: dict[str, tuple[str, Any]]) -> bytes:
    try:
        return b"".join(map(_line_of, hdrs.values()))  # every line kept: no Python frame
    except TypeError:  # a line not kept (None), or a list value (a header repeated: not hashable)
        pass
    parts: list[bytes] = []
    add = parts.append
    for key, item in hdrs.items():
        if key in MANAGED:
            continue
        name, value = item
        if type(value) is str:
            line = _LINES.get(item)
            if line is None:
                line = f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")
                if type(name) is str and len(value) <= LINE_CACHED_LEN:
                    if len(_LINES) >= NAMES_CACHED:
                        _LINES.clear()
                    _LINES[item] = line
            add(line)
        else:
            for one in value if isinstance(value, (list, tuple)) else (value,):
                add(f"{name}: {one}\r\n".encode("utf-8", "surrogateescape"))
    return b"".join(parts)


# Names repeat from one request to the next (nginx hashes its known headers for the same reason):
# each is cleaned or decoded once, in tables emptied when they grow past NAMES_CACHED.
NAMES_CACHED = 1024
_LOWER: dict[bytes, str] = {}  # a request header's name as received → its lower-case text
_NAMES: dict[str, tuple[str, str]] = {}  # a response header's name as user code writes it → (name, key)
# and so do the response headers' values (a content type, a cache policy...): a (name, value) of
# ``out_headers`` → its line, rendered; never a header the connection writes itself (MANAGED)
LINE_CACHED_LEN = 256
_LINES: dict[tuple[str, Any], bytes] = {}
_line_of = _LINES.get


def _lower_name(key: bytes) -> str:
    name = key.decode("latin-1").lower()
    if len(_LOWER) >= NAMES_CACHED:
        _LOWER.clear()
    _LOWER[key] = name
    return name


def header_name(name: str) -> tuple[str, str]:
    """(the name as sent, its lower-case key) for a response header name as user code writes it."""
    hit = _NAMES.get(name)
    if hit is None:
        clean = clean_name(name)
        key = clean.lower()
        hit = (CANONICAL.get(key, clean), key)
        if type(name) is str:  # (a str subclass could hash as it likes)
            if len(_NAMES) >= NAMES_CACHED:
                _NAMES.clear()
            _NAMES[name] = hit
    return hit


def clean_value(value: Any) -> str:
    """A header value as text, CR and LF escaped as OpenResty does (no header injection)."""
    text = value if isinstance(value, str) else str(value)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", "%0D").replace("\n", "%0A")
    return text


def clean_name(name: str) -> str:
    """``content_type`` → ``content-type`` as OpenResty's ngx.header; CR/LF/colon escaped."""
    name = name.replace("_", "-")
    if "\r" in name or "\n" in name or ":" in name or " " in name:
        name = name.replace("\r", "%0D").replace("\n", "%0A").replace(":", "%3A").replace(" ", "%20")
    return name
