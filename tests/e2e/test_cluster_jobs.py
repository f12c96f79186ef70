"""Cluster jobs and Redis trouble, through a real redis-server and several pyngx nodes.

A cluster job (``ngx.timer.every(0.1, job, unique="job", scope="cluster")``,
lease 1 s) appends ``TIME NODE PID TOKEN`` to one file shared by the nodes
for each run (tests/clustersupport.py).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clustersupport import Proxy, RedisServer, events_of, node_conf, seen
from support import REPO, Daemon, ship_tour_files, wait_until

INTERVAL, LEASE = 0.1, 1.0
SLACK = 1.5  # scheduling on a loaded two-core machine


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def runs(path: Path) -> list[tuple[float, str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        at, node, pid, token = line.split()
        out.append((float(at), node, int(pid), int(token) if token != "None" else 0))
    return out


def check_one_runner(history: list[tuple[float, str, int, int]]) -> None:
    """Runs never interleave: once a new holder ran, no earlier holder runs again; tokens only grow."""
    holders: list[tuple[str, int]] = []
    for _, node, pid, token in history:
        assert token > 0, "a run without a valid lease"
        if not holders or holders[-1] != (node, pid):
            assert (node, pid) not in holders, f"{node}/{pid} ran again after losing the lease"
            holders.append((node, pid))
    tokens = [token for *_, token in history]
    assert tokens == sorted(tokens)


@pytest.mark.parametrize("killed", ["worker", "node"])
def test_one_runner_in_the_cluster_and_take_over_after_sigkill(daemon: Callable[..., Daemon],
                                                              redis_server: RedisServer, tmp_path: Path,
                                                              killed: str) -> None:
    log = tmp_path / "runs.txt"
    nodes = [daemon(node_conf(redis_server.url, name, job=True, runs=log), prefix=tmp_path / name)
             for name in ("a", "b")]
    wait_until(lambda: len(runs(log)) >= 15, 15, what="the job to run")
    first = runs(log)
    assert len({(node, pid) for _, node, pid, _ in first}) == 1, "more than one process ran the job"
    _, node, pid, _ = first[-1]
    holder = next(d for d in nodes if d.prefix.name == node)
    holder.expect_errors = True  # the master logs the killed worker
    if killed == "worker":
        os.kill(pid, signal.SIGKILL)
    else:  # the whole node: master, workers
        assert holder.sid is not None
        os.killpg(holder.sid, signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: any(p != pid for at, _, p, _ in runs(log) if at > killed_at), INTERVAL + LEASE + SLACK + 5,
               what="another process to take over")
    took_over, node_after, _, _ = next(r for r in runs(log) if r[0] > killed_at and r[2] != pid)
    assert took_over - killed_at <= INTERVAL + LEASE + SLACK
    if killed == "node":
        assert node_after != node
    check_one_runner(runs(log))


@pytest.mark.parametrize("partition", ["cut", "freeze"])
def test_a_holder_cut_off_from_redis_stops_and_another_node_takes_over(daemon: Callable[..., Daemon],
                                                                       redis_server: RedisServer,
                                                                       tmp_path: Path, partition: str) -> None:
    log = tmp_path / "runs.txt"
    proxy = Proxy(redis_server.port)
    try:
        a = daemon(node_conf(f"redis://127.0.0.1:{proxy.port}/0", "a", job=True, runs=log), prefix=tmp_path / "a")
        wait_until(lambda: len(runs(log)) >= 5, 15, what="node a to run the job")
        b = daemon(node_conf(redis_server.url, "b", job=True, runs=log), prefix=tmp_path / "b")
        b.wait_log("reads the events")
        time.sleep(0.5)  # b competes for the lease meanwhile, and must not get it
        assert {node for _, node, _, _ in runs(log)} == {"a"}
        getattr(proxy, partition)()
        cut_at = time.time()
        wait_until(lambda: any(node == "b" for _, node, _, _ in runs(log)), INTERVAL + LEASE + SLACK + 5,
                   what="node b to take over")
        history = runs(log)
        b_first = next(at for at, node, _, _ in history if node == "b")
        a_last = max(at for at, node, _, _ in history if node == "a")
        assert a_last < b_first
        assert a_last - cut_at <= LEASE  # a stopped within its lease, on its own clock
        assert b_first - cut_at <= INTERVAL + LEASE + SLACK
        time.sleep(0.5)
        assert max(at for at, node, _, _ in runs(log) if node == "a") == a_last  # and never again
        check_one_runner(runs(log))
        a.expect_errors = False
    finally:
        proxy.close()


def test_redis_stopped_and_restarted_under_load(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a"), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events")
    results: list[tuple[int, float]] = []
    stop = threading.Event()

    def load() -> None:
        k = 0
        while not stop.is_set():
            for path in ("/hello", f"/post?n=1&tag=p{k}-"):
                t0 = time.monotonic()
                try:
                    status = a.get(path, timeout=5)[0]
                except OSError:
                    status = 0
                results.append((status, time.monotonic() - t0))
            k += 1
    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_until(lambda: len(results) > 50, 10, what="some load")
        redis_server.stop()
        down_at, down_since = len(results), time.monotonic()
        wait_until(lambda: len(results) > down_at + 100 and time.monotonic() - down_since > 1.5, 15,
                   what="requests while Redis is down")
        redis_server.start()
        a.wait_log("reconnected to Redis", timeout=15)
        up_at = len(results)
        wait_until(lambda: len(results) > up_at + 50, 10, what="requests after Redis is back")
    finally:
        stop.set()
        thread.join()
    assert all(status == 200 for status, _ in results), [s for s, _ in results if s != 200][:5]
    slowest = max(took for _, took in results)
    assert slowest < 1.0, f"a request took {slowest:.3f}s"  # nothing waited on Redis
    posted = len(results) // 2  # every second request posted one event
    expected = sorted(f"p{k}-0" for k in range(posted))

    def delivered() -> bool:
        return all(sorted(events_of(lines)) == expected for lines in seen(b.prefix).values())
    # the order is the stream's (the same on every node), not the posts': two workers of a
    # each send what they queued while Redis was down when it comes back
    wait_until(delivered, 20, what="b to get every event, those posted while Redis was down included")
    reconnected = [json.loads(a.get("/status")[1])["cluster"]["link"]["reconnects"] for _ in range(8)]
    assert max(reconnected) >= 1


def test_the_default_config_with_its_cluster_section_on(daemon: Callable[..., Daemon],
                                                        redis_server: RedisServer) -> None:
    text = (REPO / "conf" / "pyngx.conf").read_text()
    line = "# python_cluster redis://127.0.0.1:6379/0 name=tour;"
    assert line in text
    text = text.replace(line, f"python_cluster {redis_server.url} name=tour;").replace(
        "listen 127.0.0.1:8080;", "listen 127.0.0.1:@PORT@;")
    d = daemon(text, start=False)
    ship_tour_files(d.prefix)
    d.start()
    assert d.get("/cluster") == (200, b"posted to every node of the cluster\n")

    def counted() -> bool:
        data = json.loads(d.get("/status")[1])["cluster"]
        return bool(data["reader"] and data["reader"]["handled"] >= 1)
    wait_until(counted, 15, what="the node's reader to hand the greeting over")


def test_a_full_buffer_refuses_the_post_and_says_why(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    a = daemon(node_conf(redis_server.url, "a", workers=1, buffer=5), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1), prefix=tmp_path / "b")
    for d in (a, b):
        d.wait_log("reads the events")
    redis_server.stop()
    status, body = a.get("/trypost?n=8&tag=q")
    assert status == 200
    done, message = body.decode().strip().split(" ", 1)
    assert done == "5"  # the buffer's size: the sixth is refused, the five queued are kept
    assert message.startswith("cluster post refused: 5 events already wait for Redis (")
    wait_until(lambda: "Redis unreachable: " in a.get("/trypost?n=1&tag=z")[1].decode(), 10,
               what="the refusal to say Redis is unreachable")
    redis_server.start()
    wait_until(lambda: any(events_of(lines) == [f"q{i}" for i in range(5)] for lines in seen(b.prefix).values()),
               20, what="the five queued posts to reach b")
    wait_until(lambda: a.get("/trypost?n=1&tag=r")[1] == b"1\n", 10, what="room again")


def test_nodes_start_and_serve_with_redis_down(daemon: Callable[..., Daemon], redis_server: RedisServer,
                                               tmp_path: Path) -> None:
    redis_server.stop()
    a = daemon(node_conf(redis_server.url, "a", workers=1), prefix=tmp_path / "a")
    b = daemon(node_conf(redis_server.url, "b", workers=1), prefix=tmp_path / "b")
    t0 = time.monotonic()
    assert a.get("/hello") == (200, b"hello\n")
    assert a.get("/trypost?n=3&tag=early")[1] == b"3\n"  # queued in the worker
    assert time.monotonic() - t0 < 1.0
    a.wait_log("cannot reach Redis")
    redis_server.start()
    wait_until(lambda: any(events_of(lines) == ["early0", "early1", "early2"] for lines in seen(b.prefix).values()),
               20, what="the early posts to reach b once Redis is up")
