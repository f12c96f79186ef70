"""Hostile HTTP clients: half-closed requests, bytes that are not UTF-8, raw high bytes in the target."""
from __future__ import annotations

import socket
import time
from typing import Any

from support import wait_until, raw_exchange as exchange

CONF = r"""
worker_processes 1;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    default_type text/plain;
    client_header_timeout 30s;
    client_body_timeout 30s;
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            content_by_python_block {
                ngx.header["X-Uri"] = ngx.var.uri
                ngx.say(ngx.var.uri)
                ngx.say(ngx.var.args or "-")
                ngx.say(ngx.var.request_uri)
                for key, value in sorted(ngx.req.get_uri_args().items()):
                    ngx.say(key, "=", value)
            }
        }
        location = /echo {
            content_by_python_block {
                await ngx.req.read_body()
                ngx.print(ngx.req.get_body_data() or b"none")
            }
        }
    }
}
"""


def body_of(answer: bytes) -> bytes:
    return answer.partition(b"\r\n\r\n")[2]


def test_half_closed_incomplete_requests_are_closed_at_once(daemon: Any) -> None:
    d = daemon(CONF)
    partial = [
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # a head that stops
        b"GET / HT",  # a request line that stops
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # a body that stops
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # a chunk that stops
    ]
    for data in partial:
        t0 = time.monotonic()
        answer = exchange(d.port, data)
        took = time.monotonic() - t0
        assert answer == b"", (data, answer)
        assert took < 2, f"{data!r}: the connection was held {took:.1f}s (client_header_timeout is 30s)"
    # many at once do not use up worker_connections (64)
    socks = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        for s in socks:
            assert s.recv(100) == b""
    finally:
        for s in socks:
            s.close()
    assert d.get("/a")[0] == 200
    # a complete request followed by the half-close is still answered
    answer = exchange(d.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert answer.startswith(b"HTTP/1.1 200 ") and body_of(answer) == b"abc"
    log = d.wait_log("client prematurely closed connection")
    assert "[info]" in log.split("client prematurely closed connection")[0].rsplit("\n", 1)[-1]


def test_non_utf8_uri_and_args_round_trip_to_their_bytes(daemon: Any) -> None:
    d = daemon(CONF)
    answer = exchange(d.port, b"GET /a%ff?k%fe=v%fd&x=%e9t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"\r\nX-Uri: /a\xff\r\n" in answer
    assert body_of(answer) == b"/a\xff\nk%fe=v%fd&x=%e9t\n/a%ff?k%fe=v%fd&x=%e9t\nk\xfe=v\xfd\nx=\xe9t\n"
    assert "Traceback" not in d.error_log()


def test_raw_high_bytes_in_the_target_are_served_as_nginx_does(daemon: Any) -> None:
    d = daemon(CONF)
    for target, uri, args in [
        ("/é".encode(), "/é".encode(), b"-"),
        (b"/\xe9", b"/\xe9", b"-"),
        (b"/?x=\xff", b"/", b"x=\xff"),
        (b"/%c3%a9/\xc3\xa9?q=\xc3\xa9%~1", "/é/é".encode(), "q=é%~1".encode()),
    ]:
        answer = exchange(d.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), (target, answer[:100])
        lines = body_of(answer).split(b"\n")
        assert lines[:3] == [uri, args, target], (target, lines)
    # the same on a keep-alive connection, after an ASCII request
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: s.recv(4096), 5)
        s.sendall(b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = wait_until(lambda: s.recv(4096), 5)
        assert got.startswith(b"HTTP/1.1 200 ") and body_of(got).startswith(b"/\xe9\n")
    # control bytes are still refused
    assert exchange(d.port, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400 ")


MAX_REQUESTS = """
worker_processes 1;
worker_max_requests 20 jitter=5;
error_log logs/error.log info;
http {
    server {
        listen 127.0.0.1:@PORT@;
        location = /pid { content_by_python_block { ngx.say(ngx.worker.pid()) } }
        location = /status { pyngx_status; }
    }
}
"""


def test_worker_max_requests_replaces_the_worker_gracefully(daemon: Any) -> None:
    d = daemon(MAX_REQUESTS)
    first = d.get("/pid")[1]
    seen = {first}
    deadline = time.monotonic() + 20
    while len(seen) < 3 and time.monotonic() < deadline:
        status, body = d.get("/pid")  # every request answered while workers come and go
        assert status == 200
        seen.add(body)
    assert len(seen) >= 3, "the worker was not replaced after worker_max_requests"
    log = d.error_log()
    assert "reached worker_max_requests" in log
    assert "respawning in" not in log  # a worker that leaves on purpose is replaced at once


def test_status_shows_each_process_rss(daemon: Any) -> None:
    import json

    d = daemon(MAX_REQUESTS.replace("worker_max_requests 20 jitter=5;", ""))
    data = json.loads(d.get("/status")[1])
    assert data["rss"] > 1 << 20 and data["master_rss"] > 1 << 20
    assert data["processes"] and all(p["rss"] > 1 << 20 for p in data["processes"])
    text = d.get("/status?format=prometheus")[1].decode()
    assert f'pyngx_process_resident_memory_bytes{{type="worker",worker_id="{data["worker_id"]}"}} ' in text
