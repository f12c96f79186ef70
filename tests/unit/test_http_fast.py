"""The plain requests' path in C answers exactly as the Python path does.

Each case is fed to two fresh connections of the same server: one through
``data_received`` (whole plain requests answered in C, the rest handed to
Python), one through ``parse`` (Python only). The bytes written, and the
connection's state after them, must be the same; the cases the C path takes
on its own are checked to have taken no parser.
"""
from __future__ import annotations

import asyncio
import importlib
import re
import string
from collections.abc import Iterator
from typing import Any

import pytest

from pyngx.conf.model import HttpConf, Listen, LocationConf, Return, ServerConf
from pyngx.conf.pycode import compile_chunk
from pyngx.http import protocol
from pyngx.http.connection import HEAD, IDLE
from pyngx.http.protocol import HttpProtocol
from pyngx.http.server import HttpServer
from pyngx.runtime import core, usercode

pytestmark = pytest.mark.skipif(not protocol.FAST, reason="the C path is not in use (not built, or PYNGX_HTTP_PURE=1)")


class Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.ended = ""

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.ended = self.ended or "eof"

    def close(self) -> None:
        self.ended = self.ended or "close"

    def abort(self) -> None:
        self.ended = self.ended or "abort"

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def chunk(code: str) -> Any:
    return compile_chunk(code, "fast.conf", 1, "handler")


LOCATIONS = (
    LocationConf("", "/", None, content=chunk('ngx.say("hello")')),
    LocationConf("=", "/vars", None, content=chunk(
        'h = ngx.req.get_headers()\n'
        'ngx.say(ngx.var.request_uri, " ", ngx.var.uri, " ", ngx.var.args, " ", ngx.req.get_method(), " ",'
        ' ngx.req.http_version(), " ", sorted(h.items()), " ", ngx.req.get_uri_args())')),
    LocationConf("=", "/hdr", None, content=chunk('ngx.header["X-A"] = "1"\nngx.say("h")')),
    LocationConf("=", "/ctype", None, content=chunk(
        'ngx.header.content_type = "application/json"\nngx.header["Cache-Control"] = "no-store"\nngx.print("{}")')),
    LocationConf("=", "/list", None, content=chunk('ngx.header["X-Many"] = ["a", "b"]\nngx.say("l")')),
    LocationConf("=", "/utf", None, content=chunk('ngx.header["X-U"] = "caf\u00e9"\nngx.say("u")')),
    LocationConf("=", "/managed", None, content=chunk(
        'ngx.header["Content-Length"] = "5"\nngx.header["Server"] = "me"\nngx.header["X-B"] = 7\nngx.say("m")')),
    LocationConf("=", "/removed", None, content=chunk('ngx.header["X-A"] = "1"\nngx.header["X-A"] = None\nngx.say("r")')),
    LocationConf("=", "/status", None, content=chunk('ngx.status = 201\nngx.say("created")')),
    LocationConf("=", "/exit", None, content=chunk('ngx.say("bye")\nngx.exit(ngx.HTTP_OK)')),
    LocationConf("=", "/exit404", None, content=chunk('ngx.exit(404)')),
    LocationConf("=", "/boom", None, content=chunk('raise ValueError("boom")')),
    LocationConf("=", "/exec", None, content=chunk('ngx.exec("/vars", "from=exec")')),
    LocationConf("=", "/big", None, content=chunk('ngx.print("x" * 70000)')),
    LocationConf("=", "/flush", None, content=chunk('ngx.say("a")\nngx.flush()\nngx.say("b")')),
    LocationConf("=", "/ret", None, ret=Return(200, "returned")),
    LocationConf("=", "/redirect", None, content=chunk('ngx.redirect("/there")')),
    LocationConf("=", "/444", None, content=chunk('ngx.exit(444)')),
    LocationConf("=", "/eof", None, content=chunk('ngx.say("a")\nngx.eof()\nngx.say("b")')),
    LocationConf("=", "/body", None, content=chunk('ngx.req.read_body()\nngx.say(repr(ngx.req.get_body_data()))')),
    LocationConf("=", "/small", None, client_max_body_size=4, content=chunk(
        'ngx.req.read_body()\nngx.say(ngx.req.get_method(), repr(ngx.req.get_body_data()))')),
    LocationConf("=", "/stream", None, content=chunk(
        'n = 0\nasync for piece in ngx.req.stream():\n    n += len(piece)\nngx.say("streamed ", n)')),
    LocationConf("=", "/out", None, content=chunk(
        'ngx.say("a")\nngx.say("\u00e9t\u00e9")\nngx.say("\\udcff")\nngx.say(1, b"x", "y")\nngx.say()\n'
        'ngx.print("p")\nngx.print(b"q")\nngx.print()\nngx.print("\u20ac", 2)')),
    LocationConf("=", "/ctx", None, content=chunk('ngx.ctx["a"] = 1\nngx.say(ngx.ctx["a"], ngx.var.remote_addr)')),
    LocationConf("=", "/guarded", None, access=chunk(
        'if ngx.req.get_headers().get("x-token") != "secret":\n    ngx.exit(ngx.HTTP_FORBIDDEN)'),
        content=chunk('ngx.header["X-G"] = "1"\nngx.say("in ", ngx.get_phase())')),
    LocationConf("=", "/steps", None, rewrite=chunk('ngx.ctx["r"] = ngx.get_phase()'),
                 access=chunk('ngx.ctx["a"] = ngx.get_phase()\nngx.exit(ngx.OK)'),
                 content=chunk('ngx.say(ngx.ctx["r"], ngx.ctx["a"], ngx.get_phase())')),
    LocationConf("=", "/access-says", None, access=chunk('ngx.say("from access")'), content=chunk('ngx.say("no")')),
    LocationConf("=", "/access-boom", None, access=chunk('raise KeyError("a")'), content=chunk('ngx.say("no")')),
    LocationConf("=", "/access-error", None, access=chunk('ngx.exit(ngx.ERROR)'), content=chunk('ngx.say("no")')),
    LocationConf("=", "/access-exec", None, access=chunk('ngx.exec("/steps")'), content=chunk('ngx.say("no")')),
    LocationConf("=", "/access-exec-far", None, access=chunk('ngx.exec("/async")'), content=chunk('ngx.say("no")')),
    LocationConf("=", "/content-boom", None, access=chunk('pass'), content=chunk('raise ValueError("c")')),
    LocationConf("=", "/content-exit", None, access=chunk('pass'), content=chunk('ngx.say("x")\nngx.exit(201)')),
    LocationConf("=", "/logged", None, access=chunk('pass'), content=chunk('ngx.say("l")'),
                 log=chunk('LOGGED.append((ngx.get_phase(), ngx.var.uri, ngx.status))')),
    LocationConf("=", "/log-boom", None, content=chunk('ngx.say("b")'), log=chunk('raise ValueError("in log")')),
    LocationConf("=", "/log-exit", None, content=chunk('ngx.say("e")'),
                 log=chunk('ngx.exit(ngx.OK)\nLOGGED.append("never")')),
    LocationConf("=", "/async", None, content=chunk('await ngx.sleep(0)\nngx.say("later")')),
)

H = b"Host: x\r\n"
CASES = {
    # the C path's own
    "get": b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "post": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc",
    "zero-length": b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
    "pipelined": b"GET / HTTP/1.1\r\n" + H + b"\r\n" + b"GET /vars?a=1&b=2 HTTP/1.1\r\n" + H + b"X-Y: z\r\n\r\n",
    "headers": b"GET /vars?q=%41b HTTP/1.1\r\n" + H + b"User-Agent: t/1\r\nAccept:*/*\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
    "keep-alive-1.0": b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n" + H + b"\r\n" + b"GET / HTTP/1.0\r\n\r\n",
    "head": b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    "close": b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    "http-1.0": b"GET / HTTP/1.0\r\n\r\n",
    "response-header": b"GET /hdr HTTP/1.1\r\n" + H + b"\r\n",
    "status": b"GET /status HTTP/1.1\r\n" + H + b"\r\n",
    "response-headers": b"".join(b"GET /%s HTTP/1.1\r\n" % p + H + b"\r\n"
                                 for p in (b"ctype", b"list", b"utf", b"managed", b"removed")),
    "exit": b"GET /exit HTTP/1.1\r\n" + H + b"\r\n" + b"GET /exit404 HTTP/1.1\r\n" + H + b"\r\n",
    "crash": b"GET /boom HTTP/1.1\r\n" + H + b"\r\n" + b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "exec": b"GET /exec HTTP/1.1\r\n" + H + b"\r\n",
    "large": b"GET /big HTTP/1.1\r\n" + H + b"\r\n",
    "flush": b"GET /flush HTTP/1.1\r\n" + H + b"\r\n",
    "return": b"GET /ret HTTP/1.1\r\n" + H + b"\r\n",
    "api": b"".join(b"GET /%s HTTP/1.1\r\n" % p + H + b"\r\n" for p in (b"redirect", b"eof", b"body", b"ctx")),
    "444": b"GET /444 HTTP/1.1\r\n" + H + b"\r\n" + b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "not-found-cached": b"GET /nothing/here HTTP/1.1\r\n" + H + b"\r\n",
    "phases": b"".join(b"GET /%s HTTP/1.1\r\n" % p + H + b"X-Token: secret\r\n\r\n" for p in (
        b"guarded", b"steps", b"access-says", b"access-boom", b"access-error", b"access-exec", b"content-boom",
        b"content-exit", b"logged", b"log-boom", b"log-exit", b"logged")) + b"GET /guarded HTTP/1.1\r\n" + H + b"\r\n",
    "phases-far": b"GET /access-exec-far HTTP/1.1\r\n" + H + b"\r\n" + b"GET /steps HTTP/1.1\r\n" + H + b"\r\n",
    "async-then-plain": b"GET /async HTTP/1.1\r\n" + H + b"\r\n" + b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    "partial-next": b"GET / HTTP/1.1\r\n" + H + b"\r\n" + b"GET / HT",
    "versions": b"GET / HTTP/1.1\r\n" + H + b"\r\n" + b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                + b"GET / HTTP/1.1\r\n\r\n",
    "bodies": b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello"
              + b"PUT /body HTTP/1.1\r\n" + H + b"content-length: 2\r\n\r\nhi"
              + b"DELETE /small HTTP/1.1\r\n" + H + b"\r\n"
              + b"OPTIONS /small HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n"
              + b"PATCH /small HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n\r\nabcd"
              + b"GET /body HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nz",
    # handed to Python
    "body-too-large": b"POST /small HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "body-partial": b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nhello",
    "body-leading-zero": b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 05\r\n\r\nhello",
    "body-two-lengths": b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "body-sign": b"POST /body HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "body-streamed": b"POST /stream HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "body-async": b"POST /async HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello",
    "connect": b"CONNECT x:443 HTTP/1.1\r\n" + H + b"\r\n",
    "trace": b"TRACE / HTTP/1.1\r\n" + H + b"\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
    "bad-host": b"GET / HTTP/1.1\r\nHost: ../x\r\n\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "spaces": b"GET / HTTP/1.1\r\n" + H + b"X-A:  two\r\nX-B: trail \r\n\r\n",
    "lower-method": b"get / HTTP/1.1\r\n" + H + b"\r\n",
    "chunked": b"GET / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\n" + H.replace(b"\r", b"") + b"\n",
    "fragment": b"GET /#top HTTP/1.1\r\n" + H + b"\r\n",
    "upgrade": b"GET / HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "expect": b"GET / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n\r\n",
    "many-headers": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(70)) + b"\r\n",
    "high-bytes": b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n",
    "http-2.0": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "bad-header-name": b"GET / HTTP/1.1\r\n" + H + b"Bad Name: v\r\n\r\n",
    "control-in-value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n",
}
# what the C path answers without a parser (the other cases need one at some point)
C_ONLY = ("get", "pipelined", "headers", "keep-alive-1.0", "head", "close", "http-1.0", "response-header",
          "response-headers", "status", "exit", "crash", "exec", "large", "flush", "return", "not-found-cached", "phases", "post", "zero-length", "bodies",
          "api")


@pytest.fixture
def server() -> Iterator[HttpServer]:
    loop = asyncio.new_event_loop()
    core.RT.globals = usercode.new_globals()
    conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", 1),), locations=LOCATIONS),))
    srv = HttpServer(conf, loop)
    srv.site.date_server = b"Server: t\r\nDate: -\r\n"
    yield srv
    srv.final(False)
    loop.close()


def answer(server: HttpServer, data: bytes, *, python_only: bool) -> tuple[bytes, Any]:
    logged = core.RT.globals.setdefault("LOGGED", [])
    logged.clear()
    conn = HttpProtocol(server.site, server.vhosts[("127.0.0.1", 1)])
    transport = Transport()
    conn.connection_made(transport)
    (conn.parse if python_only else conn.data_received)(data)
    server.site.loop.run_until_complete(asyncio.sleep(0.01))  # an async handler's task
    out = re.sub(rb"\n\[[^\n]*", b"", bytes(transport.out))
    return out, (conn.state, conn.requests, conn.closed, conn.busy, transport.ended, conn.parser is None,
                 list(logged))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_c_path_answers_as_python_does(server: HttpServer, name: str) -> None:
    data = CASES[name]
    answer(server, data, python_only=True)  # resolves and remembers the targets
    python_out, python_state = answer(server, data, python_only=True)
    c_out, c_state = answer(server, data, python_only=False)
    assert c_out == python_out
    if name == "partial-next":
        # the rest of the read reaches Python as a read of its own: a request has begun, and
        # client_header_timeout runs for it (the Python path alone counts it from the next read)
        assert c_state[0] == HEAD and python_state[0] == IDLE
        c_state = python_state[:1] + c_state[1:]
    assert c_state[:5] == python_state[:5] and c_state[6] == python_state[6]  # (6: what log phases saw)
    if name == "phases":
        assert c_state[6] == [("log", "/logged", 200)] * 2
    if name in C_ONLY:
        assert c_state[5], "the C path took this case on its own"
    assert python_out.startswith(b"HTTP/1.") or name in ("444", "body-partial")  # (444: closed; the rest of a body awaited)


class BrokenTransport(Transport):
    def write(self, data: bytes) -> None:
        raise RuntimeError("the transport broke")


def test_an_error_of_the_path_itself_aborts_the_connection_as_in_python(server: HttpServer) -> None:
    data = CASES["get"]
    answer(server, data, python_only=True)
    ends = []
    for python_only in (True, False):
        conn = HttpProtocol(server.site, server.vhosts[("127.0.0.1", 1)])
        transport = BrokenTransport()
        conn.connection_made(transport)
        (conn.parse if python_only else conn.data_received)(data)
        ends.append((transport.ended, conn.closed, conn.parser is None))
    assert ends == [("abort", True, False), ("abort", True, True)]


def vhosts_server(names: tuple[tuple[str, ...], ...]) -> HttpServer:
    core.RT.globals = usercode.new_globals()
    servers = tuple(ServerConf(listens=(Listen("127.0.0.1", 1),), server_names=these, locations=(
        LocationConf("", "/", None, content=chunk(f'ngx.say("server {i}", ngx.var.host)')),))
        for i, these in enumerate(names))
    srv = HttpServer(HttpConf(servers=servers), asyncio.new_event_loop())
    srv.site.date_server = b"Server: t\r\nDate: -\r\n"
    return srv


@pytest.mark.parametrize("names", [(("a.example",), ("b.example", "B2.example")),
                                   (("a.example",), ("*.w.example",), ("b.example",))])
def test_the_c_path_picks_the_server_by_host_as_python_does(names: tuple[tuple[str, ...], ...]) -> None:
    server = vhosts_server(names)
    try:
        hosts = (b"a.example", b"B.EXAMPLE", b"b2.example:8080", b"b.example.", b"x.w.example", b"other",
                 b"[::1]:80", b"a.example:")
        data = b"".join(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host for host in hosts) + b"GET / HTTP/1.0\r\n\r\n"
        for host in hosts:  # each server resolves the target once
            answer(server, b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host, python_only=True)
        python_out, python_state = answer(server, data, python_only=True)
        c_out, c_state = answer(server, data, python_only=False)
        assert c_out == python_out and c_state[:5] == python_state[:5]
        assert python_out.count(b"HTTP/1.1 200 OK") == len(hosts) + 1
        assert b"server 1" in python_out
    finally:
        server.final(False)
        server.site.loop.close()


def test_the_access_log_has_the_same_lines_from_both_paths(tmp_path: Any) -> None:
    from pyngx.conf.model import AccessLog

    core.RT.globals = usercode.new_globals()
    log_path = tmp_path / "access.log"
    conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", 1),), locations=LOCATIONS),),
                    access_log=AccessLog(str(log_path)))
    server = HttpServer(conf, asyncio.new_event_loop())
    server.site.date_server = b"Server: t\r\nDate: -\r\n"
    try:
        data = CASES["pipelined"] + CASES["response-header"]
        answer(server, data, python_only=True)
        lines = []
        for python_only in (True, False):
            log_path.write_text("")
            out, state = answer(server, data, python_only=python_only)
            assert state[5] is not python_only  # the C path took no parser
            lines.append(re.sub(r"\[[^]]*\]", "[-]", log_path.read_text()))
        assert lines[0] == lines[1] and lines[0].count("\n") == 3
    finally:
        server.final(False)
        server.site.loop.close()


def test_say_and_print_buffer_what_openresty_writes(server: HttpServer) -> None:
    data = b"GET /out HTTP/1.1\r\n" + H + b"\r\n"
    answer(server, data, python_only=True)
    out, _ = answer(server, data, python_only=False)
    body = out.split(b"\r\n\r\n", 1)[1]
    assert body == "a\n\u00e9t\u00e9\n".encode() + b"\xff\n1xy\n\np" + b"q" + "\u20ac2".encode()


REQ_API = LocationConf("=", "/reqapi", None, access=chunk(
    'SEEN.append(("access", PY_HEADERS(), ngx.req.get_headers()))'), content=chunk(
    'for _ in range(2):\n'
    '    SEEN.append((ngx.req.get_headers(), PY_HEADERS(), ngx.req.get_uri_args(), PY_ARGS(),'
    ' ngx.req.get_headers(raw=True), ngx.req.get_uri_args(1), ngx.req.get_headers(max_headers=2)))\n'
    'mine = ngx.req.get_headers()\n'
    'mine["mutated"] = "yes"\n'
    'args = ngx.req.get_uri_args()\n'
    'args["mutated"] = "yes"\n'
    'SEEN.append(("fresh", ngx.req.get_headers(), ngx.req.get_uri_args()))\n'
    'ngx.req.set_header("X-New", "v")\n'
    'ngx.req.set_uri_args("z=1")\n'
    'SEEN.append(("changed", ngx.req.get_headers(), PY_HEADERS(), ngx.req.get_uri_args()))\n'
    'ngx.say("ok")'))


def _python_headers() -> Any:
    """What the Python function answers from the request alone (nothing kept by an earlier call)."""
    from pyngx.http.exchange import CURRENT

    ex = CURRENT.get()
    kept, ex._headers_cache = ex._headers_cache, None
    try:
        return importlib.import_module("pyngx.req").python_get_headers()
    finally:
        ex._headers_cache = kept


def _python_args() -> Any:
    """The request's query string's arguments, parsed now (nothing kept by an earlier call)."""
    from pyngx.http import variables
    from pyngx.http.exchange import CURRENT

    return variables.parse_args(CURRENT.get().args)


REQ_HEADS = [
    b"GET /reqapi?id=42&view=full HTTP/1.1\r\n" + H + b"X-Tenant: acme\r\nX-Token: secret\r\n\r\n",
    b"GET /reqapi?a=1&a=2&bare&e=%41%20b+c HTTP/1.1\r\n" + H + b"X-Dup: 1\r\nx-dup: 2\r\n\r\n",
    b"GET /reqapi HTTP/1.1\r\n" + H + b"X-Never-Seen-Before-1: v\r\n\r\n",
    b"GET /reqapi?q=" + b"x" * 300 + b" HTTP/1.1\r\n" + H + b"X-Latin: caf\xe9\r\n\r\n",
    b"GET /reqapi?q=%ff HTTP/1.1\r\n" + H + b"X-Utf: caf\xc3\xa9\r\nEmpty:\r\n\r\n",
    # names of one length, a new set each time: they meet the names kept from the heads before
    *(b"GET /reqapi HTTP/1.1\r\n" + H + b"".join(b"X-%03d: %d\r\n" % (i, i) for i in range(first, first + 40))
      + b"\r\n" for first in (0, 40, 80)),
    # 106 arguments in a query short enough to be kept: more than get_uri_args' default of 100
    b"GET /reqapi?" + "&".join([*string.ascii_letters, *string.digits, *(a + b for a in "xy" for b in string.ascii_lowercase)][:106]).encode()
    + b" HTTP/1.1\r\n" + H
    + b"".join(b"X-%d: v\r\n" % i for i in range(50)) + b"\r\n",
]


@pytest.mark.parametrize("python_only", [False, True], ids=["c-path", "python-path"])
def test_get_headers_and_get_uri_args_in_c_answer_as_the_python_functions(python_only: bool) -> None:
    req = importlib.import_module("pyngx.req")
    assert type(req.req.get_headers).__name__ == "builtin_function_or_method"  # (the C function in use)
    loop = asyncio.new_event_loop()
    core.RT.globals = usercode.new_globals()
    seen: list[Any] = []
    core.RT.globals.update(SEEN=seen, PY_HEADERS=_python_headers, PY_ARGS=_python_args)
    conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", 1),), locations=(REQ_API,)),))
    srv = HttpServer(conf, loop)
    try:
        for head in REQ_HEADS * 2:  # (the second time: names and queries seen before)
            seen.clear()
            conn = HttpProtocol(srv.site, srv.vhosts[("127.0.0.1", 1)])
            transport = Transport()
            conn.connection_made(transport)
            (conn.parse if python_only else conn.data_received)(head)
            assert b"\r\n\r\nok\n" in transport.out, transport.out[:300]
            access, first, second, fresh, changed = seen
            assert access[1] == access[2] and access[1]
            for c_headers, py_headers, c_args, py_args, raw, one_arg, two_headers in (first, second):
                assert c_headers == py_headers and c_args == dict(list(py_args.items())[:100])
                assert "host" not in raw and raw["Host"] == "x"  # (raw: names as sent, through the Python function)
                assert len(one_arg) <= 1 and two_headers == py_headers  # (max_headers: raw only, as before)
                assert len(c_args) == min(len(py_args), 100)
            assert first[:4] == second[:4]
            assert fresh[1] == first[0] and fresh[2] == first[2]  # a changed copy changes nothing kept
            assert changed[1] == changed[2] and changed[1]["x-new"] == "v" and changed[3] == {"z": "1"}
    finally:
        srv.final(False)
        loop.close()


def test_get_headers_and_get_uri_args_outside_a_request_raise_as_in_python() -> None:
    from pyngx.errors import WrongContextError

    req = importlib.import_module("pyngx.req")

    for c_call, py_call in ((req.req.get_headers, req.python_get_headers),
                            (req.req.get_uri_args, req.python_get_uri_args)):
        with pytest.raises(WrongContextError) as c_error:
            c_call()
        with pytest.raises(WrongContextError) as py_error:
            py_call()
        assert str(c_error.value) == str(py_error.value)
        assert "API disabled in the context of" in str(c_error.value)
