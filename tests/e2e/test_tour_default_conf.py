"""The default config, conf/pyngx.conf, boots as it is and every stop of its tour answers."""
from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable

from support import REPO, Daemon, wait_until


def _tour(daemon: Callable[..., Daemon]) -> Daemon:
    text = (REPO / "conf" / "pyngx.conf").read_text()
    assert "listen 8080;" in text
    # The only change: a free loopback port instead of 8080.
    return daemon(text.replace("listen 8080;", "listen 127.0.0.1:@PORT@;"))


def test_default_config_passes_t(daemon: Callable[..., Daemon]) -> None:
    text = (REPO / "conf" / "pyngx.conf").read_text()
    d = daemon(text, start=False)
    r = d.pyngx("-t")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


def test_default_config_tour_answers(daemon: Callable[..., Daemon]) -> None:
    d = _tour(daemon)

    def all_ready() -> bool:
        procs = json.loads(d.get("/status")[1])["processes"]
        return len(procs) == 3 and all(p["ready"] for p in procs)
    wait_until(all_ready, what="two workers and the agent to be ready")

    status, body = d.get("/hello")
    assert (status, body) == (200, b"hello\n")

    status, body = d.get("/hello/you")
    assert status == 200 and body.startswith(b"hello, you (worker ")

    status, body = d.get("/whoami")
    assert status == 200 and body.startswith(b"worker ") and f"master {d.master_pid}".encode() in body

    hits = [json.loads(d.get("/counter")[1])["hits"] for _ in range(5)]
    assert hits == sorted(hits) and hits[-1] - hits[0] == 4

    status, body = d.get("/ipc")
    assert status == 200
    lines = body.decode().splitlines()
    assert len(lines) == 3, lines  # two workers and the agent replied
    assert sum("privileged agent" in line for line in lines) == 1

    def events_seen() -> list[str]:
        return re.findall(r"handled (\d+) events", d.get("/events")[1].decode())
    assert len(wait_until(lambda: len(events_seen()) == 3 and events_seen(), what="3 processes handling events")) == 3

    status, body = d.get("/pipe")
    assert status == 200 and b"uname says Linux" in body and b"(exit 0)" in body

    assert d.get("/shell") == (200, b"a\nb\nc\n(exit 0)\n")

    status, _, body = d.request("POST", "/echo?a=1&b", body=b"xyz")
    assert status == 200 and body == b"POST 3 bytes, args {'a': '1', 'b': True}\n"
    status, _, _ = d.request("POST", "/echo", body=b"x" * 70000)
    assert status == 413

    status, headers, _ = d.request("GET", "/old")
    assert status == 301 and headers["location"].endswith("/hello")

    wait_until(lambda: b"loadavg (from the agent): None" not in d.get("/timer")[1], what="the agent's job")
    wait_until(lambda: re.search(rb"ticks: [1-9]", d.get("/timer")[1]), what="the unique timer")

    status, body = d.get("/status")
    assert status == 200
    data = json.loads(body)
    kinds = sorted(p["type"] for p in data["processes"])
    assert kinds == ["privileged agent", "worker", "worker"]
    assert data["http_all"]["requests"] >= data["http"]["requests"]["total"]
    # every worker's requests are in http_all once published (one 0.5 s tick)
    wait_until(lambda: json.loads(d.get("/status")[1])["http_all"]["requests"] >= 10, 5,
               what="the tour's requests in http_all")
    status, body = d.get("/status?format=prometheus")
    assert status == 200 and b"pyngx_" in body

    d.signal(signal.SIGQUIT)
    assert d.proc is not None
    d.proc.wait(timeout=30)
    assert d.proc.returncode == 0
    assert (d.prefix / "logs" / "sessions.zone").exists()  # persist= saved on graceful stop
