"""Several servers and listen lines, virtual hosts by Host, connections spread across workers."""
from __future__ import annotations

import socket
from typing import Any

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    server {
        listen 127.0.0.1:@PORT@;
        listen 127.0.0.1:@PORT2@;
        server_name default.test;
        location / { content_by_python_block { ngx.say("default ", ngx.var.server_port, " ", ngx.worker.pid()) } }
    }
    server {
        listen 127.0.0.1:@PORT@;
        server_name api.test *.wild.test;
        location / { return 200 "api $host\n"; }
    }
}
"""


def ask(sock: socket.socket, host: str = "x") -> bytes:
    sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while not data.endswith(b"\n") or b"\r\n\r\n" not in data:
        data += sock.recv(1000)
    return data.split(b"\r\n\r\n", 1)[1]


def test_virtual_hosts_and_two_ports(daemon: Any) -> None:
    d = daemon(CONF)
    assert d.get("/")[1].startswith(f"default {d.port} ".encode())
    assert d.get("/", port=d.port2)[1].startswith(f"default {d.port2} ".encode())
    assert d.get("/", headers={"Host": "api.test"}) == (200, b"api api.test\n")
    assert d.get("/", headers={"Host": "API.test:80"}) == (200, b"api api.test\n")
    assert d.get("/", headers={"Host": "a.b.wild.test"}) == (200, b"api a.b.wild.test\n")
    assert d.get("/", headers={"Host": "other.test"})[1].startswith(b"default ")
    # the second port has only the first server, whatever the Host says
    assert d.get("/", headers={"Host": "api.test"}, port=d.port2)[1].startswith(b"default ")


def burst(port: int, n: int) -> list[socket.socket]:
    """N connections opened at once, as a load generator opens them."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    for s in socks:
        s.settimeout(5)
    return socks


def test_connections_are_spread_across_workers(daemon: Any) -> None:
    d = daemon(CONF)
    socks: list[socket.socket] = []
    pids: set[bytes] = set()
    try:
        # each worker takes one connection per wake-up, so bursts end up on both; a few bursts
        # make it certain even when one worker keeps winning the race on a busy machine
        for _ in range(8):
            new = burst(d.port, 25)
            socks += new
            pids |= {ask(s).split()[-1] for s in new}
            if len(pids) == 2:
                break
    finally:
        for s in socks:
            s.close()
    assert len(pids) == 2, pids
