"""ipc.request in the real daemon: a worker awaits the agent's reply; a killed peer fails the request."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from support import Daemon, wait_until

CONF = """
error_log logs/error.log info;
worker_processes 1;
http {
    python_shared_dict pids 1m;
    init_by_python_block {
        import os
        from pyngx import ipc, process
        process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        if process.type() == "privileged agent":
            ngx.shared.pids.set("agent", os.getpid())

        def add(data):
            ipc.reply("sum", str(sum(int(x) for x in data.split())))

        async def hang(data):
            ngx.shared.pids.set("hanging", 1)
            await ngx.sleep(60)

        ipc.receive({"add": add, "hang": hang})
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /agent {
            content_by_python_block {
                ngx.say(ngx.shared.pids.get("agent"), " ", ngx.shared.pids.get("hanging"))
            }
        }
        location = /ask {
            content_by_python_block {
                args = ngx.req.get_uri_args()
                started = ngx.now()
                try:
                    ngx.say(await ipc.request(ngx.shared.pids.get("agent") or 0, args["name"], args["data"],
                                              timeout=float(args["timeout"])))
                except (ngx.IPCError, ngx.TimeoutError) as exc:
                    ngx.say(type(exc).__name__, ": ", exc, " after ", round(ngx.now() - started))
            }
        }
    }
}
"""


def test_a_worker_awaits_the_agent_s_reply(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF)
    wait_until(lambda: d.get("/ask?name=add&data=1+2+3&timeout=5") == (200, b"6\n"), 10, what="the agent's answer")
    assert d.get("/ask?name=nobody&data=x&timeout=5") == (200, b"IPCError: no handler after 0\n")
    assert d.get("/ask?name=hang&data=x&timeout=0.2") == (200, b"TimeoutError: timeout after 0\n")


def test_a_peer_that_dies_fails_the_request_at_once(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF)
    d.expect_errors = True  # the master logs the agent's death at [alert]
    wait_until(lambda: d.get("/ask?name=add&data=1&timeout=5") == (200, b"1\n"), 10, what="the agent")
    answer: list[Any] = []
    asking = threading.Thread(target=lambda: answer.append(d.get("/ask?name=hang&data=x&timeout=30", timeout=40)))
    asking.start()
    try:
        agent, hanging = wait_until(lambda: (words := d.get("/agent")[1].split())[1] == b"1" and words, 10,
                                    what="the agent handling the request")
        started = time.monotonic()
        os.kill(int(agent), signal.SIGKILL)
    finally:
        asking.join(40)
    assert answer == [(200, b"IPCError: process exited after 0\n")]
    assert time.monotonic() - started < 5
    d.wait_log("exited on signal 9")
    assert "[error]" not in d.error_log()  # the death is an [alert]; the worker's request failed cleanly
