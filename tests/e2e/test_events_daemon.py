"""pyngx.events in the real daemon: 2 workers and the privileged agent.

Every process appends what its handlers saw to ``logs/seen-<pid>.txt``, one
line per call (``TAG SOURCE EVENT DATA SENDER``), in one ``write()`` on an
O_APPEND file. HTTP requests make a worker post; ``/agent`` makes the agent
post through an event of its own.
"""
from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable

from support import Daemon, wait_until

CONF = """
error_log logs/error.log info;
worker_processes 2;
worker_shutdown_timeout 5s;
events { worker_connections 64; }
http {
    python_shared_dict ev @ZONE@;
    init_by_python_block {
        from pyngx import process
        process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        import gc, json, os
        from pyngx import events, process
        me = os.getpid()
        kind = "agent" if process.type() == "privileged agent" else "worker"

        def note(*words):
            line = " ".join(str(w) for w in words) + "\\n"
            fd = os.open(ngx.config.prefix() + f"logs/seen-{me}.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

        def on_all(data, event, source, pid):
            if source != "burst":
                note("all", source, event, json.dumps(data, separators=(",", ":")), pid)
            if kind == "agent" and event == "agent-go":
                for i in range(data):
                    events.post("t", "e", f"g{i}")
@EXTRA@
        events.register(on_all)
        events.configure("ev")
        note("joined", kind, me)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location /post {
            content_by_python_block {
                from pyngx import events
                n = int(ngx.var.arg_n or 1)
                tag = ngx.var.arg_tag or "x"
                for i in range(n):
                    events.post(ngx.var.arg_source or "t", ngx.var.arg_event or "e", f"{tag}{i}",
                                unique=ngx.var.arg_unique)
                ngx.say("ok")
            }
        }
        location /agent {
            content_by_python_block {
                from pyngx import events
                events.post("t", "agent-go", int(ngx.var.arg_n))
                ngx.say("ok")
            }
        }
        location /local {
            content_by_python_block {
                import os
                from pyngx import events
                events.post_local("t", "here", ngx.var.arg_tag)
                ngx.say(os.getpid())
            }
        }
        location /stats {
            content_by_python_block {
                import json
                from pyngx import events
                ngx.say(json.dumps(events.statistics()))
            }
        }
@LOCATIONS@
    }
}
"""


def conf(extra: str = "", locations: str = "", zone: str = "8m") -> str:
    return CONF.replace("@EXTRA@", extra).replace("@LOCATIONS@", locations).replace("@ZONE@", zone)


def seen(d: Daemon) -> dict[int, list[list[str]]]:
    """PID -> the lines its handlers wrote, split in words."""
    out = {}
    for path in (d.prefix / "logs").glob("seen-*.txt"):
        pid = int(path.stem.split("-")[1])
        out[pid] = [line.split(" ") + [""] * 3 for line in path.read_text().splitlines()]
    return out


def joined(d: Daemon, count: int = 3) -> dict[int, str]:
    """Wait until COUNT processes have configured events; PID -> kind."""
    def find() -> dict[int, str] | None:
        kinds = {pid: lines[-1][1] for pid, lines in seen(d).items()
                 for line in lines if line[0] == "joined" for lines in [[line]]}
        return kinds if len(kinds) >= count else None
    return wait_until(find, 15, what=f"{count} processes to join the event log")


def events_of(lines: list[list[str]], tag: str = "all", source: str = "t") -> list[str]:
    return [json.loads(line[3]) for line in lines if line[0] == tag and line[1] == source and line[2] == "e"]


def start(daemon: Callable[..., Daemon], **kw: str) -> Daemon:
    d = daemon(conf(**kw))
    joined(d)
    return d


def test_every_process_sees_every_event_in_the_same_order(daemon: Callable[..., Daemon]) -> None:
    d = start(daemon)
    calls = ["/post?n=300&tag=a", "/post?n=300&tag=b", "/agent?n=300"]
    threads = [threading.Thread(target=d.get, args=(path,)) for path in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def complete() -> dict[int, list[str]] | None:
        got = {pid: events_of(lines) for pid, lines in seen(d).items()}
        return got if len(got) == 3 and all(len(v) >= 900 for v in got.values()) else None

    got = wait_until(complete, 20, what="900 events in every process")
    orders = list(got.values())
    assert orders[0] == orders[1] == orders[2]
    assert len(orders[0]) == 900
    for tag in "abg":  # each sender's own order is kept
        assert [x for x in orders[0] if x[0] == tag] == [f"{tag}{i}" for i in range(300)]


def test_unique_is_handled_by_exactly_one_process(daemon: Callable[..., Daemon]) -> None:
    extra = """
        def on_refresh(data, event, source, pid):
            note("refresh", source, event, data, pid)
        def on_trigger(data, event, source, pid):
            events.post("cache", "refresh", me, unique="the-key")
        events.register(on_refresh, "cache", "refresh")
        events.register(on_trigger, "trigger")
"""
    d = start(daemon, extra=extra)
    assert d.get("/post?source=trigger&event=go&n=2")[0] == 200  # 3 processes x 2 posts of one unique

    def handled() -> list[list[str]]:
        return [line for lines in seen(d).values() for line in lines if line[0] == "refresh"]

    wait_until(lambda: len([ln for lines in seen(d).values() for ln in lines if ln[2] == "go"]) == 6, 10)
    wait_until(handled, 10, what="the unique event")
    d.get("/post?tag=flush")  # everything posted before it has been handled once it arrives
    wait_until(lambda: all(events_of(lines)[-1:] == ["flush0"] for lines in seen(d).values()), 10)
    assert len(handled()) == 1
    # repeats within timeout were dropped by the posters themselves
    stats = [json.loads(d.get("/stats")[1]) for _ in range(6)]
    assert any(s["dropped_unique"] > 0 for s in stats)


def test_post_local_and_filters(daemon: Callable[..., Daemon]) -> None:
    extra = """
        events.register(lambda d, e, s, p: note("src", s, e, d, p), "t")
        events.register(lambda d, e, s, p: note("ev", s, e, d, p), "t", "a", "b")
        flt = events.event_list("t", "a", "b")
        assert flt._source == "t" and flt.a == "a"
        try:
            flt.c
        except AttributeError as exc:
            note("typo", str(exc).replace(" ", "_"))
"""
    d = start(daemon, extra=extra)
    d.get("/post?event=a&tag=A")
    d.get("/post?event=b&tag=B")
    d.get("/post?event=c&tag=C")
    d.get("/post?source=u&event=a&tag=U")
    status, body = d.get("/local?tag=L")
    local_pid = int(body)
    d.get("/post?tag=end")

    def finished() -> dict[int, list[list[str]]] | None:
        got = seen(d)
        return got if len(got) == 3 and all(events_of(v)[-1:] == ["end0"] for v in got.values()) else None

    got = wait_until(finished, 10, what="the end marker everywhere")
    for pid, lines in got.items():
        words = [(ln[0], ln[1], ln[2], ln[3]) for ln in lines if ln[0] in ("src", "ev")]
        expect = [("src", "t", "a", "A0"), ("ev", "t", "a", "A0"), ("src", "t", "b", "B0"), ("ev", "t", "b", "B0"),
                  ("src", "t", "c", "C0")]
        if pid == local_pid:
            local = [ln for ln in lines if ln[2] == "here"]
            assert [ln[0] for ln in local] == ["all", "src"] and local[0][3:5] == ['"L"', "None"]
        else:
            assert not [ln for ln in lines if ln[2] == "here"]
        assert [w for w in words if w[2] != "here"] == expect + [("src", "t", "e", "end0")]
        assert ["typo", "unknown_event_'c'_(source_'t')", "", "", ""] in lines


def test_weak_handlers_go_away_with_their_callback(daemon: Callable[..., Daemon]) -> None:
    extra = """
        holder = [lambda d, e, s, p: note("weak", s, e, d, p)]
        events.register_weak(holder[0], "t")
        def on_drop(data, event, source, pid):
            holder.clear()
            gc.collect()
        events.register(on_drop, "drop")
"""
    d = start(daemon, extra=extra)
    d.get("/post?tag=one")
    d.get("/post?source=drop&event=now")
    d.get("/post?tag=two")
    got = wait_until(lambda: (s := seen(d)) and len(s) == 3 and all(events_of(v)[-1:] == ["two0"] for v in s.values())
                     and s, 10)
    for lines in got.values():
        weak = [ln[3] for ln in lines if ln[0] == "weak"]
        assert weak == ["one0"]


def test_a_burst_of_100000_events_is_delivered_once_everywhere(daemon: Callable[..., Daemon]) -> None:
    extra = """
        got = bytearray(100_000)
        def on_burst(data, event, source, pid):
            if event == "b":
                got[data] += 1
            else:
                missing = got.count(0)
                twice = sum(1 for x in got if x > 1)
                note("burst", kind, missing, twice)
        events.register(on_burst, "burst")
"""
    locations = """
        location /burst {
            content_by_python_block {
                from pyngx import events
                i = refused = 0
                while i < 100_000:
                    try:
                        events.post("burst", "b", i)
                    except ngx.NoMemoryError:
                        refused += 1
                        await ngx.sleep(0.001)
                        continue
                    i += 1
                    if i % 1000 == 0:
                        await ngx.sleep(0)
                events.post("burst", "end")
                ngx.say(refused)
            }
        }
"""
    d = start(daemon, extra=extra, locations=locations, zone="4m")
    status, body = d.request("GET", "/burst", timeout=60)[::2]
    assert status == 200, body

    def reports() -> list[list[str]] | None:
        found = [ln for lines in seen(d).values() for ln in lines if ln[0] == "burst"]
        return found if len(found) == 3 else None

    for line in wait_until(reports, 60, what="every process to handle the whole burst"):
        assert line[2:4] == ["0", "0"], line  # nothing missing, nothing twice
    stats = json.loads(d.get("/stats")[1])
    assert stats["lost"] == 0


def test_reload_starts_at_the_current_position_and_old_processes_see_stopping(daemon: Callable[..., Daemon]) -> None:
    d = start(daemon)
    d.get("/post?tag=before")
    old = joined(d)
    wait_until(lambda: all(events_of(seen(d).get(pid, []))[-1:] == ["before0"] for pid in old), 10)
    d.signal(signal.SIGHUP)
    kinds = wait_until(lambda: len(j := joined(d, 6)) >= 6 and j, 20, what="the new generation")
    new = [pid for pid in kinds if pid not in old]
    assert len(new) == 3

    def stopped() -> bool:
        got = seen(d)
        want = ["all", "worker-events", "stopping", "null"]
        return all(want + [str(pid), "", "", ""] in got.get(pid, []) for pid in old)

    wait_until(stopped, 20, what="every old process to handle its own stopping")
    d.get("/post?tag=after")
    got = wait_until(lambda: (s := seen(d)) and all(events_of(s.get(p, []))[-1:] == ["after0"] for p in new) and s, 10)
    for pid in new:
        assert events_of(got[pid]) == ["after0"]  # old events are not replayed


def test_a_slow_process_makes_posts_wait_but_nobody_loses_events(daemon: Callable[..., Daemon]) -> None:
    extra = """
        import time
        got = bytearray(3000)
        def on_burst(data, event, source, pid):
            if event == "b":
                got[data] += 1
                if kind == "agent" and data % 500 == 0:
                    time.sleep(0.2)  # a slow handler in one process
            else:
                note("burst", kind, got.count(0), sum(1 for x in got if x > 1))
        events.register(on_burst, "burst")
"""
    locations = """
        location /burst {
            content_by_python_block {
                from pyngx import events
                i = refused = 0
                while i < 3000:
                    try:
                        events.post("burst", "b", i)
                    except ngx.NoMemoryError:
                        refused += 1
                        await ngx.sleep(0.005)
                        continue
                    i += 1
                    if i % 100 == 0:
                        await ngx.sleep(0)
                events.post("burst", "end")
                ngx.say(refused)
            }
        }
"""
    d = start(daemon, extra=extra, locations=locations, zone="64k")
    status, _, body = d.request("GET", "/burst", timeout=60)
    assert status == 200
    assert int(body) > 0  # the zone was full of what the slow agent had not read: posts were refused

    def reports() -> list[list[str]] | None:
        found = [ln for lines in seen(d).values() for ln in lines if ln[0] == "burst"]
        return found if len(found) == 3 else None

    for line in wait_until(reports, 60, what="every process to handle the whole burst"):
        assert line[2:4] == ["0", "0"], line
