"""One HTTP/1.1 connection: httptools callbacks → `Exchange` → response bytes.

Owns keep-alive, pipelining (answers in request order), request limits and
their 4xx answers, timeouts (deadlines in the site's wheel), flow control,
and running the location's route: ``set``s, ``return``, the status page or
the content handler. A plain handler runs right in the parser callback, with
no task and no coroutine; an ``async`` one gets its own task.

Only this module sends an answer's end, closes or aborts the connection: the
answer builders (`pyngx.http.answers`, `pyngx.http.static`) fill the exchange
and say what comes next. The connection reads its server through one `Site`.
The parse state changes only in `_move`, along the moves of ``MOVES``
(`pyngx.http.connection`, the part of a connection that is not HTTP parsing).
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httptools

from pyngx import log
from pyngx.http import answers, bodystream, native, phases, replies, static, uri
from pyngx.http.connection import BODY, HEAD, IDLE, LINGER, Connection, Refused
from pyngx.http.exchange import CURRENT, Exchange, Redirect
from pyngx.http.limits import MAX_URI, RequestError, check_head, check_host
from pyngx.http.route import CONTENT, PHASED, RETURN, STATIC, STATUS, Route, Server, Vhosts
from pyngx.http.variables import assign
from pyngx.runtime import phase
from pyngx.runtime.phase import Exit

if TYPE_CHECKING:
    from pyngx.http.site import Site

# Limits of the request head (nginx: large_client_header_buffers 4 8k).
TARGETS_CACHED = 1024  # request targets remembered per server with their location
TARGET_CACHED_LEN = 256  # longer ones are not: 1024 targets of 8k would hold 8 MB per worker
MAX_QUEUED = 64  # pipelined requests waiting behind an async one before reading pauses
# A body this big goes to the transport as it is, in a write of its own: joined to its head it
# would be copied once more (asyncio's transport still buffers what the socket does not take).
LARGE = 64 * 1024

_phase_set = phase.set
_current_set = CURRENT.set
_CONTENT_PHASE = phase.CONTENT
OK_LINE = replies.status_line(200)


class HttpProtocol(Connection, asyncio.Protocol):
    """The per-connection state machine."""

    __slots__ = ("vhosts", "server", "line_open", "escaped",
                 # Per-request state (while the head and body arrive)
                 "url", "headers", "hsize", "ex", "body", "body_size")

    def __init__(self, site: Site, vhosts: Vhosts) -> None:
        Connection.__init__(self, site)
        self.vhosts = vhosts
        self.server: Server | None = vhosts.only
        self.line_open = self.escaped = False  # request line not ended; its bytes >= 0x80 escaped
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.hsize = 0
        self.ex: Exchange | None = None
        self.body: list[bytes] | None = None
        self.body_size = 0

    # -- asyncio callbacks --
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.number = self.site.opened(self)
        self._wait_from(self.loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state = LINGER  # (a closed connection is past every move)
        self._wake()
        self.queue = None
        self.site.lost(self)

    def eof_received(self) -> bool | None:
        if self.state == LINGER or self.idle():
            self.close()
            return None
        if not self.busy and not self.queue:  # half a request, then EOF: it can never complete
            answers.premature(self, "body" if self.state == BODY else "headers")
            self.close()
            return None
        self.eof = True  # answer what was asked, then close
        return True

    # data_received: `pyngx.http._fast.Base` answers whole plain requests in C and gives the rest of a
    # read here (without the extension, data_received is this method)
    def parse(self, data: bytes) -> None:
        """Feed DATA to the parser: the general path of a read (httptools callbacks below)."""
        state = self.state
        if state == IDLE:
            self._move(HEAD)
            site = self.site
            self.since = since = site.clock
            when = since + site.conf.client_header_timeout
            if when < self.due:
                site.arm(self, when)
            if not data.isascii() or b"\n" not in data:  # (else the request line is whole and plain)
                self.line_open = True
                data = self._line(data)
        elif state == LINGER:
            return  # lingering close: read and drop what the client still sends
        else:
            if state == BODY:
                self.since = self.site.clock  # (the deadline moves later: the wheel finds it out)
            if self.line_open:
                data = self._line(data)
        parser = self.parser
        if parser is None:
            parser = self.parser = self.site.parser_for(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as err:
            cause = err.__context__
            if isinstance(cause, RequestError):
                self.refuse(cause.status)
            else:
                log.exception("http protocol error", cause or err, log.CRIT)
                self.abort()
            return
        except httptools.HttpParserUpgrade:
            # Upgrade is not supported: the request is answered; what follows is not HTTP.
            self.eof = True
            if self.idle():
                self.linger()
            return
        except httptools.HttpParserError:
            self.refuse(400)
            return
        state = self.state
        if state == IDLE:
            # a read that ends with a line feed ends between requests, or inside a request line
            # (then self.url is not empty); otherwise the parser may hold a next request's start
            self.tail = tail = data[-1:] != b"\n"
            if self.requests == 1 and not tail:
                # The first request of a connection is answered: many clients (and idle pools) send
                # no other for a while, so its parser goes back to the site until the next read.
                self.shrink()
        elif state == HEAD and self.hsize > MAX_URI:
            # Checked per read, not per header: a head grows by at most one read past the limit.
            try:
                check_head(self.url, self.hsize)
            except RequestError as err:
                self.refuse(err.status)

    def _line(self, data: bytes) -> bytes:
        """DATA with the request line's bytes >= 0x80 escaped (httptools refuses them raw)."""
        if not data.isascii():
            escaped = uri.escape_line(data)
            if escaped is not None:
                data, self.escaped = escaped, True
        if self.headers or b"\n" in data:
            self.line_open = False
        return data

    # -- httptools callbacks --
    def on_url(self, url: bytes) -> None:
        self.url += url
        self.hsize += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.hsize += len(name) + len(value) + 4  # ": " and CRLF, as on the wire

    def on_headers_complete(self) -> None:
        if self.closed:
            return
        if self.hsize > MAX_URI:
            check_head(self.url, self.hsize)
        if self.escaped:
            self.escaped = False
            self.url = uri.unescape_line(self.url)
        host = None
        body = False
        for name, value in self.headers:
            n = len(name)
            if n == 4:
                if name.lower() == b"host":
                    if host is not None:
                        raise RequestError(400)  # two Hosts
                    if value != self.host_ok:  # checked once per connection while it stays the same
                        check_host(value)
                        self.host_ok = value
                    host = value
            elif n == 14:
                if name.lower() == b"content-length":
                    body = value != b"0"
            elif n == 17 and name.lower() == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise RequestError(400)  # no codings but chunked (nginx: 501)
                body = True
        server = self.vhosts.only
        if server is None:
            server = self.vhosts.find(host)  # per request, as nginx: Host may change on a connection
            self.server = server
        url = self.url
        hit = server.targets.get(url)
        if hit is None:
            hit = _resolve(server, url)
        parser: Any = self.parser
        version = parser.get_http_version()  # per request: a client may change it on a connection
        if host is None and version == "1.1":
            raise RequestError(400)  # RFC 9112 §3.2: a 1.1 request without Host
        ex = Exchange(self, parser.get_method(), url, hit, version, self.headers, parser.should_keep_alive(),
                      self.since)
        self.ex = ex
        self.body = None
        if body:
            self._expect_body(ex)
            if ex.route is not None and ex.route.streams and not self.busy and not self.queue:
                bodystream.start(self, ex)  # ngx.req.stream(): run now, the body follows

    def _expect_body(self, ex: Exchange) -> None:
        self.body_size = 0
        limit = ex.route.max_body if ex.route is not None else 1 << 62
        length = ex.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestError(413)
        self.body = []
        self._move(BODY)
        self._wait_from(self.loop.time())
        expect = ex.header(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and ex.version == "1.1":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        if self.body is None:
            self.body = []
        self.body_size += len(data)
        ex = self.ex
        if ex is not None and ex.more is not None and ex.more.stream is not None:
            return ex.more.stream.take(ex, data, self.body_size)
        if ex is not None and ex.route is not None and self.body_size > ex.route.max_body:
            raise RequestError(413)
        self.body.append(data)

    def on_message_complete(self) -> None:
        ex = self.ex
        # ready for the next message on this connection
        self.url = b""
        self.headers = []
        self.hsize = 0
        state = self.state
        if state == HEAD or state == BODY:
            self._move(IDLE)  # its timeout starts once the request is answered (finish)
        if ex is None or self.closed:
            return
        self.ex = None
        if ex.more is not None and ex.more.stream is not None:
            return ex.more.stream.end()  # running since its head came
        if self.body is not None:
            ex.body = b"".join(self.body)
            self.body = None
        if self.busy or self.queue:
            self._queue(ex)
            if len(self.queue) > MAX_QUEUED and not self.reading_paused:  # type: ignore[arg-type]
                self.reading_paused = True
                self.transport.pause_reading()
            return
        self.run(ex)

    # -- running a request --
    def run(self, ex: Exchange) -> None:
        """Answer EX with its location's route (sync handlers complete here)."""
        self.requests += 1
        route = ex.route
        if route is None:
            answers.fill(ex, 404)
            return self.finish(ex)
        if route.sets:
            for name, template in route.sets:
                assign(ex, name, template.render(ex))
        kind = route.kind
        if kind is CONTENT:
            if route.files is not None and route.files.tries:
                verdict = static.try_files(self, ex, route)
                if verdict is not static.FOUND:
                    return self.served(ex, verdict)
            if route.is_async:
                self.busy = True
                self.loop.create_task(self.run_async(ex, route))
                return None
            try:
                # One context for every plain handler, its phase set once at start: entering it
                # costs less than setting and resetting two context variables per request.
                self.site.content_ctx.run(_call, ex, route.handler)
            except Exit:
                pass
            except Redirect as jump:  # ngx.exec
                return phases.redirected(self, ex, jump)
            except BaseException as exc:  # noqa: BLE001 - the user's code: 500, never a dead worker
                answers.crash(self, ex, exc)
            return self.finish(ex)
        if kind is STATIC:
            return self.served(ex, static.serve(self, ex, route))
        if kind is PHASED:
            return phases.start(self, ex)
        if kind is RETURN:
            if not answers.fill_return(ex, route):
                return self.drop()
            return self.finish(ex)
        if kind is STATUS:
            body, ctype = self.site.render_status(ex)
            answers.fill(ex, 200, body, ctype)
            return self.finish(ex)
        answers.fill(ex, 404)
        return self.finish(ex)

    def raised(self, ex: Exchange, exc: BaseException) -> None:
        """A plain handler called from C raised EXC (not ngx.exit): as ``run`` does."""
        if isinstance(exc, Redirect):  # ngx.exec
            return phases.redirected(self, ex, exc)
        answers.crash(self, ex, exc)
        return self.finish(ex)

    def failed(self, exc: BaseException) -> None:
        """The C path met an error of its own (not the handler's): as one inside the parser's callbacks."""
        log.exception("http protocol error", exc, log.CRIT)
        self.abort()

    def served(self, ex: Exchange, verdict: str) -> None:
        """Go on after the files handler (`pyngx.http.static`) left VERDICT for EX."""
        if verdict is static.FILLED:
            self.finish(ex)
        elif verdict is static.RERUN:
            self.requests -= 1  # run() counts the request again
            self.run(ex)
        # static.SENDING: the file's writer ends EX

    def drop(self) -> None:
        """``return 444``: close without an answer; the request is not counted on the connection."""
        self.requests -= 1
        self.abort()

    async def run_async(self, ex: Exchange, route: Route) -> None:
        # A task runs in its own copy of the context: no reset needed.
        _phase_set(_CONTENT_PHASE)
        _current_set(ex)
        try:
            await route.handler()  # type: ignore[misc]
        except Exit:
            pass
        except Redirect as jump:  # ngx.exec
            self.busy = False
            return phases.redirected(self, ex, jump)
        except asyncio.CancelledError:
            ex.done = True
            self.busy = False
            self.abort()
            raise
        except BaseException as exc:  # noqa: BLE001
            answers.crash(self, ex, exc)
        self.busy = False
        self.finish(ex)

    # -- writing --
    def finish(self, ex: Exchange) -> None:
        """Send what EX has not sent yet, then keep the connection, close it, or run the next one."""
        ex.done = True
        site = self.site
        if self.closed:
            site.n_requests += 1
            site.log_request(ex)
            return
        if site.draining:
            ex.keep_alive = False
        if not ex.sent:
            out = ex.out
            body = out[0] if len(out) == 1 else b"".join(out)
            ex.body_bytes = len(body)
            status = ex.status
            if (status == 200 and ex.out_headers is None and ex.keep_alive and ex.version == "1.1"
                    and not ex.head_only and ex.route is not None and len(body) < LARGE):
                # the common answer, in one piece
                self.transport.write(b"%b%b%bContent-Length: %d\r\n\r\n%b"
                                     % (OK_LINE, site.date_server, ex.route.ctype, len(body), body))
            elif status < 200 or status in replies.NO_BODY:
                body = b""
                ex.body_bytes = 0
                self.transport.write(ex.head(None))
            else:
                head = ex.head(len(body))
                if ex.head_only:
                    self.transport.write(head)
                elif len(body) < LARGE:
                    self.transport.write(head + body)
                else:
                    self.transport.write(head)
                    self.transport.write(body)
        else:
            self.chunk(ex, tail=b"0\r\n\r\n" if ex.chunked and not ex.head_only else b"")
        site.n_requests += 1
        if ex.status != 200 or site.access is not None:
            site.log_request(ex)
        if not ex.keep_alive:
            return self.linger()
        if self.queue:
            return self.next()
        if self.eof:
            return self.linger()
        if self.state == IDLE:  # keep-alive: its timeout starts now (the request was counted: requests > 0)
            self.since = since = site.clock
            when = since + site.keepalive
            if when < self.due:
                site.arm(self, when)
            if not self.listed:
                self.listed = True
                site.fresh.append(self)

    def chunk(self, ex: Exchange, head: bytes = b"", tail: bytes = b"") -> None:
        """Write HEAD, the buffered output of EX framed for the wire (the buffer emptied), and TAIL;
        a large output goes out as it is, not copied."""
        out = ex.out
        data = b""
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            ex.out = []
            if ex.head_only:
                data = b""
            elif data:
                ex.body_bytes += len(data)
                if ex.chunked:
                    head += b"%x\r\n" % len(data)
                    tail = b"\r\n" + tail
        if len(data) >= LARGE:
            for piece in (head, data, tail):
                if piece:
                    self.transport.write(piece)
        elif head or data or tail:
            self.transport.write(head + data + tail)

    def flush(self, ex: Exchange) -> asyncio.Future[None] | None:
        """ngx.flush: send the head (chunked) and what is buffered; a future while the socket is full."""
        if self.closed or ex.done:
            return None
        if not ex.sent:
            ex.sent = True
            if self.site.draining:
                ex.keep_alive = False
            if ex.version == "1.1":
                ex.chunked = True
            else:
                ex.keep_alive = False  # HTTP/1.0: the body ends when the connection does
            self.chunk(ex, ex.head(None))
        else:
            self.chunk(ex)
        if self.paused:
            waiter = self.loop.create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            return waiter
        return None

    def next(self) -> None:
        """Run queued pipelined requests until one goes async."""
        while self.queue and not self.busy and not self.closed:
            item = self.queue.popleft()
            if type(item) is Refused:
                self.refuse(item.status)
                return
            self.run(item)  # type: ignore[arg-type]
        if self.reading_paused and len(self.queue or ()) <= MAX_QUEUED // 2 and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
        if not self.queue and not self.busy and self.state == IDLE:
            self.queue = None
            self._wait_from(self.site.clock)


_fast = native.load()
if _fast is None:  # every read is parsed in Python
    FAST = False
    HttpProtocol.data_received = HttpProtocol.parse  # type: ignore[method-assign]
else:
    from pyngx.http.site import Site as _Site
    from pyngx.http.exchange import MANAGED as _MANAGED
    _fast.setup(HttpProtocol, Exchange, _Site, Route, Server, Vhosts, CURRENT, Exit, OK_LINE, _MANAGED)
    _fast.setup_phases(phase._phase, phase.REWRITE, phase.ACCESS, phase.CONTENT, phase.LOG, phases.step_raised)
    FAST = True


def _resolve(server: Server, url: bytes) -> tuple[str, str, Route | None, Any]:
    """(uri, args, route, match) for a request target, remembered per server (hot URLs repeat)."""
    try:
        path, args = uri.split(url)
    except uri.BadTarget:
        raise RequestError(400) from None
    route, match = server.find(path)
    hit = (path, args, route, match)
    if len(url) <= TARGET_CACHED_LEN:
        if len(server.targets) >= TARGETS_CACHED:
            server.targets.clear()
        server.targets[url] = hit
    return hit


def _call(ex: Exchange, handler: Any) -> None:
    """Run a plain handler inside the content context with EX as the current request."""
    _current_set(ex)
    handler()
