"""The status page's ``http_all``: the whole server's HTTP counters, across workers, kills and reloads."""
from __future__ import annotations

import json
import os
import signal
from typing import Any

from support import pid_alive, wait_until

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    server {
        listen 127.0.0.1:@PORT@;
        location = /pid { content_by_python_block { ngx.say(ngx.worker.pid()) } }
        location = /missing { return 404; }
        location = /status { pyngx_status; }
    }
}
"""


def status(d: Any) -> dict[str, Any]:
    code, body = d.get("/status")
    assert code == 200
    return json.loads(body)  # type: ignore[no-any-return]


def served_by_both(d: Any) -> dict[int, int]:
    """Requests on new connections until both workers have answered some; counts by pid."""
    served: dict[int, int] = {}

    def both() -> bool:
        code, body = d.get("/pid")
        assert code == 200
        pid = int(body)
        served[pid] = served.get(pid, 0) + 1
        return len(served) == 2 and sum(served.values()) >= 20

    wait_until(both, 15, interval=0, what="answers from both workers")
    return served


def test_totals_add_up_every_worker_and_keep_what_a_killed_one_served(daemon: Any) -> None:
    d = daemon(CONF)
    served = served_by_both(d)
    assert d.get("/missing")[0] == 404
    total = sum(served.values()) + 1

    def published() -> dict[str, Any] | None:
        data = status(d)
        rows = {p["pid"]: p.get("http", {}).get("requests", 0) for p in data["processes"]}
        # every worker's row holds what it served (status requests add to them)
        return data if all(rows.get(pid, 0) >= n for pid, n in served.items()) else None

    data = wait_until(published, 10, interval=0.05, what="both workers' counters published")
    totals = data["http_all"]
    assert totals["requests"] >= total and totals["4xx"] >= 1 and totals["accepted"] >= total
    # more than the answering worker served alone: the other's are in
    assert totals["requests"] > data["http"]["requests"]["total"]

    victim = max(served, key=lambda pid: served[pid])
    d.expect_errors = True  # the master logs the killed worker at [alert]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not pid_alive(victim) and len(d.workers()) == 2 and victim not in d.workers(), 10,
               what="the killed worker replaced")
    d.wait_ready()
    after = status(d)["http_all"]
    assert after["requests"] >= total and after["4xx"] >= 1


def test_totals_survive_a_reload(daemon: Any) -> None:
    d = daemon(CONF)
    served = served_by_both(d)
    total = sum(served.values())
    old = set(d.workers())
    d.signal(signal.SIGHUP)
    # the old workers exit gracefully: their last counts go into the retired row
    wait_until(lambda: not any(pid_alive(pid) for pid in old), 15, what="the old workers gone")
    data = status(d)
    assert data["generation"] == 2
    assert data["http_all"]["requests"] >= total
    body = d.get("/status?format=prometheus")[1].decode()
    line = next(l for l in body.splitlines() if l.startswith("pyngx_server_requests_total "))
    assert int(line.split()[1]) >= total
