"""Answers made by the server rather than by user code: ``return``, errors, 500s.

Owns filling an `Exchange` for ``return CODE [TEXT|URL]``, nginx's pages, and
the 500 after a handler raised (with the traceback logged, the user's frames
only). Nothing here sends or closes: the connection (`pyngx.http.protocol`)
sends what is filled here.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pyngx import log
from pyngx.http import replies
from pyngx.http.exchange import CURRENT
from pyngx.http.route import REDIRECTS

if TYPE_CHECKING:
    from pyngx.http.exchange import Exchange
    from pyngx.http.protocol import HttpProtocol
    from pyngx.http.route import Route

_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def crash(conn: HttpProtocol, ex: Exchange, exc: BaseException, where: str = "content_by_python") -> None:
    """The handler raised: log the traceback (from the user's first frame), answer 500."""
    log_error(conn, ex, exc, where)
    if ex.sent:
        ex.keep_alive = False  # the head is out: end the response early by closing
        return
    ex.status = 500
    ex.out = [replies.page(500)]
    ex.out_headers = {"content-type": ("Content-Type", "text/html")}


def premature(conn: HttpProtocol, what: str) -> None:
    """Log a request cut by the client's EOF, as nginx does (info); the caller closes at once.

    Waiting for client_header_timeout instead would let half-closed clients hold every slot.
    """
    if log.enabled(log.INFO):
        log.info(f"client prematurely closed connection while reading client request {what}, "
                 f"client: {_addr(conn.peer)}")


def log_error(conn: HttpProtocol, ex: Exchange, exc: BaseException, where: str) -> None:
    """Log what a phase of EX raised, its traceback from the user's first frame, with the request's context."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_HERE):
        tb = tb.tb_next
    exc = exc.with_traceback(tb)
    token = CURRENT.set(ex)  # the line ends with the request's context, as in nginx
    try:
        log.exception(f"{where} error", exc)
    finally:
        CURRENT.reset(token)


def fill(ex: Exchange, status: int, body: bytes | None = None, ctype: str = "text/html") -> None:
    """Make EX's answer STATUS with BODY (nginx's page for STATUS when None); send nothing yet."""
    ex.status = status
    if body is None:
        body = replies.page(status)
    if body or status >= 300:
        ex.out_headers = {"content-type": ("Content-Type", ctype)}
    ex.out = [body] if body else []


def fill_return(ex: Exchange, route: Route) -> bool:
    """Make EX's answer for ``return``; False for 444: the connection closes without an answer."""
    code = route.ret_code
    text = route.ret_text.render(ex) if route.ret_text is not None else None
    if code == 444:
        return False
    if code in REDIRECTS and text is not None:
        ex.status = code
        ex.out = [replies.page(code)]
        ex.out_headers = {"location": ("Location", text), "content-type": ("Content-Type", "text/html")}
    elif text is not None:
        ex.status = code
        ex.out = [text.encode("utf-8", "surrogateescape")]
    else:
        fill(ex, code)
    return True


def _addr(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
