"""worker_rlimit_nofile: the open-file limit of workers, the agent and a single process; the master keeps its own."""
from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

from support import Daemon, children, proc_title, wait_until

CONF = """
worker_processes 2;
worker_rlimit_nofile {limit};
{extra}
error_log logs/error.log info;
events {{ worker_connections 64; }}
http {{
    init_by_python_block {{ ngx.process.enable_privileged_agent() }}
    server {{ listen 127.0.0.1:@PORT@; location / {{ return 200 "ok\\n"; }} }}
}}
"""


def open_files(pid: int) -> tuple[str, str]:
    """(soft, hard) of /proc/PID/limits' "Max open files" line."""
    line = next(ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines() if ln.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return soft, hard


def served_by(d: Daemon) -> list[int]:
    """The workers and the agent, once all three run."""
    def three() -> list[int] | None:
        pids = [p for p in children(d.master_pid) if "worker process" in proc_title(p)
                or "privileged agent process" in proc_title(p)]
        return pids if len(pids) == 3 else None
    return wait_until(three, what="two workers and the agent")


def test_workers_and_agent_get_the_limit_the_master_keeps_its_own(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF.format(limit=4096, extra=""))
    for pid in served_by(d):
        assert open_files(pid) == ("4096", "4096"), proc_title(pid)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # what the master inherited from this test
    assert open_files(d.master_pid) == (str(soft), str(hard))
    assert d.get("/") == (200, b"ok\n")


def test_single_process_gets_the_limit(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF.format(limit=4096, extra="master_process off;").replace(
        "init_by_python_block { ngx.process.enable_privileged_agent() }", ""))
    assert d.get("/") == (200, b"ok\n")
    assert open_files(d.master_pid) == ("4096", "4096")


def test_a_limit_the_kernel_refuses_is_logged_and_workers_serve(daemon: Callable[..., Daemon]) -> None:
    # above fs.nr_open (1048576 by default): refused even for root (EPERM), as nginx's would be
    d = daemon(CONF.format(limit=2000000000, extra=""))
    d.expect_errors = True
    pids = served_by(d)
    d.wait_log("setrlimit(RLIMIT_NOFILE, 2000000000) failed (1: Operation not permitted)")
    lines = [ln for ln in d.error_log().splitlines() if "setrlimit(RLIMIT_NOFILE" in ln]
    assert len(lines) >= 3 and all("[alert]" in ln for ln in lines), lines
    assert d.get("/") == (200, b"ok\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert all(open_files(pid) == (str(soft), str(hard)) for pid in pids)


def test_an_invalid_limit_is_a_config_error(daemon: Callable[..., Daemon]) -> None:
    for bad, reason in (("abc", 'invalid number "abc"'), ("0", 'invalid number "0", it must be at least 1')):
        d = daemon(CONF.format(limit=bad, extra=""), start=False)
        r = d.pyngx("-t")
        assert r.returncode == 1
        assert f'"worker_rlimit_nofile" directive {reason} in conf/pyngx.conf:3' in r.stderr, r.stderr
