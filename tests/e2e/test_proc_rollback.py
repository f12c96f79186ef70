"""A reload whose new generation never serves is rolled back whole.

The new config moves the pid file, the error log, the listen address (and,
as root, the user); its workers exit at start or hang in
init_worker_by_python. Afterwards the old workers serve on, and every file
and socket is as it was: the master writes A's error log, the pid file is
A's, B's files and port are gone, ``-s reload`` reported the failure, and
``-s quit`` leaves nothing behind.
"""
from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from support import Daemon, pid_alive, wait_until

CONF_A = """
worker_processes 2;
error_log logs/error.log notice;
events { worker_connections 64; }
http {
    server {
        listen 127.0.0.1:@PORT@;
        location = /gen { content_by_python_block { ngx.say("A ", ngx.worker.pid()) } }
    }
}
"""

CONF_B = """
worker_processes 2;
pid logs/b.pid;
error_log logs/b.log notice;
events { worker_connections 64; }
http {
    init_worker_by_python_block {
        INIT
    }
    server {
        listen 127.0.0.1:@PORT2@;
        location = /gen { content_by_python_block { ngx.say("B") } }
    }
}
"""

EXITS = "import os; os._exit(3)"
HANGS = "import time; time.sleep(3600)"


def signaller(d: Daemon, conf: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``pyngx -s ...`` run with CONF (the operator's copy of the config the master runs)."""
    cmd = [sys.executable, "-m", "pyngx", "-p", str(d.prefix), "-c", str(conf), *args]
    return subprocess.run(cmd, cwd=d.prefix, capture_output=True, text=True, timeout=timeout)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def open_files(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("Uid:"))
    return int(line.split()[1])


def start_and_break(daemon: Callable[..., Daemon], conf_a: str, conf_b: str
                    ) -> tuple[Daemon, Path, list[int], subprocess.CompletedProcess[str]]:
    """Start A, keep a copy of its config, write B over it, ``-s reload`` with A's copy."""
    d = daemon(conf_a)
    d.expect_errors = True  # the failed reload is an [alert], the exits of B's workers too
    old = wait_until(lambda: len(w := d.workers()) == 2 and w, what="A's workers")
    copy = d.prefix / "conf" / "a.conf"
    copy.write_text(d.render(conf_a))
    d.write_conf(conf_b)
    return d, copy, old, signaller(d, copy, "-s", "reload")


def assert_rolled_back(d: Daemon, copy: Path, old: list[int], reload: subprocess.CompletedProcess[str]) -> None:
    logs = d.prefix / "logs"
    master = d.master_pid
    assert reload.returncode == 1, reload.stderr
    assert "reload failed:" in reload.stderr and "keep" in reload.stderr + d.error_log()
    # the old generation serves on, with the same workers, on its own address only
    status, body = d.get("/gen")
    assert status == 200 and body.startswith(b"A ")
    wait_until(lambda: sorted(d.workers()) == sorted(old), 10, what="only A's workers to be left")
    wait_until(lambda: refused(d.port2), 10, what="B's listen address to be closed")
    # the pid file is A's again, B's is gone
    assert (logs / "pyngx.pid").read_text().strip() == str(master)
    assert not (logs / "b.pid").exists()
    # the master writes A's error log again and holds B's no more
    files = open_files(master)
    assert str(logs / "error.log") in files and str(logs / "b.log") not in files
    assert signaller(d, copy, "-s", "reopen").returncode == 0
    d.wait_log("signal 10 (SIGUSR1) received, reopening logs")
    assert "reopening logs" not in (logs / "b.log").read_text()
    # -s quit (through A's pid file) leaves no pid file and no verdict behind
    assert signaller(d, copy, "-s", "quit").returncode == 0
    wait_until(lambda: not pid_alive(master), 15, what="the master to exit")
    left = sorted(p.name for p in logs.iterdir() if p.name.endswith((".pid", ".reload", ".tmp")))
    assert left == []


def test_workers_exiting_at_start_roll_back_pid_log_and_listen(daemon: Callable[..., Daemon]) -> None:
    d, copy, old, reload = start_and_break(daemon, CONF_A, CONF_B.replace("INIT", EXITS))
    assert "keep exiting right after start" in reload.stderr
    assert_rolled_back(d, copy, old, reload)


@pytest.mark.timeout(90)
def test_workers_hanging_in_init_worker_roll_back(daemon: Callable[..., Daemon]) -> None:
    d, copy, old, reload = start_and_break(daemon, CONF_A, CONF_B.replace("INIT", HANGS))
    assert "not ready after" in reload.stderr
    assert_rolled_back(d, copy, old, reload)
    # the hung workers did not outlive the rollback (TERM does not reach them: KILL did)
    assert "did not exit in time, killing it" in (d.prefix / "logs" / "b.log").read_text() + d.error_log()


def test_reload_that_moves_the_pid_file_answers_the_signaller(daemon: Callable[..., Daemon]) -> None:
    """A reload that serves: the verdict is where the signaller waits, and nothing is left at exit."""
    d = daemon(CONF_A)
    copy = d.prefix / "conf" / "a.conf"
    copy.write_text(d.render(CONF_A))
    d.write_conf(CONF_B.replace("INIT", "pass"))
    master = d.master_pid
    reload = signaller(d, copy, "-s", "reload", timeout=30)
    assert reload.returncode == 0, reload.stderr
    logs = d.prefix / "logs"
    assert (logs / "b.pid").read_text().strip() == str(master) and not (logs / "pyngx.pid").exists()
    wait_until(lambda: d.get("/gen", port=d.port2)[1] == b"B\n", 10, what="B to serve")
    assert d.pyngx("-s", "quit").returncode == 0
    wait_until(lambda: not pid_alive(master), 15, what="the master to exit")
    assert sorted(p.name for p in logs.iterdir() if p.name.endswith((".pid", ".reload"))) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run workers as another user")
def test_rollback_restores_the_user_and_the_owner_of_the_logs(daemon: Callable[..., Daemon]) -> None:
    nobody, other = pwd.getpwnam("nobody"), pwd.getpwnam("daemon")
    conf_a = CONF_A.replace("worker_processes 2;", "worker_processes 2;\nuser nobody;")
    conf_b = (CONF_A.replace("worker_processes 2;", "worker_processes 2;\nuser daemon;")
              .replace("http {", "http {\n    init_worker_by_python_block { import os; os._exit(3) }"))
    d, copy, old, reload = start_and_break(daemon, conf_a, conf_b)
    assert reload.returncode == 1, reload.stderr
    log = d.prefix / "logs" / "error.log"
    assert os.stat(log).st_uid == nobody.pw_uid  # B's user got it during the reload; A's has it back
    assert all(uid_of(p) == nobody.pw_uid for p in old)
    victim = old[0]
    os.kill(victim, signal.SIGKILL)  # its replacement is A's: A's user, not B's
    new = wait_until(lambda: [p for p in d.workers() if p not in old] or None, 10, what="a new worker")
    assert uid_of(new[0]) == nobody.pw_uid != other.pw_uid
    status, body = d.get("/gen")
    assert status == 200 and body.startswith(b"A ")
