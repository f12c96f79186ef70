"""The status page in Prometheus's text format, read by prometheus_client's own parser."""
from __future__ import annotations

import json
import re
import signal
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support import pid_alive, wait_until

CONF = r"""
worker_processes 2;
error_log logs/error.log info;
http {
    python_shared_dict dogs 1m;
    init_by_python_block {
        ngx.process.enable_privileged_agent()
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /wid { content_by_python_block { ngx.say(ngx.worker.id()) } }
        location = /missing { return 404; }
        location = /status { pyngx_status; }
    }
}
"""
Families = dict[str, Any]


def scrape(d: Any) -> tuple[Families, str]:
    code, body = d.get("/status?format=prometheus")
    assert code == 200
    text = body.decode()
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def series(families: Families) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples}


def test_families_names_and_labels_as_prometheus_expects(daemon: Any) -> None:
    d = daemon(CONF)
    assert d.get("/missing")[0] == 404
    families, text = scrape(d)
    assert text.count("# HELP ") == text.count("# TYPE ") == len(families) >= 30
    for name, family in families.items():
        assert re.fullmatch(r"pyngx_[a-z0-9_]+", name) and "__" not in name, name
        assert family.documentation and family.type in ("counter", "gauge"), name
        for sample in family.samples:
            assert "pid" not in sample.labels, sample
            if family.type == "counter":
                assert sample.name == name + "_total", sample
    me = families["pyngx_http_requests"].samples[0].labels
    assert me["type"] == "worker" and me["worker_id"] in ("0", "1")
    for name in ("pyngx_generation", "pyngx_uptime_seconds", "pyngx_timers_pending", "pyngx_ipc_sent_bytes"):
        assert families[name].samples[0].labels == me, name
    (dogs,) = families["pyngx_shared_dict_capacity_bytes"].samples
    assert dogs.labels == {"dict": "dogs"} and dogs.value == 1024 * 1024
    classes = {s.labels["class"]: s.value for s in families["pyngx_server_responses"].samples}
    assert sorted(classes) == ["1xx", "2xx", "3xx", "4xx", "5xx"]
    wait_until(lambda: scrape(d)[0]["pyngx_server_responses"].samples[3].value >= 1, 5,
               what="the 404 in the server's totals")
    kinds = {s.labels["type"]: s.value for s in families["pyngx_processes"].samples}
    assert kinds == {"worker": 2, "privileged agent": 1}
    ready = {tuple(sorted(s.labels.items())) for s in families["pyngx_process_ready"].samples}
    assert ready == {(("type", "privileged agent"),), (("type", "worker"), ("worker_id", "0")),
                     (("type", "worker"), ("worker_id", "1"))}


def test_a_reload_keeps_the_same_series(daemon: Any) -> None:
    d = daemon(CONF)

    def from_worker(wid: str) -> Families | None:
        families, _ = scrape(d)
        return families if families["pyngx_generation"].samples[0].labels["worker_id"] == wid else None

    before = wait_until(lambda: from_worker("0"), 10, interval=0, what="a scrape answered by worker 0")
    old = set(d.workers())
    d.signal(signal.SIGHUP)
    wait_until(lambda: json.loads(d.get("/status")[1])["generation"] == 2, 15, what="the new generation")
    wait_until(lambda: not any(pid_alive(pid) for pid in old), 15, what="the old workers gone")
    after = wait_until(lambda: from_worker("0"), 10, interval=0, what="a scrape answered by the new worker 0")
    assert after["pyngx_generation"].samples[0].value == 2
    assert series(after) == series(before)
