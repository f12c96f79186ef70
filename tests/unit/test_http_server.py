"""The HTTP server in-process: a real socket, a real uvloop loop in a thread, raw bytes on the wire."""
from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from pyngx import log
from pyngx.conf.model import AccessLog, HttpConf, Listen, LocationConf, Return, ServerConf, SetVar
from pyngx.conf.pycode import compile_chunk
from pyngx.http import server as http_server
from pyngx.runtime import core, state, usercode
from support import wait_until


def loc(modifier: str, pattern: str, code: str | None = None, *, line: int = 10, **kw: Any) -> LocationConf:
    rx = re.compile(pattern, re.I if modifier == "~*" else 0) if modifier in ("~", "~*") else None
    if code is not None:
        kw["content"] = compile_chunk(code, "test.conf", line, "handler")
    return LocationConf(modifier, pattern, rx, **kw)  # type: ignore[arg-type]


class Served:
    """server.start() on a loopback socket, its loop running in a thread."""

    def __init__(self, locations: tuple[LocationConf, ...], loop_kind: str = "uvloop", **http_kw: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        conf = HttpConf(servers=(ServerConf(listens=(Listen("127.0.0.1", self.port),), locations=locations),),
                        **http_kw)
        self.loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        self.rt = core.Runtime(None, state.WORKER, self.loop)  # its exit hooks are ours
        self.rt.globals = usercode.new_globals()
        self.previous = core.install(self.rt)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(self._start, conf)
        wait_until(lambda: self.server.listeners, 5, what="listening")

    async def _start(self, conf: HttpConf) -> http_server.HttpServer:
        return http_server.start(self.rt, conf, {("127.0.0.1", self.port): self.sock})

    def call(self, fn: Any, *args: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(*args), self.loop).result(10)

    def close(self) -> None:
        async def final() -> None:
            self.server.final(False)
            await asyncio.sleep(0)
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
        self.call(final)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.sock.close()
        core.install(self.previous)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def raw(self, data: bytes, *, shut: bool = True) -> bytes:
        """Send DATA, half-close, read until the server closes."""
        with self.connect() as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            return read_all(s)

    def get(self, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split raw HTTP/1.1 responses (Content-Length or chunked bodies)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, data = data[:n], data[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body += data[:size]
                data = data[size + 2:]
                if size == 0:
                    break
        else:
            body, data = data, b""
        out.append((status, hdrs, body))
    return out


LOCATIONS = (
    loc("", "/", 'ngx.say("hello")'),
    loc("=", "/async", 'await ngx.sleep(0.05)\nngx.say("slow ", ngx.var.uri)'),
    loc("=", "/echo", 'ngx.req.read_body()\nngx.print(ngx.req.get_body_data() or b"none")'),
    loc("=", "/vars", "\n".join((
        "a = ngx.req.get_uri_args()",
        "h = ngx.req.get_headers()",
        "ngx.say(ngx.var.request_method, ' ', ngx.var.uri, ' ', ngx.var.args, ' ', ngx.var.arg_x)",
        "ngx.say(ngx.var.http_x_test, ' ', ngx.var.remote_addr, ' ', ngx.var.host, ' ', ngx.req.get_method())",
        "ngx.say(sorted(a.items(), key=str))",
        "ngx.say(h['x-test'], ' ', h.get('x-multi'))",
    ))),
    loc("=", "/headers", "\n".join((
        "ngx.status = 201",
        "ngx.header['X-One'] = 'a'",
        "ngx.header.x_two = ['b', 'c']",
        "ngx.header['X-Evil'] = 'x\\r\\nSet-Cookie: y'",
        "ngx.header.content_type = 'application/json'",
        "ngx.ctx['k'] = 1",
        "ngx.say(ngx.status, ngx.header['x-one'], ngx.ctx['k'])",
    ))),
    loc("=", "/exit404", 'ngx.exit(ngx.HTTP_NOT_FOUND)\nngx.say("unreached")'),
    loc("=", "/exitok", 'ngx.say("partial")\nngx.exit(ngx.OK)\nngx.say("unreached")'),
    loc("=", "/redirect", 'ngx.redirect("/there", 301)'),
    loc("=", "/stream", 'ngx.say("one")\nawait ngx.flush()\nawait ngx.sleep(0.01)\nngx.say("two")'),
    loc("=", "/boom", 'x = 1\nraise RuntimeError("kaboom")', line=40),
    loc("=", "/catch", 'try:\n    ngx.exit(403)\nexcept Exception:\n    ngx.say("caught")'),
    loc("~", r"^/cap/(\w+)/(\d+)$", 'ngx.say(ngx.var[1], "-", ngx.var[2], "-", ngx.var.both)',
        sets=(SetVar("$both", "$2:$1"),)),
    loc("=", "/ret", None, ret=Return(200, "uri=$uri args=$args\n")),
    loc("=", "/ret301", None, ret=Return(301, "/moved?from=$uri")),
    loc("=", "/ret403", None, ret=Return(403)),
    loc("=", "/status", None, status=True),
    loc("=", "/big", 'ngx.print(b"x" * 30_000_000)'),
    loc("=", "/mid", 'ngx.print(b"y" * 1_200_000)'),
    loc("=", "/small", 'ngx.say(len(ngx.req.get_body_data() or b""))', client_max_body_size=10),
)


@pytest.fixture
def served_uvloop(tmp_path: Path) -> Iterator[Served]:
    """The slow (timeout) tests run on uvloop only; the rest on both loops."""
    s = Served(LOCATIONS, "uvloop", access_log=AccessLog(str(tmp_path / "access.log")),
               client_header_timeout=1.0, keepalive_timeout=1.0, client_body_timeout=1.0, send_timeout=1.0)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    s = Served(LOCATIONS, request.param, access_log=AccessLog(str(tmp_path / "access.log")),
               client_header_timeout=1.0, keepalive_timeout=1.0, client_body_timeout=1.0, send_timeout=1.0)
    try:
        yield s
    finally:
        s.close()


def test_hello_and_keepalive(served: Served) -> None:
    data = served.raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope/.. HTTP/1.1\r\nHost: x\r\n\r\n")
    (s1, h1, b1), (s2, _, b2) = responses(data)
    assert (s1, b1, h1["content-type"], h1["server"]) == (200, b"hello\n", "text/plain", "pyngx")
    assert (s2, b2) == (200, b"hello\n")


def test_pipelined_answers_keep_request_order(served: Served) -> None:
    reqs = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in ("/async", "/", "/async", "/ret"))
    got = responses(served.raw(reqs))
    assert [b for _, _, b in got] == [b"slow /async\n", b"hello\n", b"slow /async\n", b"uri=/ret args=\n"]


def test_chunked_request_body_and_content_length(served: Served) -> None:
    chunked = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    sized = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwxyz"
    none = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    got = responses(served.raw(chunked + sized + none))
    assert [b for _, _, b in got] == [b"abcde", b"wxyz", b"none"]


def test_head_has_length_and_no_body(served: Served) -> None:
    (status, hdrs, body), = responses(served.raw(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert (status, hdrs["content-length"], body) == (200, "6", b"")


def test_expect_100_continue(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        s.shutdown(socket.SHUT_WR)
        (status, _, body), = responses(read_all(s))
    assert (status, body) == (200, b"hello")


def test_flush_streams_chunked(served: Served) -> None:
    status, hdrs, body = served.get("/stream")
    assert (status, hdrs["transfer-encoding"], body) == (200, "chunked", b"one\ntwo\n")
    # HTTP/1.0 has no chunked encoding: the body ends with the connection
    data = served.raw(b"GET /stream HTTP/1.0\r\n\r\n")
    assert data.endswith(b"\r\n\r\none\ntwo\n") and b"chunked" not in data


def test_request_api_reads_the_request(served: Served) -> None:
    status, _, body = served.get("/vars?x=1&y=%20sp&x=2&flag", headers={"X-Test": "t", "Host": "example.org:80"})
    lines = body.decode().splitlines()
    assert status == 200
    assert lines[0] == "GET /vars x=1&y=%20sp&x=2&flag 1"
    assert lines[1] == "t 127.0.0.1 example.org GET"
    assert lines[2] == "[('flag', True), ('x', ['1', '2']), ('y', ' sp')]"
    data = served.raw(b"GET /vars HTTP/1.1\r\nHost: x\r\nX-Test: a\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n")
    assert responses(data)[0][2].decode().splitlines()[3] == "a ['1', '2']"


def test_response_headers_status_ctx(served: Served) -> None:
    status, hdrs, body = served.get("/headers")
    assert (status, body) == (201, b"201a1\n")
    assert hdrs["x-one"] == "a" and hdrs["content-type"] == "application/json"
    assert hdrs["x-evil"] == "x%0D%0ASet-Cookie: y" and "set-cookie" not in hdrs
    raw = served.raw(b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"\r\nx-two: b\r\nx-two: c\r\n" in raw


def test_exit_redirect_and_return(served: Served) -> None:
    status, hdrs, body = served.get("/exit404")
    assert status == 404 and b"<center><h1>404 Not Found</h1></center>" in body and b"unreached" not in body
    assert served.get("/exitok")[::2] == (200, b"partial\n")
    status, hdrs, _ = served.get("/redirect")
    assert (status, hdrs["location"]) == (301, "/there")
    status, hdrs, _ = served.get("/ret301")
    assert (status, hdrs["location"]) == (301, "/moved?from=/ret301")
    assert served.get("/ret403")[0] == 403
    assert served.get("/ret?a=b")[::2] == (200, b"uri=/ret args=a=b\n")
    # ngx.exit is not an Exception: user code cannot swallow it
    assert served.get("/catch")[0] == 403


def test_set_with_captures(served: Served) -> None:
    assert served.get("/cap/ab/12")[::2] == (200, b"ab-12-12:ab\n")


def test_exception_is_500_with_the_config_line(served: Served, capfd: pytest.CaptureFixture[str]) -> None:
    status, _, body = served.get("/boom")
    assert status == 500 and b"500 Internal Server Error" in body
    err = capfd.readouterr().err
    assert 'File "test.conf", line 41' in err and "RuntimeError: kaboom" in err and "[error]" in err
    assert served.get("/")[0] == 200


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"FOO / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: ../etc\r\n\r\n", 400),
    (b"GET /a b HTTP/1.1\r\n\r\n", 400),
    (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5000)) + b"\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11, 413),
    (b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
     413),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
])
def test_hostile_input_gets_4xx_and_the_server_lives(served: Served, request_bytes: bytes, status: int) -> None:
    data = served.raw(request_bytes)
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
    assert b"Connection: close" in data
    assert served.get("/")[0] == 200


def test_413_before_the_body_with_expect(served: Served) -> None:
    with served.connect() as s:
        s.sendall(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413 ")


def test_header_timeout_and_keepalive_timeout_close(served_uvloop: Served) -> None:
    with served_uvloop.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHo")  # never finishes the head
        t0 = time.monotonic()
        assert read_all(s) == b""
        assert time.monotonic() - t0 < 4
    with served_uvloop.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_all(s)  # answered, then closed when idle past keepalive_timeout
        assert responses(data)[0][2] == b"hello\n"


def test_body_timeout_and_send_timeout_close(served_uvloop: Served) -> None:
    with served_uvloop.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes never come
        t0 = time.monotonic()
        assert read_all(s) == b""
        assert time.monotonic() - t0 < 4
    server = served_uvloop.server
    before = server.n_accepted
    with served_uvloop.connect() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read the answer
        wait_until(lambda: server.n_accepted > before and not server.conns, 10,
                   what="send_timeout to close the connection")
        assert s.recv(100).startswith(b"HTTP/1.1 200 OK")  # the answer had begun


def test_a_slow_steady_reader_is_not_cut_by_keepalive(served_uvloop: Served) -> None:
    # keepalive_timeout and send_timeout are 1 s; reading the answer takes longer, but it progresses
    with served_uvloop.connect() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /mid HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive: closed when idle after it
        got = b""
        t0 = time.monotonic()
        while True:
            chunk = s.recv(65536)  # at most 64 KiB per 100 ms: the 1.2 MB take over 1.8 s
            if not chunk:
                break
            got += chunk
            time.sleep(0.1)
        assert got.endswith(b"y" * 1000) and len(got.partition(b"\r\n\r\n")[2]) == 1_200_000
        assert time.monotonic() - t0 > 1.0


def test_drain_finishes_in_flight_and_closes_keepalive(served_uvloop: Served) -> None:
    busy = served_uvloop.connect()
    idle = served_uvloop.connect()
    keep = served_uvloop.connect()
    try:
        keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert responses(keep.recv(1000))[0][0] == 200
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(1000)
        busy.sendall(b"GET /async HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: any(c.busy for c in list(served_uvloop.server.conns)), 5, what="the slow request to start")
        served_uvloop.loop.call_soon_threadsafe(served_uvloop.server.stop_accepting)
        drained = asyncio.run_coroutine_threadsafe(served_uvloop.server.drain(), served_uvloop.loop)
        wait_until(lambda: served_uvloop.server.draining, 5, what="graceful exit to begin")
        # in flight: answered in full, with Connection: close
        (status, hdrs, body), = responses(read_all(busy))
        assert (status, body, hdrs["connection"]) == (200, b"slow /async\n", "close")
        # keep-alive: the next request is answered, with Connection: close
        keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        (status, hdrs, _), = responses(read_all(keep))
        assert (status, hdrs["connection"]) == (200, "close")
        # idle: closed after the grace
        assert read_all(idle) == b""
        drained.result(5)
        assert not served_uvloop.server.listeners and not served_uvloop.server.conns
    finally:
        for s in (busy, idle, keep):
            s.close()


def test_access_log_combined(served: Served, tmp_path: Path) -> None:
    served.get("/ret?q=1", headers={"User-Agent": 'ag"ent', "Referer": "http://r/"})
    path = tmp_path / "access.log"
    line = wait_until(lambda: path.exists() and path.read_text(), 5, what="the access log")
    assert re.match(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
                    r'"GET /ret\?q=1 HTTP/1\.1" 200 18 "http://r/" "ag\\x22ent"\n$', line), line


def test_reopen_logs_reopens_the_access_log(served: Served, tmp_path: Path) -> None:
    served.get("/")
    path = tmp_path / "access.log"
    wait_until(lambda: path.exists() and path.read_text(), 5, what="the access log")
    path.rename(tmp_path / "access.log.1")
    served.loop.call_soon_threadsafe(http_server.reopen_logs)
    wait_until(lambda: path.exists(), 5, what="a new access log")
    served.get("/ret")
    wait_until(lambda: "/ret" in path.read_text(), 5, what="the line in the new file")


def test_status_json_and_prometheus(served: Served) -> None:
    served.get("/")
    status, hdrs, body = served.get("/status")
    data = json.loads(body)
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert data["http"]["requests"]["total"] >= 1 and data["http"]["connections"]["active"] >= 1
    status, hdrs, body = served.get("/status?format=prometheus")
    assert hdrs["content-type"].startswith("text/plain")
    assert re.search(rb"^pyngx_http_requests_total\{[^}]*\} \d+$", body, re.M)


def test_request_api_outside_a_request_raises() -> None:
    import pyngx as ngx

    with pytest.raises(ngx.WrongContextError):
        ngx.say("x")
    with pytest.raises(ngx.WrongContextError):
        ngx.var.uri  # noqa: B018
    with pytest.raises(ngx.WrongContextError):
        ngx.status  # noqa: B018


def test_unknown_location_is_404() -> None:
    s = Served((loc("=", "/only", 'ngx.say("x")'),))
    try:
        assert s.get("/other")[0] == 404
    finally:
        s.close()


def test_log_module_untouched() -> None:
    assert callable(log.exception)
