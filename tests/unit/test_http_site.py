"""A connection's deadlines in the site's wheel, its moves, refused records and the parser pool,
driven by hand: the wheel is told the time, nothing sleeps."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from pyngx.conf.model import HttpConf, Listen, LocationConf, ServerConf
from pyngx.conf.pycode import compile_chunk
from pyngx.http import connection, protocol
from pyngx.http.connection import BODY, HEAD, IDLE, LINGER, BadMove, Refused
from pyngx.http.protocol import HttpProtocol
from pyngx.http.server import DRAIN_GRACE, HttpServer
from pyngx.http.site import SLOTS, UNFILED, Site
from pyngx.runtime import usercode
from pyngx.runtime import core

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.fixture
def server() -> Iterator[HttpServer]:
    loop = asyncio.new_event_loop()
    core.RT.globals = usercode.new_globals()
    hello = compile_chunk('ngx.say("hello")', "site.conf", 1, "handler")
    conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", 1),), locations=(
        LocationConf("", "/", None, content=hello),)),), keepalive_timeout=5.0, client_header_timeout=3.0)
    srv = HttpServer(conf, loop)
    yield srv
    srv.final(False)
    loop.close()


def connect(server: HttpServer) -> tuple[HttpProtocol, Transport]:
    conn = HttpProtocol(server.site, server.vhosts[("127.0.0.1", 1)])
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport


def at(site: Site, now: float) -> None:
    """The wheel looks at every slot up to NOW (as the server's tick does)."""
    site.clock = now
    site.expire_due(now)


def test_a_new_connection_is_filed_by_its_header_timeout(server: HttpServer) -> None:
    site = server.site
    conn, transport = connect(server)
    start = conn.since
    assert conn.due != UNFILED and conn.due <= start + 3.0 < conn.due + 1 / SLOTS
    at(site, start + 2.9)
    assert not transport.closed
    at(site, start + 3.0 + 1 / SLOTS)
    assert transport.closed  # idle before its first request: closed with a FIN


def test_requests_do_not_refile_and_keepalive_is_found_when_the_slot_comes(server: HttpServer) -> None:
    site = server.site
    conn, transport = connect(server)
    filed = conn.due
    for i in range(3):
        site.clock = conn.since + 0.5
        conn.data_received(GET)
    assert transport.out.count(b"hello\n") == 3
    assert conn.due == filed  # activity moves `since` only
    last = conn.since
    at(site, filed + 2 / SLOTS)  # the old deadline's slot: not due, filed again by keepalive_timeout
    assert not transport.closed and conn.due != UNFILED and conn.due <= last + 5.0
    at(site, last + 5.0 + 1 / SLOTS)
    assert transport.closed


def test_an_earlier_deadline_refiles_the_connection(server: HttpServer) -> None:
    site = server.site
    conn, transport = connect(server)
    site.clock = conn.since
    conn.data_received(GET)  # keepalive (5 s) now
    conn.data_received(b"GET / HT")  # a head begins: header timeout (3 s) from now
    assert conn.state == HEAD
    at(site, conn.since + 3.0 + 1 / SLOTS)
    assert transport.aborted  # a half-sent head: reset, as before


def test_drain_closes_idle_connections_after_the_grace(server: HttpServer) -> None:
    site = server.site
    conn, transport = connect(server)
    site.clock = conn.since
    conn.data_received(GET)
    server.stop_accepting()
    now = server.loop.time()
    at(site, now + DRAIN_GRACE / 2)
    assert not transport.closed
    at(site, now + DRAIN_GRACE + 2 / SLOTS)
    assert transport.closed


def test_lost_connections_leave_the_wheel(server: HttpServer) -> None:
    site = server.site
    conns = [connect(server)[0] for _ in range(5)]
    assert site.filed() == 5
    for conn in conns:
        conn.connection_lost(None)
    assert site.filed() == 0 and not site.conns


def test_moves_outside_the_table_raise(server: HttpServer) -> None:
    conn, _ = connect(server)
    conn._move(HEAD)
    conn._move(BODY)
    with pytest.raises(BadMove, match="BODY cannot move to HEAD"):
        conn._move(HEAD)
    conn._move(LINGER)
    for state in (IDLE, HEAD, BODY):
        with pytest.raises(BadMove):
            conn._move(state)
    assert connection.MOVES[LINGER] == frozenset()


def test_a_refused_request_waits_in_the_queue_as_a_record(server: HttpServer) -> None:
    conn, transport = connect(server)
    conn.busy = True  # an async handler runs
    conn.refuse(400)
    assert conn.queue is not None and [type(item) for item in conn.queue] == [Refused]
    assert conn.queue[0].status == 400 and transport.out == b""
    conn.busy = False
    conn.next()
    assert transport.out.startswith(b"HTTP/1.1 400 Bad Request\r\n") and conn.state == LINGER


def test_the_parser_goes_back_to_the_pool_and_serves_the_next_connection(server: HttpServer) -> None:
    site = server.site
    first, out1 = connect(server)
    first.data_received(GET)
    assert first.parser is None and len(site.parsers) == 1  # first request answered, nothing pending
    pooled = site.parsers[0]
    second, out2 = connect(server)
    second.data_received(GET)
    assert second.parser is None and site.parsers == [pooled]
    first.data_received(GET[:10])  # a head cut in two reads keeps its parser
    assert first.parser is pooled and not site.parsers
    first.data_received(GET[10:])
    second.data_received(GET + GET)
    assert out1.out.count(b"hello\n") == 2 and out2.out.count(b"hello\n") == 3
    assert first.parser is not None  # a second request: the connection keeps it while active


def test_idle_connections_let_go_of_their_parser_after_a_while(server: HttpServer) -> None:
    site = server.site
    conn, _ = connect(server)
    site.clock = conn.since
    conn.parse(GET)  # (the Python path: the C one takes no parser, see below)
    conn.parse(GET)  # the second request: kept
    assert conn.parser is not None and site.fresh == [conn]
    site.shrink_idle(conn.since + 0.1)
    assert conn.parser is not None and site.fresh == [conn]
    site.shrink_idle(conn.since + 1.5)
    assert conn.parser is None and site.fresh == [] and not conn.listed


@pytest.mark.skipif(not protocol.FAST, reason="the C path is not in use (not built, or PYNGX_HTTP_PURE=1)")
def test_plain_requests_answered_in_c_take_no_parser(server: HttpServer) -> None:
    conn, transport = connect(server)
    conn.data_received(GET)  # the first: Python resolves the target and checks Host
    conn.data_received(GET + GET)  # then both in C
    assert transport.out.count(b"hello\n") == 3 and conn.parser is None and conn.requests == 3
    assert conn.listed and conn.state == IDLE


def test_a_pipelined_tail_keeps_the_parser(server: HttpServer) -> None:
    conn, transport = connect(server)
    conn.data_received(GET + b"GE")  # the next request's first bytes are in the parser
    assert conn.tail and conn.parser is not None
    conn.shrink()
    assert conn.parser is not None
    conn.data_received(b"T /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.out.count(b"hello\n") == 2
