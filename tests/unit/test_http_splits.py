"""The connection state machine fed the same bytes in every split: the answers never change."""
from __future__ import annotations

import asyncio
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pyngx.conf.model import HttpConf, Listen, LocationConf, ServerConf
from pyngx.conf.pycode import compile_chunk
from pyngx.http.protocol import HttpProtocol
from pyngx.http.server import HttpServer
from pyngx.runtime import core, usercode


class Transport:
    """Collects what the connection writes; records closes."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def resume_reading(self) -> None:
        pass


def chunk(code: str) -> Any:
    return compile_chunk(code, "split.conf", 1, "handler")


LOCATIONS = (
    LocationConf("", "/", None, content=chunk('ngx.say(ngx.var.request_method, " ", ngx.var.request_uri)')),
    LocationConf("=", "/echo", None, content=chunk('ngx.print(ngx.req.get_body_data() or b"-")')),
    LocationConf("=", "/hdr", None, content=chunk('ngx.say(ngx.req.get_headers()["x-long"])')),
)

REQUESTS = (
    b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\n-hi\r\n0\r\n\r\n"
    b"GET /hdr HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nsized!!"
    b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
)


def feed(splits: list[int]) -> bytes:
    loop = asyncio.new_event_loop()
    try:
        core.RT.globals = usercode.new_globals()
        conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", 1),), locations=LOCATIONS),))
        server = HttpServer(conf, loop)
        conn = HttpProtocol(server.site, server.vhosts[("127.0.0.1", 1)])
        transport = Transport()
        conn.connection_made(transport)
        pos = 0
        for cut in sorted(set(splits)) + [len(REQUESTS)]:
            if cut > pos:
                conn.data_received(REQUESTS[pos:cut])
                pos = cut
        server.final(False)
        return re.sub(rb"Date: [^\r]*", b"Date: -", bytes(transport.out))
    finally:
        loop.close()


WHOLE = feed([])


def test_whole_input_answers_every_request() -> None:
    bodies = [b"GET /a/b?c=d\n", b"hello-hi", b"v" * 300 + b"\n", b"sized!!"]
    for body in bodies:
        assert body in WHOLE
    assert WHOLE.count(b"HTTP/1.1 200 OK") == 5
    assert WHOLE.endswith(b"Content-Length: 8\r\n\r\n")  # HEAD: the length, no body


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(REQUESTS) - 1), max_size=40))
def test_any_split_gives_the_same_answers(splits: list[int]) -> None:
    assert feed(splits) == WHOLE


def test_byte_by_byte() -> None:
    assert feed(list(range(1, len(REQUESTS)))) == WHOLE
