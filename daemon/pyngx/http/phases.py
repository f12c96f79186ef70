"""A location's request phases, in nginx's order, and the output filters.

A location with any of ``rewrite_by_python``, ``access_by_python``,
``header_filter_by_python``, ``body_filter_by_python`` or ``log_by_python``
(its route's kind is ``PHASED``) is served here rather than by the plain path
of `pyngx.http.protocol`: ``set``s, rewrite, access, then what the location
does (content, ``return``, the status page, or 404), the header filter once
before the head goes out, the body filter on each piece of output, the send,
and the log phase after it. ``ngx.exec`` and ``ngx.req.set_uri(jump=True)``
(`Redirect`) serve the request again at another location, from any route.

The whole run is one task when a phase awaits, else it runs right in the
parser callback, as a plain content handler does, through plain calls (the
``*_plain`` twins of the coroutines, which cost several times less). The connection stays
``busy`` until the log phase is over, so a pipelined request waits for it.

Semantics follow lua-nginx-module (``t/023-rewrite``, ``t/024-access``,
``t/041-header-filter``, ``t/082-body-filter``, ``t/075-logby``): in rewrite
and access, ``ngx.exit(ngx.OK)`` or returning moves on, ``ngx.exit(status >=
200)`` ends the request, and output there ends it after the phase (the head
would be out in nginx); an error answers 500 in rewrite, access, content and
the header filter, closes the connection in the body filter once the head is
out, and is only logged in the log phase. Subrequests skip access and log.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.http import answers, static
from pyngx.http.exchange import CURRENT, Exchange, Redirect
from pyngx.http.route import CONTENT, PHASED, RETURN, STATIC, STATUS, Route
from pyngx.http.static import MAX_REDIRECTS  # nginx's NGX_HTTP_MAX_URI_CHANGES, for ngx.exec too
from pyngx.http.variables import assign
from pyngx.runtime import phase
from pyngx.runtime.phase import Exit

if TYPE_CHECKING:
    from pyngx.http.protocol import HttpProtocol

Step = tuple[Any, bool]

_set_phase = phase._phase.set  # the context variable's own methods: no wrapper call per phase
_reset_phase = phase._phase.reset
_set_current = CURRENT.set
_CONTENT = phase.CONTENT


def start(conn: HttpProtocol, ex: Exchange) -> None:
    """Serve EX through its location's phases: a task when one of them awaits, else here and now."""
    conn.busy = True
    route = ex.route
    if route is not None and route.yields:
        conn.loop.create_task(_whole(conn, ex, True))
    elif (route is not None and route.inner is CONTENT and route.log is None and route.header_filter is None
          and route.body_filter is None and not route.sets and ex.more is None):
        contextvars.copy_context().run(_quick, conn, ex, route)
    else:
        contextvars.copy_context().run(_whole_plain, conn, ex, False)


def _quick(conn: HttpProtocol, ex: Exchange, route: Route) -> None:
    """`_whole_plain` for the common phased location (rewrite or access, then a content handler;
    no ``set``, filter or log phase), its steps inline; an internal redirect goes the general way."""
    _set_current(ex)
    try:
        try:
            if ((route.rewrite is None or not _run_plain(conn, ex, phase.REWRITE, route.rewrite[0]))
                    and (route.access is None or not _run_plain(conn, ex, phase.ACCESS, route.access[0]))):
                _set_phase(_CONTENT)  # (`_run_plain` for content, inline)
                try:
                    route.handler()  # type: ignore[misc]
                except Exit as stop:
                    _exited(ex, _CONTENT, stop)
                except (Redirect, asyncio.CancelledError):
                    raise
                except BaseException as exc:  # noqa: BLE001 - the user's code: 500, never a dead worker
                    answers.crash(conn, ex, exc, _CONTENT)
        except Redirect as jump:
            if _serve_plain(conn, ex, jump) and _answer(conn, ex):
                _after(conn, ex)
            return
        conn.finish(ex)
    except asyncio.CancelledError:
        _cancelled(conn, ex)
        raise
    conn.busy = False
    if not conn.closed and conn.queue:
        conn.next()


def redirected(conn: HttpProtocol, ex: Exchange, jump: Redirect) -> None:
    """A plain content handler called ngx.exec: serve EX again at the new URI."""
    if _apply(conn, ex, jump):
        start(conn, ex)
    else:
        conn.busy = True
        contextvars.copy_context().run(_whole_plain, conn, ex, True)


async def _whole(conn: HttpProtocol, ex: Exchange, in_task: bool, *, skip: bool = False) -> None:
    """The run of one request, from ``set`` to the log phase; SKIP: answer what EX holds."""
    _set_current(ex)
    try:
        if not skip and not await _serve(conn, ex, in_task):
            return  # handed over to a task (a redirect to a location that awaits)
        if not _answer(conn, ex):
            return
    except asyncio.CancelledError:
        _cancelled(conn, ex)
        raise
    _after(conn, ex)


def _whole_plain(conn: HttpProtocol, ex: Exchange, skip: bool) -> None:
    """`_whole` for a route none of whose phases awaits, in plain calls."""
    _set_current(ex)
    try:
        if not skip and not _serve_plain(conn, ex):
            return
        if not _answer(conn, ex):
            return
    except asyncio.CancelledError:
        _cancelled(conn, ex)
        raise
    _after(conn, ex)


def _answer(conn: HttpProtocol, ex: Exchange) -> bool:
    """Send the answer EX holds (filters first); False when the location's files took it over."""
    more = ex.more
    if more is not None and more.files:
        _files(conn, ex)
        return False
    output(conn, ex, True)
    return True


def _after(conn: HttpProtocol, ex: Exchange) -> None:
    run_log(conn, ex)
    conn.busy = False
    if not conn.closed and conn.queue:
        conn.next()


def _cancelled(conn: HttpProtocol, ex: Exchange) -> None:
    ex.done = True
    conn.busy = False
    conn.abort()
    run_log(conn, ex)


def _files(conn: HttpProtocol, ex: Exchange) -> None:
    """After rewrite and access, a location that serves files answers as the plain path does
    (the file's own send keeps the connection busy while it lasts); then the log phase."""
    ex.extra().files = False
    conn.busy = False
    route = ex.route
    assert route is not None
    conn.served(ex, static.serve(conn, ex, route))
    run_log(conn, ex)


async def serve_sub(conn: Any, ex: Exchange) -> None:
    """A subrequest (`pyngx.http.subrequest`): the phases and the filters; its answer stays in EX."""
    _set_current(ex)
    await _serve(conn, ex, True)
    output(conn, ex, True)


async def _serve(conn: HttpProtocol, ex: Exchange, in_task: bool) -> bool:
    """The phases up to content, again after each internal redirect. False: a task took over."""
    while True:
        try:
            await _main(conn, ex)
            return True
        except Redirect as jump:
            if not _apply(conn, ex, jump):
                return True
            route = ex.route
            if route is not None and route.yields and not in_task:
                conn.loop.create_task(_whole(conn, ex, True))
                return False


def _serve_plain(conn: HttpProtocol, ex: Exchange, jump: Redirect | None = None) -> bool:
    """`_serve` for a route none of whose phases awaits (from JUMP when given). False: a task took over."""
    while True:
        if jump is None:
            try:
                _main_plain(conn, ex)
                return True
            except Redirect as caught:
                jump = caught
        if not _apply(conn, ex, jump):
            return True
        jump = None
        route = ex.route
        if route is not None and route.yields:
            conn.loop.create_task(_whole(conn, ex, True))
            return False


def _apply(conn: HttpProtocol, ex: Exchange, jump: Redirect) -> bool:
    """Point EX at JUMP's URI and its location; False (and a 500 filled) after too many redirects."""
    more = ex.extra()
    more.redirects += 1
    if more.redirects > MAX_REDIRECTS:
        log.error(f"rewrite or internal redirection cycle while internally redirecting to \"{jump.uri}\"")
        answers.fill(ex, 500)
        return False
    server = conn.server
    ex.uri, ex.args = jump.uri, jump.query
    if server is None:
        ex.route, ex.match = None, None
    elif jump.uri.startswith("@"):
        ex.route, ex.match = server.named.get(jump.uri), None  # a named location (`location @NAME`)
    else:
        ex.route, ex.match = server.find(jump.uri)
    if not jump.keep_ctx:
        ex.ctx = None  # an internal redirect starts a new ngx.ctx (OpenResty: "ngx.ctx")
    return True


async def _main(conn: HttpProtocol, ex: Exchange) -> None:
    route = _route(ex)
    if route is None:
        return
    sub = ex.more is not None and ex.more.parent is not None
    if route.rewrite is not None and await _run(conn, ex, phase.REWRITE, route.rewrite):
        return
    if route.access is not None and not sub and await _run(conn, ex, phase.ACCESS, route.access):
        return
    if route.inner is CONTENT:
        await _run(conn, ex, phase.CONTENT, (route.handler, route.is_async))
    else:
        _inner(conn, ex, route, sub)


def _main_plain(conn: HttpProtocol, ex: Exchange) -> None:
    """`_main` for a route none of whose phases awaits."""
    route = _route(ex)
    if route is None:
        return
    sub = ex.more is not None and ex.more.parent is not None
    if route.rewrite is not None and _run_plain(conn, ex, phase.REWRITE, route.rewrite[0]):
        return
    if route.access is not None and not sub and _run_plain(conn, ex, phase.ACCESS, route.access[0]):
        return
    if route.inner is CONTENT:
        _run_plain(conn, ex, phase.CONTENT, route.handler)
    else:
        _inner(conn, ex, route, sub)


def _route(ex: Exchange) -> Route | None:
    """EX's route with its ``set``s done; None (and a 404 filled) when no location matched."""
    route = ex.route
    if route is None:
        answers.fill(ex, 404)
        return None
    if route.sets:
        for name, template in route.sets:
            assign(ex, name, template.render(ex))
    return route


def _inner(conn: HttpProtocol, ex: Exchange, route: Route, sub: bool) -> None:
    """What a location does besides a content handler."""
    inner = route.inner
    if inner is RETURN:
        if not answers.fill_return(ex, route):
            conn.drop()  # 444
    elif inner is STATUS:
        body, ctype = conn.site.render_status(ex)
        answers.fill(ex, 200, body, ctype)
    elif inner is STATIC and not sub:
        ex.extra().files = True  # served by _files once the phases up to here are done
    else:
        answers.fill(ex, 404)


async def _run(conn: HttpProtocol, ex: Exchange, name: str, step: Step) -> bool:
    """Run one phase's handler; True when the request ends with it."""
    fn, is_async = step
    _set_phase(name)
    try:
        result = fn()
        if is_async:
            await result
    except Exit as stop:
        return _exited(ex, name, stop)
    except (Redirect, asyncio.CancelledError):
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code: 500, never a dead worker
        answers.crash(conn, ex, exc, name)
        return True
    return name is phase.CONTENT or bool(ex.out) or ex.sent


def _run_plain(conn: HttpProtocol, ex: Exchange, name: str, fn: Any) -> bool:
    """`_run` for a handler that does not await."""
    _set_phase(name)
    try:
        fn()
    except Exit as stop:
        return _exited(ex, name, stop)
    except (Redirect, asyncio.CancelledError):
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code: 500, never a dead worker
        answers.crash(conn, ex, exc, name)
        return True
    return name is phase.CONTENT or bool(ex.out) or ex.sent


def _exited(ex: Exchange, name: str, stop: Exit) -> bool:
    """A phase's handler called ngx.exit: True when the request ends with it."""
    if name is not phase.CONTENT and stop.args and stop.args[0] == 0:
        return bool(ex.out) or ex.sent  # ngx.exit(ngx.OK): on to the next phase
    if stop.args and stop.args[0] < 0 and not ex.sent:
        answers.fill(ex, 500)  # ngx.exit(ngx.ERROR)
    return True


# -- output: the filters, then the connection sends --

def output(conn: HttpProtocol, ex: Exchange, eof: bool) -> asyncio.Future[None] | None:
    """Run the filters over what EX has buffered, then send it: the whole answer when EOF
    (``conn.finish``), else a piece of it (``conn.flush``, whose waiter is returned)."""
    route = ex.route
    if route is not None and (route.header_filter is not None or route.body_filter is not None) and not ex.done:
        run_filters(conn, ex, eof)
    if eof:
        conn.finish(ex)
        return None
    return conn.flush(ex)


def run_filters(conn: HttpProtocol, ex: Exchange, eof: bool) -> None:
    """The header filter (once, before the head goes out) and the body filter (on what is buffered)."""
    route = ex.route
    assert route is not None
    more = ex.extra()
    if route.header_filter is not None and not ex.sent and not more.filtered:
        _header_filter(conn, ex, route.header_filter)
    if route.body_filter is not None and not more.eof:
        _body_filter(conn, ex, route.body_filter, eof)


def _header_filter(conn: HttpProtocol, ex: Exchange, step: Step) -> None:
    ex.extra().filtered = True
    token = _set_phase(phase.HEADER_FILTER)
    try:
        step[0]()
    except Exit as stop:
        code = stop.args[0] if stop.args else 0
        if code >= 300:  # the answer becomes nginx's page for CODE (ngx_http_filter_finalize_request)
            answers.fill(ex, code)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001
        answers.crash(conn, ex, exc, phase.HEADER_FILTER)
    finally:
        _reset_phase(token)


class Arg:
    """``ngx.arg`` in the body filter: ``[1]`` the chunk (bytes), ``[2]`` eof, as OpenResty numbers them."""

    __slots__ = ("chunk", "eof")

    def __init__(self, chunk: bytes, eof: bool) -> None:
        self.chunk = chunk
        self.eof = eof


ARG: list[Arg] = []  # the body filter running now (filters do not await, so one at a time)


def _body_filter(conn: HttpProtocol, ex: Exchange, step: Step, eof: bool) -> None:
    more = ex.extra()
    if more.body_ended:
        ex.out = []  # the filter ended the body: what comes later is dropped
        return
    out = ex.out
    arg = Arg(out[0] if len(out) == 1 else b"".join(out), eof)
    token = _set_phase(phase.BODY_FILTER)
    ARG.append(arg)
    try:
        step[0]()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001
        answers.log_error(conn, ex, exc, phase.BODY_FILTER)
        if ex.sent:
            ex.keep_alive = False  # the head is out: end the answer early by closing
            ex.out = []
            more.body_ended = True
        else:
            answers.fill(ex, 500)
        return
    finally:
        ARG.pop()
        _reset_phase(token)
    ex.out = [arg.chunk] if arg.chunk else []
    if arg.eof and not eof:
        more.body_ended = True


def run_log(conn: HttpProtocol, ex: Exchange) -> None:
    """The log phase of EX's location, after the answer was sent; errors are only logged."""
    route = ex.route
    if route is None or route.log is None or (ex.more is not None and ex.more.parent is not None):
        return
    token = _set_phase(phase.LOG)
    try:
        route.log[0]()
    except Exit:
        pass
    except BaseException as exc:  # noqa: BLE001
        answers.log_error(conn, ex, exc, phase.LOG)
    finally:
        _reset_phase(token)


# -- the response API that needs the filters: ngx.flush, ngx.send_headers, ngx.eof --

def flush(ex: Exchange) -> asyncio.Future[None] | None:
    """ngx.flush: the filters, then send what is buffered."""
    return output(ex.conn, ex, False)  # type: ignore[arg-type]


def send_headers(ex: Exchange) -> None:
    """ngx.send_headers: the header filter, then the head alone (the body buffered so far stays)."""
    if ex.sent or ex.done:
        return
    route = ex.route
    if route is not None and route.kind is PHASED and route.header_filter is not None:
        more = ex.extra()
        if not more.filtered:
            _header_filter(ex.conn, ex, route.header_filter)  # type: ignore[arg-type]
    body, ex.out = ex.out, []
    ex.conn.flush(ex)
    ex.out = body + ex.out


def eof(ex: Exchange) -> None:
    """ngx.eof: send the rest of the answer and end it; the handler runs on (its output is dropped)."""
    more = ex.extra()
    if more.eof or ex.done or more.parent is not None:
        return  # (a subrequest's answer ends with its handler)
    conn: Any = ex.conn
    route = ex.route
    if route is not None and route.kind is PHASED:
        run_filters(conn, ex, True)
    more.eof = True
    conn.flush(ex)
    if ex.chunked and not ex.head_only and not conn.closed:
        conn.transport.write(b"0\r\n\r\n")
    ex.chunked = False
    ex.head_only = True  # conn.finish now writes nothing more for this answer
    if not ex.keep_alive and not conn.closed:
        conn.linger()  # HTTP/1.0: the body ends when the connection does


# -- the C path (pyngx.http._fast) runs a ``Route.quick`` location's steps itself; this is its way back --

GO_ON, ANSWER, HANDED_OVER = range(3)


def step_raised(conn: HttpProtocol, ex: Exchange, name: str, exc: BaseException) -> int:
    """A phase's handler run by the C path raised EXC: go on to the next phase, answer what EX
    holds, or (ngx.exec) the request was handed over to the general path, as `_serve_plain` does;
    in the log phase, errors are only logged (`run_log`)."""
    if name is phase.LOG:
        if not isinstance(exc, Exit):
            answers.log_error(conn, ex, exc, phase.LOG)
        return ANSWER
    if isinstance(exc, Exit):
        return ANSWER if _exited(ex, name, exc) else GO_ON
    if isinstance(exc, Redirect):
        if _serve_plain(conn, ex, exc) and _answer(conn, ex):
            _after(conn, ex)
        return HANDED_OVER
    if isinstance(exc, asyncio.CancelledError):
        _cancelled(conn, ex)
        raise exc
    answers.crash(conn, ex, exc, name)
    return ANSWER
