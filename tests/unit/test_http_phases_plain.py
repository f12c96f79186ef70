"""Phased locations none of whose phases awaits (run in plain calls), in-process: the same
answers as the coroutine path, including a redirect into a location that awaits."""
from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from test_http_server import Served, loc, read_all, responses

from pyngx.conf.model import LocationConf
from pyngx.conf.pycode import compile_chunk


def phased(pattern: str, access: str, content: str | None = None) -> LocationConf:
    kw = {"access": compile_chunk(access, "test.conf", 1, "handler")}
    return loc("=", pattern, content, **kw)


LOCATIONS = (
    phased("/ok", 'ngx.ctx["seen"] = "access"', 'ngx.say("content after ", ngx.ctx["seen"])'),
    phased("/deny", "ngx.exit(403)", 'ngx.say("unreached")'),
    phased("/boom", 'raise ValueError("in access")', 'ngx.say("unreached")'),
    phased("/to-async", 'ngx.exec("/slow")'),
    phased("/exit-ok", 'ngx.exit(ngx.OK)', 'ngx.say("on to content")'),
    loc("=", "/slow", 'await ngx.sleep(0.01)\nngx.say("slow ", ngx.var.uri)'),
)


@pytest.fixture(params=["uvloop", "asyncio"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    s = Served(LOCATIONS, request.param)
    try:
        yield s
    finally:
        s.close()


def test_phases_in_plain_calls_answer_as_before(served: Served) -> None:
    status, _, body = served.get("/ok")
    assert (status, body) == (200, b"content after access\n")
    assert served.get("/deny")[0] == 403
    assert served.get("/boom")[0] == 500
    assert served.get("/exit-ok")[2] == b"on to content\n"
    assert served.get("/ok")[0] == 200  # the server lives on after the error


def test_a_redirect_into_a_location_that_awaits(served: Served) -> None:
    status, _, body = served.get("/to-async")
    assert (status, body) == (200, b"slow /slow\n")


def test_pipelined_requests_keep_their_order(served: Served) -> None:
    paths = ["/ok", "/to-async", "/deny", "/ok", "/exit-ok"]
    data = b"".join(b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths[:-1])
    data += b"GET %b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % paths[-1].encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(data)
        got = responses(read_all(s))
    assert [(status, body) for status, _, body in got] == [
        (200, b"content after access\n"), (200, b"slow /slow\n"), (403, got[2][2]), (200, b"content after access\n"),
        (200, b"on to content\n")]
