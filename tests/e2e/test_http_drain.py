"""Graceful drain: reloads and QUIT under keep-alive load answer every request, none fails."""
from __future__ import annotations

import http.client
import signal
import threading
import time
from typing import Any

from support import wait_until

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    server {
        listen 127.0.0.1:@PORT@;
        location = /fast { content_by_python_block { ngx.say("ok") } }
        location = /slow {
            content_by_python_block {
                ngx.log(ngx.INFO, "slow start")
                await ngx.sleep(0.3)
                ngx.say("slow ok")
            }
        }
    }
}
"""


class Client(threading.Thread):
    """Keep-alive requests in a loop; a fresh connection only when the server said Connection: close."""

    def __init__(self, port: int, path: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.stop = port, path, stop
        self.ok = 0
        self.closes = 0
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stop.is_set():
                try:
                    conn.request("GET", self.path)
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self.errors.append(repr(exc))
                    conn.close()
                    continue
                if resp.status != 200 or not body.endswith(b"ok\n"):
                    self.errors.append(f"{resp.status} {body!r}")
                self.ok += 1
                if resp.getheader("Connection", "").lower() == "close":
                    self.closes += 1
                    conn.close()
        finally:
            conn.close()


def run_clients(port: int, paths: list[str]) -> tuple[list[Client], threading.Event]:
    stop = threading.Event()
    clients = [Client(port, p, stop) for p in paths]
    for c in clients:
        c.start()
    return clients, stop


def test_reloads_under_keepalive_load_lose_nothing(daemon: Any) -> None:
    d = daemon(CONF)
    clients, stop = run_clients(d.port, ["/fast"] * 6 + ["/slow"] * 2)
    try:
        wait_until(lambda: all(c.ok for c in clients), 10, what="every client served")
        old = set(d.workers())
        for _ in range(3):
            before = sum(c.ok for c in clients)
            d.signal(signal.SIGHUP)
            wait_until(lambda: sum(c.ok for c in clients) > before + 20, 10, what="requests after the HUP")
            time.sleep(0.4)  # let the old generation drain while the load goes on
        wait_until(lambda: not (old & set(d.workers())), 15, what="the first workers to exit")
    finally:
        stop.set()
        for c in clients:
            c.join(15)
    errors = [e for c in clients for e in c.errors]
    assert not errors, errors[:5]
    assert sum(c.closes for c in clients) >= 1  # old workers said Connection: close


def test_quit_finishes_in_flight_requests(daemon: Any) -> None:
    d = daemon(CONF)
    results: list[tuple[int, bytes]] = []

    def slow() -> None:
        results.append(d.get("/slow"))

    threads = [threading.Thread(target=slow) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: d.error_log().count("slow start") == 4, 10, what="the slow requests to start")
    d.signal(signal.SIGQUIT)
    for t in threads:
        t.join(10)
    assert results == [(200, b"slow ok\n")] * 4
    wait_until(lambda: d.proc.poll() is not None, 15, what="the master to exit")
