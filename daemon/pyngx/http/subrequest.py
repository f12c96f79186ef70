"""Subrequests in process: ``ngx.location.capture`` / ``capture_multi``.

A subrequest is an `Exchange` served by the same phases as a request
(`pyngx.http.phases`) on a `SubConn` that keeps the answer instead of
writing it: its location's ``set``s, rewrite, content (or ``return``...), its
filters; not access and not log, as nginx skips both for subrequests. It
inherits the parent's request headers and, for POST and PUT, its body
(lua-nginx-module ``t/020-subrequest.t``). Each runs in its own task, so
``capture_multi`` runs them together.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyngx.http import phases
from pyngx.http.exchange import Exchange

if TYPE_CHECKING:
    from pyngx.http.protocol import HttpProtocol

MAX_DEPTH = 50  # nginx: "subrequests cycle while processing" beyond this nesting


@dataclass(frozen=True, slots=True)
class Response:
    """What ``ngx.location.capture`` returns (OpenResty's ``res`` table)."""

    status: int
    header: dict[str, Any]
    body: bytes
    truncated: bool = False


class SubConn:
    """Stands in for the connection of a subrequest: the parent's addresses, no socket."""

    def __init__(self, parent: HttpProtocol) -> None:
        self.site = parent.site
        self.loop = parent.loop
        self.peer = parent.peer
        self.sockname = parent.sockname
        self.server = parent.server
        self.number = parent.number
        self.requests = parent.requests
        self.closed = False
        self.busy = False
        self.eof = False
        self.queue: deque[Any] = deque()

    def finish(self, ex: Exchange) -> None:
        ex.done = True

    def flush(self, ex: Exchange) -> None:
        return None  # the answer is kept whole

    def abort(self) -> None:
        self.closed = True

    def drop(self) -> None:
        self.closed = True

    def next(self) -> None:
        return None


def _depth(ex: Exchange) -> int:
    depth = 0
    more = ex.more
    while more is not None and more.parent is not None:
        depth += 1
        more = more.parent.more
    return depth


async def capture(parent: Exchange, uri: str, args: str, method: str, body: bytes | None,
                  ctx: dict[str, Any] | None, variables: dict[str, str] | None, forward_body: bool) -> Response:
    """Serve URI?ARGS as a subrequest of PARENT; its status, headers and body."""
    if _depth(parent) >= MAX_DEPTH:
        raise RuntimeError(f'subrequests cycle while processing "{uri}"')
    conn = SubConn(parent.conn)  # type: ignore[arg-type]
    if body is None and (forward_body or method in ("POST", "PUT")):
        body = parent.body
    headers = [(k, v) for k, v in parent.headers if k.lower() not in (b"content-length", b"transfer-encoding")]
    if body is not None:
        headers.append((b"Content-Length", b"%d" % len(body)))
    url = (uri + ("?" + args if args else "")).encode("utf-8", "surrogateescape")
    server = conn.server
    route, match = server.find(uri) if server is not None else (None, None)
    ex = Exchange(conn, method.encode("ascii"), url, (uri, args, route, match), parent.version, headers,  # type: ignore[arg-type]
                  True, parent.start)
    ex.body = body
    ex.extra().parent = parent
    ex.ctx = ctx
    if variables:
        ex.vars = dict(variables)
    await conn.loop.create_task(phases.serve_sub(conn, ex))  # type: ignore[arg-type]
    out = b"".join(ex.out)
    return Response(ex.status, _header(ex), out)


def _header(ex: Exchange) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _key, (name, value) in (ex.out_headers or {}).items():
        out[name] = list(value) if isinstance(value, (list, tuple)) else value
    if ex.route is not None and not any(k.lower() == "content-type" for k in out):
        out["Content-Type"] = ex.route.conf.default_type
    return out


async def capture_multi(parent: Exchange, requests: list[tuple[Any, ...]]) -> list[Response]:
    """Several captures at once, their answers in order."""
    return list(await asyncio.gather(*(capture(parent, *r) for r in requests)))
