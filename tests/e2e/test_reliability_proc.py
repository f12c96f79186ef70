"""The process tree under abuse: kill storms, a stale pid file, edited code, failing callbacks."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

from support import children, pid_alive, proc_title, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log info;
worker_shutdown_timeout 10s;
events { worker_connections 64; }
http {
    server {
        listen 127.0.0.1:@PORT@;
        location / { return 200 "ok"; }
    }
}
"""


def ready_workers(d: Any) -> dict[int, str]:
    """pid -> title of the master's live worker children."""
    return {p: t for p in children(d.master_pid) if pid_alive(p) and "worker process" in (t := proc_title(p))}


def test_a_ready_worker_killed_from_outside_is_replaced_at_once(daemon: Any) -> None:
    d = daemon(CONF)
    d.expect_errors = True  # each kill is an [alert] line, as in nginx
    wait_until(lambda: len(ready_workers(d)) == 2, 10)
    longest = 0.0
    for _ in range(6):
        before = ready_workers(d)
        victim = min(before)
        # only once the replacement of the last victim has said it is ready
        wait_until(lambda: "start worker process" in d.error_log().rsplit("exited on signal 9", 1)[-1], 10)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        after = wait_until(lambda: (w := ready_workers(d)) and victim not in w and len(w) == 2 and w, 10)
        assert after
        longest = max(longest, time.monotonic() - t0)
        wait_until(lambda: d.answers(), 5)
    log = d.error_log()
    assert "respawning in" not in log, "a ready worker that was killed was respawned with back-off"
    assert longest < 3.0, f"a killed worker took {longest:.2f}s to be replaced"
    assert d.get("/")[0] == 200


BROKEN_INIT = CONF.replace("http {", "http {\n    init_worker_by_python_block { import os; os._exit(3) }")


def test_a_worker_dying_before_ready_is_still_backed_off(daemon: Any) -> None:
    d = daemon(BROKEN_INIT, start=False)
    d.start(wait=False)
    d.expect_errors = True
    d.wait_log("respawning in 0.4s")
    assert pid_alive(d.master_pid)


def test_signaller_checks_the_pid_is_a_master_of_this_prefix(daemon: Any) -> None:
    d = daemon(CONF)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        d.pid_file().write_text(f"{bystander.pid}\n")
        result = d.pyngx("-s", "reload")
        assert result.returncode == 1
        assert f"process {bystander.pid} is not a pyngx master process" in result.stderr
        assert "no signal sent" in result.stderr
        assert bystander.poll() is None, "the unrelated process got the signal"
    finally:
        bystander.kill()
        bystander.wait()
    # a pyngx master, of another prefix
    other = daemon(CONF)
    d.pid_file().write_text(f"{other.master_pid}\n")
    result = d.pyngx("-s", "reload")
    assert result.returncode == 1 and "is the pyngx master process of prefix" in result.stderr
    assert "SIGHUP" not in other.error_log()
    # its own master is signalled
    d.pid_file().write_text(f"{d.master_pid}\n")
    result = d.pyngx("-s", "reload")
    assert result.returncode == 0, result.stderr


SLOW = """
worker_processes 1;
error_log logs/error.log info;
worker_shutdown_timeout 10s;
http {
    server {
        listen 127.0.0.1:@PORT@;
        location = /slow {
            content_by_python_block {
                ngx.log(ngx.NOTICE, "slow request begins")
                await ngx.sleep(1.0)
                raise ValueError("raised by generation one")
            }
        }
    }
}
"""


def test_old_generation_tracebacks_show_its_own_source(daemon: Any) -> None:
    d = daemon(SLOW)
    d.expect_errors = True
    answer: list[int] = []
    client = threading.Thread(target=lambda: answer.append(d.get("/slow")[0]))
    client.start()
    d.wait_log("slow request begins")
    # the edited file has other text at the line that raises
    d.write_conf(SLOW.replace('raise ValueError("raised by generation one")', 'ngx.say("generation two")'))
    d.signal(signal.SIGHUP)
    d.wait_log("reload: generation 2 is serving")
    client.join(15)
    assert answer == [500]
    log = d.wait_log("raised by generation one")
    tb = log.split("content_by_python error", 1)[1]
    assert 'raise ValueError("raised by generation one")' in tb.split("ValueError: raised by")[0], tb
    assert 'ngx.say("generation two")' not in tb


REPEATING = """
worker_processes 1;
error_log logs/error.log info;
http {
    init_worker_by_python_block {
        n = [0]
        def tick(premature):
            n[0] += 1
            if n[0] > 60:
                return
            raise RuntimeError(f"failure number {n[0]}")
        ngx.timer.every(0.005, tick)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location / { return 200 "ok"; }
    }
}
"""


def test_repeated_identical_failures_are_logged_once_with_a_count(daemon: Any) -> None:
    d = daemon(REPEATING)
    d.expect_errors = True
    wait_until(lambda: "failure number 1\n" in d.error_log(), 10)
    time.sleep(0.5)  # the other 59 happen meanwhile; none may be logged
    log = d.error_log()
    assert log.count("Traceback (most recent call last)") == 1, log
    d.signal(signal.SIGQUIT)  # the count is written at exit at the latest
    log = d.wait_log("repeated 59 times")
    assert "RuntimeError: failure number 60 (repeated 59 times in" in log
    assert log.count("Traceback (most recent call last)") == 1
