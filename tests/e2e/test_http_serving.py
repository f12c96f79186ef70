"""HTTP end to end: the real daemon, real sockets, the config's locations and the request API."""
from __future__ import annotations

import json
import re
import signal
import socket
import time
from typing import Any

from support import wait_until, raw_exchange as raw

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    access_log logs/access.log;
    default_type text/plain;
    client_max_body_size 64;
    keepalive_timeout 2s;
    client_header_timeout 1s;
    server {
        listen 127.0.0.1:@PORT@;
        # nginx's documented example (ngx_http_core_module, "location")
        location = / { return 200 "A\n"; }
        location / { return 200 "B\n"; }
        location /documents/ { return 200 "C\n"; }
        location ^~ /images/ { return 200 "D\n"; }
        location ~* \.(gif|jpg|jpeg)$ { return 200 "E\n"; }

        location = /hello { content_by_python_block { ngx.say("hello") } }
        location = /async {
            content_by_python_block {
                await ngx.sleep(0.05)
                ngx.say("slow")
            }
        }
        location = /echo {
            content_by_python_block {
                await ngx.req.read_body()
                ngx.print(ngx.req.get_body_data() or b"none")
            }
        }
        location = /api {
            default_type application/json;
            content_by_python_block {
                import json
                ngx.ctx["seen"] = True
                ngx.header["X-Method"] = ngx.req.get_method()
                ngx.status = ngx.HTTP_CREATED
                ngx.say(json.dumps({
                    "uri": ngx.var.uri, "args": ngx.var.args, "arg_a": ngx.var.arg_a,
                    "method": ngx.var.request_method, "remote": ngx.var.remote_addr, "host": ngx.var.host,
                    "ua": ngx.var.http_user_agent, "uri_args": ngx.req.get_uri_args(),
                    "headers": ngx.req.get_headers(), "ctx": ngx.ctx["seen"], "status": ngx.status,
                }))
            }
        }
        location = /stream {
            content_by_python_block {
                for i in range(3):
                    ngx.say("part ", i)
                    await ngx.flush()
            }
        }
        location = /exit { content_by_python_block { ngx.exit(ngx.HTTP_FORBIDDEN) } }
        location = /away { content_by_python_block { ngx.redirect("/elsewhere") } }
        location = /boom {
            content_by_python_block {
                x = 1
                raise ValueError("boom in a handler")
            }
        }
        location ~ ^/user/(\w+)/(\d+)$ {
            set $who $1;
            set $pair "$2-$1";
            return 200 "$who $pair $uri\n";
        }
        location = /moved { return 301 /new-place; }
        location = /status { pyngx_status; }
        location = /wrong { content_by_python_block { ngx.say(ngx.shared.nonexistent) } }
    }
}
"""


def split_responses(data: bytes, heads: tuple[int, ...] = ()) -> list[tuple[int, dict[str, str], bytes]]:
    """Raw responses apart; HEADS: indexes of answers to HEAD (no body whatever the length says)."""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if len(out) in heads:
            body = b""
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, data = data[:n], data[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2:]
                if not size:
                    break
        else:
            body, data = data, b""
        out.append((int(lines[0].split()[1]), hdrs, body))
    return out


def test_locations_in_nginx_order(daemon: Any) -> None:
    d = daemon(CONF)
    table = {
        "/": b"A\n", "/index.html": b"B\n", "/documents/document.html": b"C\n", "/images/1.gif": b"D\n",
        "/documents/1.jpg": b"E\n", "/documents/1.JPG": b"E\n", "/hello": b"hello\n",
    }
    for uri, body in table.items():
        assert d.get(uri) == (200, body), uri
    assert d.get("/user/ann/42") == (200, b"ann 42-ann /user/ann/42\n")
    status, hdrs, _ = d.request("GET", "/moved")
    assert (status, hdrs["location"]) == (301, "/new-place")
    assert hdrs["content-type"] == "text/html"
    status, hdrs, body = d.request("GET", "/")
    assert hdrs["content-type"] == "text/plain" and hdrs["server"] == "pyngx" and "date" in hdrs


def test_keepalive_pipelining_chunked_head_continue(daemon: Any) -> None:
    d = daemon(CONF)
    pipeline = (b"GET /async HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n1\r\ne\r\n0\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
                b"HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n"
                b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
    got = split_responses(raw(d.port, pipeline), heads=(4,))
    assert [r[2] for r in got] == [b"slow\n", b"hello\n", b"abcde", b"xyz", b"", b"part 0\npart 1\npart 2\n"]
    assert got[4][1]["content-length"] == "6"
    assert got[5][1]["transfer-encoding"] == "chunked"
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"ok")
        assert s.recv(1000).endswith(b"\r\n\r\nok")
        # the connection stays open for the next request (keep-alive)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert s.recv(1000).endswith(b"hello\n")


def test_request_api(daemon: Any) -> None:
    d = daemon(CONF)
    status, hdrs, body = d.request("GET", "/api?a=1&b=x%20y&a=2&flag", headers={"User-Agent": "t/1", "X-Rep": "v"})
    data = json.loads(body)
    assert status == 201 and hdrs["content-type"] == "application/json" and hdrs["x-method"] == "GET"
    assert data["uri"] == "/api" and data["args"] == "a=1&b=x%20y&a=2&flag" and data["arg_a"] == "1"
    assert data["uri_args"] == {"a": ["1", "2"], "b": "x y", "flag": True}
    assert data["method"] == "GET" and data["remote"] == "127.0.0.1" and data["host"] == "127.0.0.1"
    assert data["ua"] == "t/1" and data["headers"]["x-rep"] == "v" and data["ctx"] is True and data["status"] == 201
    status, _, body = d.request("GET", "/exit")
    assert status == 403 and b"403 Forbidden" in body
    status, hdrs, _ = d.request("GET", "/away")
    assert (status, hdrs["location"]) == (302, "/elsewhere")


def test_exception_is_500_and_logged_with_config_line(daemon: Any) -> None:
    d = daemon(CONF)
    d.expect_errors = True
    status, _, body = d.request("GET", "/boom")
    assert status == 500 and b"500 Internal Server Error" in body
    log = d.wait_log("boom in a handler")
    line = next(n for n, text in enumerate(CONF.splitlines(), 1) if 'raise ValueError("boom' in text)
    assert f'File "{d.conf_path}", line {line}' in log
    assert "[error]" in log and 'request: "GET /boom HTTP/1.1"' in log
    assert d.get("/hello") == (200, b"hello\n")
    assert d.get("/wrong")[0] == 500


HOSTILE = [
    (b"GET / HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n", 400),
    (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"BREW / HTTP/1.1\r\n\r\n", 400),
    (b"GET /hello HTTP/1.1\r\n\r\n", 400),
    (b"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n" + b"x" * 65, 413),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n", 413),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
]


def test_hostile_input_4xx_and_timeouts(daemon: Any) -> None:
    d = daemon(CONF)
    for data, status in HOSTILE:
        answer = raw(d.port, data)
        assert answer.startswith(b"HTTP/1.1 %d " % status), (data[:60], answer[:60])
        assert d.get("/hello") == (200, b"hello\n")
    # a head that never ends is cut at client_header_timeout
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHos")
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 5
    # an idle keep-alive connection is closed after keepalive_timeout
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n")
        assert s.recv(1000).endswith(b"hello\n")
        assert s.recv(100) == b""


def test_access_log_and_status_page(daemon: Any) -> None:
    d = daemon(CONF)
    d.request("GET", "/hello?x=1", headers={"User-Agent": "agent/1", "Referer": "http://ref/"})
    access = d.prefix / "logs" / "access.log"
    text = wait_until(lambda: access.exists() and "/hello?x=1" in access.read_text() and access.read_text(), 5,
                      what="the access log line")
    assert re.search(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /hello\?x=1 HTTP/1\.1" 200 6 "http://ref/" "agent/1"$',
                     text, re.M), text
    # USR1 reopens the access log (logrotate renamed it)
    access.rename(access.with_name("access.log.1"))
    d.signal(signal.SIGUSR1)
    wait_until(lambda: access.exists(), 5, what="the reopened access log")

    def rotated() -> bool:  # each worker reopens on its own; ask until one that did answers
        d.request("GET", "/hello?after=rotate")
        return "after=rotate" in access.read_text()

    wait_until(rotated, 5, interval=0.1, what="a line in the new file")
    status, hdrs, body = d.request("GET", "/status")
    data = json.loads(body)
    assert status == 200 and hdrs["content-type"] == "application/json"
    kinds = sorted(p["type"] for p in data["processes"])
    assert kinds.count("worker") == 2 and data["type"] == "worker"
    status, hdrs, body = d.request("GET", "/status?format=prometheus")
    assert status == 200 and b"pyngx_http_requests_total{" in body
