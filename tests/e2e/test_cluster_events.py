"""Cluster events through a real redis-server: several pyngx nodes on one machine.

Every process of every node appends what its handlers saw to
``logs/seen-<pid>.txt`` (tests/clustersupport.py); requests to ``/post`` make
a worker post cluster events.
"""
from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clustersupport import RedisServer, events_of, node_conf, seen
from support import Daemon, wait_until


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def processes_saw(d: Daemon, expected: list[str], count: int) -> bool:
    """COUNT processes of D have handled exactly EXPECTED (in order) so far."""
    lists = [events_of(lines) for lines in seen(d.prefix).values()]
    return sum(1 for got in lists if got == expected) >= count


def test_every_process_of_every_node_in_one_order(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                  tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", agent=True), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b"), prefix=tmp_path / "b")
    for d in (a, b):  # each node's reader is there (it logs when it starts reading)
        d.wait_log("reads the events of cluster")
    for round_ in range(3):
        for d, tag in ((a, f"a{round_}-"), (b, f"b{round_}-")):
            assert d.get(f"/post?n=20&tag={tag}")[0] == 200
    lists = {}

    def all_done() -> bool:
        lists.clear()
        for d in (a, b):
            for name, lines in seen(d.prefix).items():
                lists[f"{d.prefix.name}/{name}"] = events_of(lines)
        return len(lists) == 5 and all(len(got) == 120 for got in lists.values())
    wait_until(all_done, 20, what="120 events in every process")
    orders = {tuple(got) for got in lists.values()}
    assert len(orders) == 1, "processes disagree on the order"
    order = next(iter(orders))
    assert len(set(order)) == 120
    for tag in ("a0-", "b0-", "a1-", "b1-", "a2-", "b2-"):  # each poster's own order is kept
        mine = [e for e in order if e.startswith(tag)]
        assert mine == [f"{tag}{i}" for i in range(20)]


def test_unique_cluster_event_is_handled_once_in_the_cluster(daemon: Callable[..., Daemon],
                                                             redis_server: RedisServer, tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a"), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b"), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    assert a.get("/post?n=1&tag=u&unique=once")[0] == 200
    assert b.get("/post?n=1&tag=v&unique=once")[0] == 200  # a repeat within the timeout: dropped
    assert a.get("/post?n=1&tag=end")[0] == 200
    def end_everywhere() -> bool:
        return all(sum("e end0" in lines for lines in seen(d.prefix).values()) == 2 for d in (a, b))
    wait_until(end_everywhere, 15, what="every process to see the end marker")

    def handled() -> list[str]:
        return [ln for d in (a, b) for lines in seen(d.prefix).values() for ln in lines if ln in ("e u0", "e v0")]
    # the unique event goes to the one process that claims it, which may come after the end marker
    wait_until(handled, 15, what="the unique event to be handled")
    assert handled() in (["e u0"], ["e v0"])  # the post that reaches Redis first wins, once


def test_a_restarted_node_catches_up_exactly_once(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                  tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a"), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    assert a.get("/post?n=10&tag=before")[0] == 200
    wait_until(lambda: processes_saw(b, [f"before{i}" for i in range(10)], 1), 15, what="b to see the first ten")
    b.stop()
    assert a.get("/post?n=25&tag=away")[0] == 200
    pos = (b.prefix / "logs" / "cluster-t.pos").read_text().split()
    assert pos[1] == "10"
    b.start()
    expected = [f"away{i}" for i in range(25)]

    def caught_up() -> bool:
        fresh = [events_of(lines) for lines in seen(b.prefix).values() if len(lines) > 0]
        return expected in fresh
    wait_until(caught_up, 15, what="the restarted node to catch up")
    lists = [events_of(lines) for lines in seen(b.prefix).values()]
    assert sorted(lists) == sorted([[f"before{i}" for i in range(10)], expected])  # no event twice, none lost


def test_retention_drops_and_the_node_counts_what_it_missed(daemon: Callable[..., Daemon],
                                                            redis_server: RedisServer, tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1, retention=10), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1, retention=10), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    assert a.get("/post?n=1&tag=first")[0] == 200
    wait_until(lambda: processes_saw(b, ["first0"], 1), 15, what="b to see the first event")
    b.stop()
    for k in range(10):
        assert a.get(f"/post?n=100&tag=x{k}-")[0] == 200
    b.start()
    b.wait_log("missed")
    wait_until(lambda: any("e x9-99" in lines for lines in seen(b.prefix).values()), 15, what="the last event")
    got = [events_of(lines) for lines in seen(b.prefix).values() if "e first0" not in lines][0]
    stats = json.loads(b.get("/status")[1])["cluster"]["reader"]
    assert stats["missed"] > 0 and stats["missed"] + len(got) == 1000
    assert got == [f"x{i // 100}-{i % 100}" for i in range(1000 - len(got), 1000)]


def test_status_shows_the_link_and_the_nodes(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                             tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", agent=True), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b"), prefix=tmp_path / "b")

    def cluster_status() -> dict:
        data = json.loads(a.get("/status")[1])["cluster"]
        nodes = {n["name"] for n in ((data.get("reader") or {}).get("nodes") or [])}
        return data if nodes == {"a", "b"} else {}
    data = wait_until(cluster_status, 15, what="both nodes in the status")
    assert data["node"] == "a" and data["cluster"] == "t" and data["redis"] == redis_server.url
    assert data["reader"]["link"]["connected"] is True
    assert {"lag_ms", "last_id", "missed", "behind"} <= set(data["reader"])
    prom = a.get("/status?format=prometheus")[1].decode()
    assert "pyngx_cluster_reader_missed" in prom


PLAIN = """
error_log logs/error.log info;
worker_processes 1;
http {
    python_shared_dict ev 1m;
    init_worker_by_python_block {
        from pyngx import events
        events.configure("ev")
    }
    server {
        listen 127.0.0.1:@PORT@;
        location /check {
            content_by_python_block {
                import sys
                from pyngx import events
                out = []
                for attempt in (lambda: events.post("c", "e", 1, cluster=True),
                                lambda: ngx.timer.every(1, print, unique="j", scope="cluster")):
                    try:
                        attempt()
                    except ngx.Error as exc:
                        out.append(str(exc))
                loaded = sorted(m for m in sys.modules
                                if m.split(".")[0] == "redis" or m.startswith("pyngx.runtime.cluster"))
                ngx.say(repr(loaded), " | ", " | ".join(out))
            }
        }
    }
}
"""


def test_without_python_cluster_nothing_is_loaded_and_cluster_calls_say_why(daemon: Callable[..., Daemon]) -> None:
    d = daemon(PLAIN)
    status, body = d.get("/check")
    loaded, *errors = body.decode().strip().split(" | ")
    assert status == 200
    assert loaded == "['pyngx.runtime.cluster']"  # loaded by the cluster calls themselves, and no redis
    assert errors == ["cluster not configured (python_cluster)"] * 2


def test_a_reload_hands_the_reader_over_without_a_repeat(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", agent=True, workers=1), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    assert a.get("/post?n=5&tag=old")[0] == 200
    wait_until(lambda: processes_saw(b, [f"old{i}" for i in range(5)], 2), 15, what="b's processes to see five")
    before = set(seen(b.prefix))
    assert b.pyngx("-s", "reload").returncode == 0
    wait_until(lambda: len(set(seen(b.prefix)) - before) == 2, 15, what="b's new generation")
    wait_until(lambda: b.error_log().count("reads the events of cluster") == 2, 15, what="the new reader")
    assert a.get("/post?n=5&tag=new")[0] == 200
    fresh = lambda: [events_of(seen(b.prefix)[name]) for name in set(seen(b.prefix)) - before]  # noqa: E731
    wait_until(lambda: fresh() == [[f"new{i}" for i in range(5)]] * 2, 15, what="the new generation to see five")
    # one reader per generation (a reader that reconnects says where it resumes again, with the same pid)
    readers = set(re.findall(r"\] (\d+)#0: cluster: this process reads the events", b.error_log()))
    assert len(readers) == 2, b.error_log()
    assert (b.prefix / "logs" / "cluster-t.pos").read_text().split()[1] == "10"


def test_redis_losing_its_data_is_survived_and_logged(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                      tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    assert a.get("/post?n=5&tag=old")[0] == 200
    wait_until(lambda: processes_saw(b, [f"old{i}" for i in range(5)], 1), 15, what="b to see five")
    redis_server.stop()  # appendonly: the data would come back; take it away
    for path in redis_server.dir.glob("appendonly*"):
        if path.is_dir():
            for part in path.iterdir():
                part.unlink()
            path.rmdir()
        else:
            path.unlink()
    redis_server.start()
    for d in (a, b):
        d.wait_log("Redis lost its data", timeout=15)
    assert a.get("/post?n=3&tag=new")[0] == 200
    expected = [f"old{i}" for i in range(5)] + [f"new{i}" for i in range(3)]
    wait_until(lambda: processes_saw(b, expected, 1), 15, what="b to see the events after the loss")


def test_a_full_events_zone_makes_the_reader_wait_not_drop(daemon: Callable[..., Daemon],
                                                           redis_server: RedisServer, tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", zone="64k"), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    for k in range(4):
        assert a.get(f"/post?n=500&tag=z{k}-")[0] == 200
    expected = [f"z{k}-{i}" for k in range(4) for i in range(500)]
    wait_until(lambda: processes_saw(b, expected, 2), 60, what="both of b's workers to see all 2000, in order")
    assert "the events zone is full" in b.error_log()


def test_the_reader_killed_mid_stream_loses_nothing(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                    tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", agent=True), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events of cluster")
    b.expect_errors = True  # the master logs the killed agent
    agent = int(b.error_log().split("reads the events of cluster")[0].rsplit("[info] ", 1)[1].split("#")[0])
    mine = f"seen-{agent}.txt"
    assert a.get("/post?n=3000&tag=k0-")[0] == 200
    wait_until(lambda: len(events_of(seen(b.prefix).get(mine, []))) > 100, 15, what="the reader to be busy")
    os.kill(agent, signal.SIGKILL)  # in the middle of the 3000
    cut = len(events_of(seen(b.prefix)[mine]))
    assert a.get("/post?n=1000&tag=k1-")[0] == 200
    expected = [f"k0-{i}" for i in range(3000)] + [f"k1-{i}" for i in range(1000)]
    workers = [name for name, lines in seen(b.prefix).items() if "joined worker" in lines]

    def first_seen_in_order(name: str) -> bool:
        got = events_of(seen(b.prefix)[name])
        return list(dict.fromkeys(got)) == expected
    wait_until(lambda: all(first_seen_in_order(name) for name in workers), 30,
               what="b's workers to see every event, in order, across the reader's death")
    assert b.error_log().count("reads the events of cluster") == 2  # the respawned agent took over
    assert cut < 3000


def test_through_tls_and_a_password(daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-tls", tls=True, password="s3cret").start()
    try:
        a = daemon(node_conf(server.url, "a", workers=1), prefix=tmp_path / "a")
        b = daemon(node_conf(server.url, "b", workers=1), prefix=tmp_path / "b")
        for d in (a, b):
            d.wait_log("reads the events of cluster")
        assert a.get("/post?n=3&tag=tls")[0] == 200
        wait_until(lambda: processes_saw(b, ["tls0", "tls1", "tls2"], 1), 15, what="b to see the events")
        shown = json.loads(a.get("/status")[1])["cluster"]["redis"]
        assert shown == f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none"  # no password
        assert "s3cret" not in a.error_log() + b.error_log()
    finally:
        server.stop()
