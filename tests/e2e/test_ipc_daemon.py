"""pyngx.ipc in the real daemon: workers and the agent, big payloads, order, reload, strangers.

Handlers report by appending ``PID WORD...`` lines to ``logs/ipc.txt`` (one
``write()`` on an O_APPEND file, so lines from several processes never mix).
A request makes the worker that answers it send; the answer says its pid.
"""
from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from support import Daemon, children, pid_alive, proc_title, wait_until

CONF = """
error_log logs/error.log info;
worker_processes 2;
worker_shutdown_timeout 5s;
events { worker_connections 64; }
http {
    init_by_python_block {
        import hashlib, os, random
        from pyngx import ipc, process
        process.enable_privileged_agent()
        GEN = GEN_VALUE  # which config generation runs (the tests rewrite it)
        try:
            ipc.receive("x", print)
            INIT_ERROR = "none"
        except ngx.WrongContextError as exc:
            INIT_ERROR = str(exc)
    }
    init_worker_by_python_block {
        def note(*words):
            line = " ".join(str(w) for w in (os.getpid(), *words)) + "\\n"
            fd = os.open(ngx.config.prefix() + "logs/ipc.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

        def payload(kind, size, seed):
            data = random.Random(seed).randbytes(size)
            return data.hex()[:size - 2] + "é" if kind == "str" else data

        def ping(data):
            note("ping", ipc.sender, type(data).__name__, data, GEN)
            ipc.reply("pong", data)

        async def pong(data):
            await ngx.sleep(0.001)
            note("pong", ipc.sender, data)

        def big(data):
            raw = data.encode() if type(data) is str else data
            note("big", ipc.sender, type(data).__name__, len(data), hashlib.sha256(raw).hexdigest())

        expected = {}
        def seq(data):
            k = int(data)
            want = expected.get(ipc.sender, 0)
            if k != want:
                note("seq-bad", ipc.sender, want, k)
            expected[ipc.sender] = k + 1
            if k == 9999:
                note("seq-done", ipc.sender)

        ipc.receive({"ping": ping, "pong": pong, "big": big, "seq": seq})
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /send {
            content_by_python_block {
                args = ngx.req.get_uri_args()
                try:
                    to = os.getpid() if args["to"] == "self" else int(args["to"])
                    ipc.send(to, "ping", args.get("data", "hello"))
                    ngx.say(os.getpid())
                except ngx.IPCError as exc:
                    ngx.say("IPCError: ", exc)
            }
        }
        location = /broadcast {
            content_by_python_block {
                ipc.broadcast("ping", ngx.req.get_uri_args()["data"])
                ngx.say(os.getpid())
            }
        }
        location = /big {
            content_by_python_block {
                args = ngx.req.get_uri_args()
                data = payload(args["kind"], int(args["size"]), int(args["seed"]))
                if "to" in args:
                    ipc.send(int(args["to"]), "big", data)
                else:
                    ipc.broadcast("big", data)
                ngx.say(os.getpid())
            }
        }
        location = /burst {
            content_by_python_block {
                to = int(ngx.req.get_uri_args()["to"])
                for k in range(10000):
                    ipc.send(to, "seq", str(k))
                    if k % 500 == 0:
                        await ngx.sleep(0)
                ngx.say(os.getpid())
            }
        }
        location = /misuse {
            content_by_python_block {
                try:
                    ipc.reply("x", "y")
                except ngx.WrongContextError as exc:
                    ngx.say(exc)
                ngx.say(INIT_ERROR)
                ngx.say(ipc.sender)
            }
        }
        location = /status { pyngx_status; }
    }
}
"""


def notes(d: Daemon) -> list[list[str]]:
    path = d.prefix / "logs" / "ipc.txt"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_notes(d: Daemon, pred: Callable[[list[list[str]]], object], timeout: float = 15, what: str = "") -> list[list[str]]:
    return wait_until(lambda: pred(notes(d)) and notes(d), timeout, what=what or "notes")


def agent(d: Daemon) -> int:
    """The agent's pid (0 while there is not exactly one)."""
    found = [p for p in children(d.master_pid) if "privileged agent" in proc_title(p)]
    return found[0] if len(found) == 1 else 0


def ask(d: Daemon, path: str) -> str:
    status, body = d.get(path)
    assert status == 200, body
    return body.decode().strip()


def conf(generation: int) -> str:
    return CONF.replace("GEN_VALUE", str(generation))


def start(daemon: Callable[..., Daemon]) -> tuple[Daemon, list[int], int]:
    d = daemon(conf(1))
    workers = wait_until(lambda: len(d.workers()) == 2 and d.workers(), what="two workers")
    return d, workers, wait_until(lambda: agent(d), what="the agent")


def test_send_reply_broadcast_and_errors(daemon: Callable[..., Daemon]) -> None:
    d, workers, agent_pid = start(daemon)
    # to the agent, and the answer comes back to the sender
    me = ask(d, f"/send?to={agent_pid}&data=hi")
    got = wait_notes(d, lambda n: any(w[1] == "pong" for w in n))
    assert [str(agent_pid), "ping", me, "str", "hi", "1"] in got
    assert [me, "pong", str(agent_pid), "hi"] in got
    # to itself
    me = ask(d, "/send?to=self&data=self")
    wait_notes(d, lambda n: [me, "ping", me, "str", "self", "1"] in n)
    # every worker and the agent, the sender included
    sender = ask(d, "/broadcast?data=all")
    got = wait_notes(d, lambda n: sum(w[1:3] == ["ping", sender] and w[4] == "all" for w in n) == 3)
    assert sorted(int(w[0]) for w in got if w[1:3] == ["ping", sender] and w[4] == "all") == sorted([*workers, agent_pid])
    # the master, and pids that are not ours
    for pid in (d.master_pid, 1, 4194304 + 1):
        assert ask(d, f"/send?to={pid}") == "IPCError: no such process"
    lines = ask(d, "/misuse").splitlines()
    assert lines[0].startswith("ipc.reply: API disabled in the context of content_by_python")
    assert lines[1] == "ipc.receive: API disabled in the context of init_by_python"
    assert lines[2] == "None"


def test_big_payloads_arrive_whole(daemon: Callable[..., Daemon]) -> None:
    d, workers, agent_pid = start(daemon)
    cases = [("bytes", 1 << 20, 1), ("str", 1 << 20, 2), ("bytes", 16 << 20, 3), ("str", 16 << 20, 4)]
    for kind, size, seed in cases:
        ask(d, f"/big?to={agent_pid}&kind={kind}&size={size}&seed={seed}")
    got = wait_notes(d, lambda n: sum(w[1] == "big" for w in n) == 4, timeout=30)
    for (kind, size, seed), line in zip(cases, [w for w in got if w[1] == "big"]):
        data = random.Random(seed).randbytes(size)
        raw = (data.hex()[:size - 2] + "é").encode() if kind == "str" else data
        assert line[0] == str(agent_pid) and line[3] == kind
        assert line[5] == hashlib.sha256(raw).hexdigest()
    # a 16 MiB broadcast reaches the three processes
    ask(d, "/big?kind=bytes&size=16777216&seed=5")
    got = wait_notes(d, lambda n: sum(w[1] == "big" for w in n) == 7, timeout=30)
    digest = hashlib.sha256(random.Random(5).randbytes(16 << 20)).hexdigest()
    assert sorted(int(w[0]) for w in got if w[1] == "big" and w[5] == digest) == sorted([*workers, agent_pid])


def test_ten_thousand_in_order(daemon: Callable[..., Daemon]) -> None:
    d, workers, agent_pid = start(daemon)
    sender = ask(d, f"/burst?to={agent_pid}")
    got = wait_notes(d, lambda n: any(w[1] == "seq-done" for w in n), timeout=30)
    assert [str(agent_pid), "seq-done", sender] in got
    assert not [w for w in got if w[1] == "seq-bad"]
    stats = d.get("/status")[1].decode()
    assert '"ipc"' in stats and '"sent"' in stats


def test_reload_and_respawn(daemon: Callable[..., Daemon]) -> None:
    d, old_workers, old_agent = start(daemon)
    d.write_conf(conf(2))
    d.signal(signal.SIGHUP)
    new_workers = wait_until(lambda: (w := d.workers()) and not set(w) & set(old_workers) and len(w) == 2 and w,
                             20, what="a new generation")
    wait_until(lambda: not any(pid_alive(p) for p in (*old_workers, old_agent)), 20, what="the old generation to exit")
    new_agent = wait_until(lambda: agent(d), what="the new agent")
    assert new_agent != old_agent
    # the new generation is reachable, and broadcast reaches exactly it
    sender = ask(d, f"/send?to={new_agent}&data=again")
    wait_notes(d, lambda n: [str(new_agent), "ping", sender, "str", "again", "2"] in n)
    sender = ask(d, "/broadcast?data=gen2")
    got = wait_notes(d, lambda n: sum(w[4:] == ["gen2", "2"] for w in n) == 3)
    assert sorted(int(w[0]) for w in got if w[4:] == ["gen2", "2"]) == sorted([*new_workers, new_agent])
    for pid in old_workers:
        assert ask(d, f"/send?to={pid}") == "IPCError: no such process"
    # a killed worker is replaced, and its successor answers
    victim = new_workers[0]
    os.kill(victim, signal.SIGKILL)
    d.expect_errors = True  # the exit is logged at [alert], as nginx does
    fresh = wait_until(lambda: (w := [p for p in d.workers() if p not in new_workers]) and w[0], 15, what="a respawn")
    wait_until(lambda: ask(d, f"/send?to={fresh}&data=respawned").isdigit(), 10, what="the respawned worker")
    wait_notes(d, lambda n: any(w[0] == str(fresh) and w[4] == "respawned" for w in n))
    bad = [ln for ln in d.error_log().splitlines() if "[error]" in ln or ("[alert]" in ln and "signal 9" not in ln)]
    assert not bad


def test_stranger_is_refused(daemon: Callable[..., Daemon]) -> None:
    d, workers, agent_pid = start(daemon)
    code = f"""
import socket, struct
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("\\0pyngx-ipc-{d.master_pid}-{agent_pid}")
name, data = b"ping", b"intruder"
s.settimeout(5)
try:
    s.sendall(struct.pack("<IHB", len(name) + len(data), len(name), 0) + name + data)
    print("closed" if s.recv(10) == b"" else "open")
except (ConnectionResetError, BrokenPipeError):
    print("closed")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "closed", out.stderr
    log = d.wait_log("ipc: refused a connection from process")
    assert "not a process of this master" in log
    assert not any("intruder" in w for w in map(" ".join, notes(d)))
    # a name nobody bound: the stranger cannot even reach a process that is not there
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert probe.connect_ex(f"\0pyngx-ipc-{d.master_pid}-1") != 0
    finally:
        probe.close()
