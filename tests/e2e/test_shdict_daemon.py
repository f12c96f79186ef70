"""ngx.shared across the real process tree: workers, the master's init, a worker killed holding the lock."""
from __future__ import annotations

import json
import signal
import threading
from typing import Any

from support import Daemon, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log info;
events { worker_connections 256; }
http {
    python_shared_dict d 1m;
    init_by_python_block {
        ngx.shared.d.set("from_master", "hello")
    }
    init_worker_by_python_block {
        ngx.shared.d.incr("workers_started", 1, 0)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /incr {
            content_by_python_block {
                ngx.say(ngx.shared.d.incr("hits", 1, 0), " ", ngx.worker.pid())
            }
        }
        location = /get {
            content_by_python_block {
                d = ngx.shared["d"]
                ngx.say(d.get("from_master"), " ", d.get("workers_started"), " ", d.get("hits"))
            }
        }
        location = /ttl {
            content_by_python_block {
                d = ngx.shared.d
                d.set("short", 1, 0.2)
                ngx.say(d.get("short"), " ", d.ttl("short") > 0)
            }
        }
        location = /short {
            content_by_python_block {
                ngx.say(ngx.shared.d.get("short"))
            }
        }
        location = /die-holding-the-lock {
            content_by_python_block {
                import os, signal
                zone = ngx.shared.d._zone
                zone._r.lock()  # as if killed in the middle of a write
                zone._store_locked(0, False, b"half", 2, b"x" * 5000, 0.0, 0)
                os.kill(os.getpid(), signal.SIGKILL)
            }
        }
        location = /check {
            content_by_python_block {
                ngx.shared.d._zone.check()
                ngx.say(ngx.shared.d.get("half"))
            }
        }
        location = /status { pyngx_status; }
    }
}
"""


def _text(d: Daemon, path: str) -> str:
    status, body = d.get(path)
    assert status == 200, body
    return body.decode().strip()


def test_workers_share_one_zone(daemon: Any) -> None:
    d = daemon(CONF)
    wait_until(lambda: _text(d, "/get").split()[:2] == ["hello", "2"], 10, what="both workers' init")
    pids: set[str] = set()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(100):
                pids.add(_text(d, "/incr").split()[1])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _text(d, "/get") == "hello 2 400"  # every increment counted, whichever worker served it
    assert len(pids) >= 1


def test_expiry_seen_by_every_worker(daemon: Any) -> None:
    d = daemon(CONF)
    assert _text(d, "/ttl") == "1 True"
    wait_until(lambda: _text(d, "/short") == "None", 5, what="the item to expire")


def test_a_worker_killed_holding_the_lock_is_recovered_by_the_master(daemon: Any) -> None:
    d = daemon(CONF)
    d.expect_errors = True  # the master logs the worker's death as an alert, as nginx does
    wait_until(lambda: len(d.workers()) == 2, 10, what="two workers")
    try:
        d.get("/die-holding-the-lock", timeout=5)
    except OSError:
        pass  # the worker died mid-request
    d.wait_log("exited on signal 9")
    # the master force-unlocked the zone and undid the half-done write; no worker is wedged
    for _ in range(6):
        assert _text(d, "/check") == "None"
    assert _text(d, "/get").startswith("hello")
    bad = [ln for ln in d.error_log().splitlines() if "[error]" in ln or "[crit]" in ln or "[emerg]" in ln]
    assert not bad, bad


def test_status_lists_the_zone(daemon: Any) -> None:
    d = daemon(CONF)
    _text(d, "/incr")
    status, body = d.get("/status")
    assert status == 200
    zone = json.loads(body)["shared_dicts"]["d"]
    assert zone["capacity"] == 1 << 20 and zone["items"] >= 2 and zone["free"] > 0


def test_reload_keeps_zone_and_workers_see_it(daemon: Any) -> None:
    d = daemon(CONF)
    _text(d, "/incr")
    _text(d, "/incr")
    d.signal(signal.SIGHUP)
    wait_until(lambda: _text(d, "/get") == "hello 4 2", 15, what="new workers on the kept zone")
