"""``thread_pool`` and ``await ngx.run_worker_thread``: in a real daemon, over real sockets."""
from __future__ import annotations

import json
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from support import Daemon, pid_alive, wait_until

CONF = """
worker_processes 1;
error_log logs/error.log info;
worker_shutdown_timeout 10s;
thread_pool io threads=10 max_queue=200;
thread_pool tiny threads=1 max_queue=1;
http {
    python_shared_dict seen 1m;
    init_by_python_block {
        import asyncio, json, threading, time
        from pyngx import ipc, events, process
        process.enable_privileged_agent()

        def where(tag):
            return f"{tag} in {threading.current_thread().name}"
    }
    init_worker_by_python_block {
        async def from_timer(premature):
            ngx.shared.seen.set(f"timer:{process.type()}", await ngx.run_worker_thread("default", where, "timer"))

        async def from_ipc(data):
            ngx.shared.seen.set(f"ipc:{process.type()}", await ngx.run_worker_thread("default", where, data))

        async def from_event(data, event, source, pid):
            ngx.shared.seen.set(f"event:{process.type()}", await ngx.run_worker_thread("default", where, data))

        ngx.timer.at(0, from_timer)
        ipc.receive("offload", from_ipc)
        events.register(from_event, "t", "offload")
        events.configure("seen")
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /hello { content_by_python_block { ngx.say("hello") } }
        location = /sleep {
            content_by_python_block {
                await ngx.run_worker_thread("io", time.sleep, float(ngx.var.arg_s or 0.1))
                ngx.say("slept")
            }
        }
        location = /values {
            content_by_python_block {
                def add(a, b, *, scale=1):
                    return {"sum": (a + b) * scale, "thread": threading.current_thread().name}
                def fail(text):
                    raise ValueError(text)
                ngx.say(json.dumps(await ngx.run_worker_thread("default", add, 2, 3, scale=10)))
                try:
                    await ngx.run_worker_thread("default", fail, "bad input")
                except ValueError as exc:
                    ngx.say(f"ValueError: {exc}")
            }
        }
        location = /errors {
            content_by_python_block {
                gate = threading.Event()
                calls = [ngx.run_worker_thread("tiny", gate.wait, 5) for _ in range(3)]
                tasks = [asyncio.ensure_future(c) for c in calls]
                await asyncio.sleep(0)
                gate.set()
                for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                    ngx.say(repr(outcome))
                try:
                    await ngx.run_worker_thread("nope", len, "x")
                except ngx.Error as exc:
                    ngx.say(f"{type(exc).__name__}: {exc}")
            }
        }
        location = /fanout {
            content_by_python_block {
                ipc.broadcast("offload", "ipc")
                events.post("t", "offload", "event")
                ngx.say("posted")
            }
        }
        location = /seen {
            content_by_python_block {
                d = ngx.shared.seen
                for key in sorted(k for k in d.get_keys(0) if ":" in k and not k.startswith("ev:")):
                    ngx.say(f"{key} = {d.get(key)}")
            }
        }
        location = /status { pyngx_status; }
    }
}
"""


def get(d: Daemon, path: str, timeout: float = 10) -> tuple[int, str]:
    status, body = d.get(path, timeout=timeout)
    return status, body.decode()


def test_results_and_exceptions_cross_the_thread_boundary(daemon: Any) -> None:
    d = daemon(CONF)
    status, body = get(d, "/values")
    first, second = body.splitlines()
    value = json.loads(first)
    assert status == 200 and value["sum"] == 50 and value["thread"].startswith("pyngx-default-")
    assert second == "ValueError: bad input"


def test_a_full_queue_and_an_unknown_pool_give_clear_errors(daemon: Any) -> None:
    d = daemon(CONF)
    status, body = get(d, "/errors")
    assert status == 200
    assert body.splitlines() == [
        "True", "True",
        "Error('thread pool \"tiny\" queue overflow: 1 tasks waiting')",
        'Error: thread_pool "nope" not found',
    ]


def test_timers_ipc_events_and_the_agent_can_offload(daemon: Any) -> None:
    d = daemon(CONF)

    def all_ready() -> bool:
        procs = json.loads(get(d, "/status")[1])["processes"]
        return len(procs) == 2 and all(p["ready"] for p in procs)
    wait_until(all_ready, what="the worker and the agent to be ready")  # IPC broadcasts reach ready ones
    assert get(d, "/fanout") == (200, "posted\n")
    want = [f"{what}:{kind} = {what} in pyngx-default-N" for what in ("event", "ipc", "timer")
            for kind in ("privileged agent", "worker")]
    wait_until(lambda: re.sub(r"default-\d+", "default-N", get(d, "/seen")[1]).splitlines() == want,
               what=f"/seen to list {want}")


def test_100_blocking_calls_take_their_share_of_the_threads_and_the_loop_keeps_answering(daemon: Any) -> None:
    """100 calls of 100 ms on 10 threads: about 10 × 100 ms, and /hello answers all along."""
    d = daemon(CONF)
    assert get(d, "/sleep?s=0")[0] == 200  # the first threads exist
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            start = time.monotonic()
            assert get(d, "/hello", timeout=5) == (200, "hello\n")
            latencies.append(time.monotonic() - start)
            time.sleep(0.02)

    with ThreadPoolExecutor(101) as pool:
        prober = pool.submit(probe)
        start = time.monotonic()
        answers = list(pool.map(lambda _: get(d, "/sleep?s=0.1", timeout=20), range(100)))
        took = time.monotonic() - start
        done.set()
        prober.result()
    assert answers == [(200, "slept\n")] * 100
    assert 1.0 <= took < 3.5, took  # ceil(100 / 10) × 100 ms, plus the client's own overhead
    assert len(latencies) >= 10 and max(latencies) < 0.5, latencies
    stats = json.loads(get(d, "/status")[1])["thread_pools"]["io"]
    assert (stats["threads"], stats["started"], stats["calls"], stats["in_flight"]) == (10, 10, 101, 0)
    assert "blocked" not in d.error_log()  # the watchdog saw no stall


def test_graceful_exit_waits_for_running_calls_then_stops(daemon: Any) -> None:
    d = daemon(CONF)
    worker = wait_until(d.workers, what="the worker")[0]
    result: list[tuple[int, str]] = []
    client = threading.Thread(target=lambda: result.append(get(d, "/sleep?s=1.5", timeout=10)))
    client.start()
    wait_until(lambda: json.loads(get(d, "/status")[1])["thread_pools"].get("io", {}).get("in_flight"),
               what="the call to run")
    d.signal(signal.SIGQUIT)
    client.join(10)
    assert result == [(200, "slept\n")]
    wait_until(lambda: not pid_alive(worker), what="the worker to exit")
    assert "waiting for 1 worker thread calls" in d.error_log()
    d.wait_log("] " + str(d.master_pid) + "#0: exit")


def test_graceful_exit_does_not_wait_past_worker_shutdown_timeout(daemon: Any) -> None:
    d = daemon(CONF.replace("worker_shutdown_timeout 10s;", "worker_shutdown_timeout 1s;"))
    worker = wait_until(d.workers, what="the worker")[0]
    client = threading.Thread(target=lambda: _swallow(lambda: get(d, "/sleep?s=30", timeout=30)))
    client.start()
    wait_until(lambda: json.loads(get(d, "/status")[1])["thread_pools"].get("io", {}).get("in_flight"),
               what="the call to run")
    start = time.monotonic()
    d.signal(signal.SIGQUIT)
    wait_until(lambda: not pid_alive(worker), timeout=10, what="the worker to exit")
    assert time.monotonic() - start < 5  # 1 s of bound, not the call's 30 s
    client.join(10)
    assert "worker_shutdown_timeout (1s) expired" in d.error_log()


def _swallow(fn: Any) -> None:
    try:
        fn()
    except OSError:
        pass
