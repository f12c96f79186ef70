"""The event loop watchdog: a blocked worker is seen, survived, and replaced (worker_stall_*)."""
from __future__ import annotations

import json
import re
import threading
from typing import Any

from support import Daemon, children, pid_alive, proc_title, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log warn;
worker_stall_warn 200ms;
worker_stall_timeout @TIMEOUT@;
http {
    python_shared_dict flags 1m;
    init_by_python_block {
        import time
        from pyngx import ipc, process
        process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        def block_once(data):
            if process.type() == "privileged agent" and ngx.shared.flags.add("agent blocked", True) is False:
                time.sleep(30)  # the agent's loop is stuck here

        ipc.receive("block", block_once)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location = /who { content_by_python_block { ngx.say(ngx.worker.pid(), " ", ngx.worker.id()) } }
        location = /block {
            content_by_python_block {
                seconds = float(ngx.var.arg_s)
                time.sleep(seconds)
                ngx.say("slept")
            }
        }
        location = /regex {
            content_by_python_block {
                import re
                re.match(r"(a+)+$", "a" * 40 + "b")  # C code that keeps the GIL for minutes
            }
        }
        location = /agent {
            content_by_python_block {
                ipc.broadcast("block", "")
                ngx.say("ok")
            }
        }
        location = /status { pyngx_status; }
    }
}
"""


def conf(timeout: str) -> str:
    return CONF.replace("@TIMEOUT@", timeout)


def sleep_line(d: Daemon) -> str:
    """FILE:LINE of the time.sleep(seconds) of /block in the written config."""
    lines = d.conf_path.read_text().splitlines()
    return f"{d.conf_path}:{lines.index('                time.sleep(seconds)') + 1}"


def who(d: Daemon) -> tuple[int, int]:
    status, body = d.get("/who", timeout=5)
    assert status == 200
    pid, wid = body.split()
    return int(pid), int(wid)


def block_in_background(d: Daemon, seconds: float) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(d.get(f"/block?s={seconds}", timeout=seconds + 10))
        except OSError as exc:  # the worker was killed under the request
            out.append(exc)
    thread = threading.Thread(target=go)
    thread.start()
    return thread, out


def test_a_blocked_worker_is_reported_with_its_config_line_and_the_other_serves(daemon: Any) -> None:
    d = daemon(conf("60s"))
    wait_until(lambda: len(d.workers()) == 2, what="two workers")
    thread, out = block_in_background(d, 1.5)
    d.wait_log("blocked for")
    blocked = int(re.search(r"\] (\d+)#0: event loop of this worker process blocked", d.error_log()).group(1))
    answered = {who(d)[0] for _ in range(20)}  # new connections, each answered at once
    assert blocked not in answered and len(answered) == 1
    thread.join(15)
    assert out == [(200, b"slept\n")]
    log = d.wait_log("ran again after a stall of")
    warning = next(line for line in log.splitlines() if "blocked for" in line)
    assert "[warn]" in warning and "(worker_stall_warn 200ms)" in warning
    assert f"in content_by_python of location = /block at {sleep_line(d)}, stack" in warning
    assert "time.sleep(seconds)" in log
    lasted = float(re.search(r"after a stall of (\d+\.\d+)s", log).group(1))
    assert 1.3 < lasted < 3.0, lasted
    stall = {p["pid"]: p["stall"] for p in json.loads(d.get("/status")[1])["processes"]}[blocked]
    assert stall["stalls"] == 1 and 1.3 < stall["longest"] < 3.0 and stall["current"] == 0


def test_past_the_timeout_the_worker_is_replaced_and_serves_again(daemon: Any) -> None:
    d = daemon(conf("1s"))
    d.expect_errors = True  # the alerts are the point
    wait_until(lambda: len(d.workers()) == 2, what="two workers")
    before = {wid: pid for pid, wid in (who(d) for _ in range(30))}
    thread, out = block_in_background(d, 30)
    d.wait_log("has not run its event loop", timeout=15)
    thread.join(15)
    assert len(out) == 1 and isinstance(out[0], OSError)  # its connection died with it
    log = d.error_log()
    stuck = int(re.search(r"worker process (\d+) has not run its event loop for", log).group(1))
    assert f"worker process {stuck} exited on signal 9" in d.wait_log(f"worker process {stuck} exited on signal 9")
    assert re.search(rf"\] {stuck}#0: event loop of this worker process blocked for \d+\.\d+s "
                     rf"\(worker_stall_timeout 1s\), the master replaces it in content_by_python of location "
                     rf"= /block at {re.escape(sleep_line(d))}", log)
    assert "its stack is logged above" in log
    wid = next(w for w, p in before.items() if p == stuck)
    # the replacement has the same worker id and serves
    fresh = wait_until(lambda: next((p for p, w in [who(d)] if w == wid and p != stuck), None),
                       what=f"worker {wid} to answer from a new process")
    assert fresh in d.workers() and not pid_alive(stuck)
    assert not [ln for ln in d.error_log().splitlines() if "[error]" in ln or "[crit]" in ln or "[emerg]" in ln]


def test_a_stuck_agent_is_replaced_too(daemon: Any) -> None:
    d = daemon(conf("1s"))
    d.expect_errors = True

    def agent() -> int:
        return next((p for p in children(d.master_pid) if "privileged agent" in proc_title(p)), 0)
    first = wait_until(agent, what="the agent")
    wait_until(lambda: any(p["pid"] == first and p["ready"] for p in json.loads(d.get("/status")[1])["processes"]),
               what="the agent to be ready")
    assert d.get("/agent") == (200, b"ok\n")
    log = d.wait_log("has not run its event loop", timeout=15)
    assert f"privileged agent process {first} has not run its event loop" in log
    assert re.search(rf"\] {first}#0: event loop of this privileged agent process blocked for .* in "
                     rf"init_worker_by_python at {re.escape(str(d.conf_path))}:\d+, stack", log)
    d.wait_log(f"privileged agent process {first} exited on signal 9")
    wait_until(lambda: agent() not in (0, first), what="a fresh agent")


def test_a_loop_held_in_c_code_gets_a_thread_dump_from_the_master_then_is_replaced(daemon: Any) -> None:
    """A catastrophic regex keeps the GIL: the watchdog thread cannot run, the master asks
    faulthandler for every thread's stack (SIGUSR2), then kills and replaces the worker."""
    d = daemon(conf("1s"))
    d.expect_errors = True
    wait_until(lambda: len(d.workers()) == 2, what="two workers")
    thread = threading.Thread(target=lambda: _swallow(lambda: d.get("/regex", timeout=20)))
    thread.start()
    log = d.wait_log("its threads' stacks are logged above), killing it", timeout=20)
    stuck = int(re.search(r"worker process (\d+) has not run its event loop for [\d.]+s \(worker_stall_timeout 1s; "
                          r"it could not log its stack\), its threads' stacks follow", log).group(1))
    lines = d.conf_path.read_text().splitlines()
    regex_line = next(i + 1 for i, text in enumerate(lines) if "re.match(" in text)
    assert f'File "{d.conf_path}", line {regex_line} in __pyngx_handler__' in log
    assert "event loop of this worker process blocked" not in log  # its own thread never ran
    d.wait_log(f"worker process {stuck} exited on signal 9")
    thread.join(20)
    wait_until(lambda: len([p for p in d.workers() if p != stuck]) == 2, what="a replacement worker")


def _swallow(fn: Any) -> None:
    try:
        fn()
    except OSError:
        pass


def test_a_single_process_warns_and_is_not_killed(daemon: Any) -> None:
    """master_process off: warnings and counters, no master to replace the process."""
    d = daemon(conf("1s").replace("worker_processes 2;", "master_process off;\nworker_processes 1;")
               .replace("worker_stall_warn 200ms;", "worker_stall_warn 100ms;"))
    assert d.get("/block?s=1.5", timeout=10) == (200, b"slept\n")
    log = d.wait_log("ran again after a stall of")
    assert "event loop of this single process blocked for" in log and "(worker_stall_warn 100ms)" in log
    assert "worker_stall_timeout" not in log and d.get("/who")[0] == 200  # past 1s, still the same process
    stall = json.loads(d.get("/status")[1])["processes"][0]["stall"]
    assert stall["stalls"] == 1 and stall["longest"] > 1.3
