"""Pipes in the real daemon: content handlers, timers, the agent, single mode, ``pyngx -e``,
and no orphans when a worker is SIGKILLed or the daemon stops.

Handlers report child pids in ``logs/pids.txt`` (one ``write()`` per line on
an O_APPEND file) so the test can watch the children from outside.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support import Daemon, children, pid_alive, proc_title, wait_until

SETUP = """
        import os
        from pyngx import pipe, shell, process
        KEEP = []  # Procs kept alive across requests (a dropped Proc is killed, as in OpenResty)

        def note(*words):
            line = " ".join(str(w) for w in words) + "\\n"
            fd = os.open(ngx.config.prefix() + "logs/pids.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
"""

METHODS = r"""
            out = []
            p = pipe.spawn(["echo", "hello"])
            out.append(await p.stdout_read_line())
            out.append(await p.wait())
            p = pipe.spawn("printf 'a\nb'; echo e >&2; exit 3")
            out.append(await p.stdout_read_line())
            try:
                await p.stdout_read_line()
            except ngx.ClosedError as e:
                out.append((str(e), e.partial))
            out.append(await p.stderr_read_all())
            out.append(await p.wait())
            p = pipe.spawn("printf abcdef", merge_stderr=True)
            out.append(await p.stdout_read_bytes(4))
            out.append(await p.stdout_read_any(10))
            p = pipe.spawn(["cat"])
            out.append(await p.write("ping"))
            p.shutdown("stdin")
            out.append(await p.stdout_read_all())
            out.append(await p.wait())
            p = pipe.spawn(["sleep", "30"])
            p.set_timeouts(None, 0.05, None, 0.05)
            for call in (p.stdout_read_line, p.wait):
                try:
                    await call()
                except ngx.TimeoutError as e:
                    out.append(str(e))
            p.set_timeouts(None, None, None, 10)
            out.append(p.kill(15))
            out.append(await p.wait())
            out.append(await shell.run("echo yes; echo he >&2"))
            out.append(await shell.run("sleep 30", timeout=0.1))
            out.append(await shell.run("yes", max_size=5))
            for item in out:
                ngx.say(repr(item))
"""

EXPECTED = [
    "b'hello'", "(True, 'exit', 0)", "b'a'", "('closed', b'b')", "b'e\\n'", "(False, 'exit', 3)",
    "b'abcd'", "b'ef'", "4", "b'ping'", "(True, 'exit', 0)", "'timeout'", "'timeout'", "True",
    "(False, 'signal', 15)", "(True, b'yes\\n', b'he\\n', 'exit', 0)", "(False, b'', b'', 'timeout', None)",
    "(False, b'y\\ny\\ny', b'', 'too much data', None)",
]


def conf(*, workers: int = 1, main: str = "", init_worker: str = "", agent: bool = False) -> str:
    enable = "process.enable_privileged_agent()" if agent else "pass"
    return f"""
error_log logs/error.log info;
worker_processes {workers};
worker_shutdown_timeout 3s;
{main}
events {{ worker_connections 256; }}
http {{
    init_by_python_block {{
        from pyngx import process
        {enable}
    }}
    init_worker_by_python_block {{
{SETUP}
{init_worker}
    }}
    server {{
        listen 127.0.0.1:@PORT@;
        location = /fast {{ return 200 "fast"; }}
        location = /methods {{
            content_by_python_block {{
{METHODS}
            }}
        }}
        location = /slow {{
            content_by_python_block {{
                p = pipe.spawn(["sleep", "60"])
                p.set_timeouts(wait_timeout=0)
                note("slow", p.pid())
                ok, reason, status = await p.wait()
                ngx.say(ok, " ", reason, " ", status)
            }}
        }}
        location = /many {{
            content_by_python_block {{
                import asyncio
                procs = [pipe.spawn(["sh", "-c", "sleep 0.5; echo $0", str(i)]) for i in range(100)]
                lines = await asyncio.gather(*(p.stdout_read_line() for p in procs))
                codes = await asyncio.gather(*(p.wait() for p in procs))
                ngx.say(sum(int(x) for x in lines), " ", all(c == (True, "exit", 0) for c in codes))
            }}
        }}
        location = /keep {{
            content_by_python_block {{
                # a request's own children die with it (as OpenResty's): a timer's outlive it
                import asyncio
                started = asyncio.get_running_loop().create_future()
                def start(premature):
                    p = pipe.spawn("sleep 60 | cat & sleep 60")
                    KEEP.append(p)
                    note("keep", p.pid(), ngx.worker.pid())
                    started.set_result(p.pid())
                ngx.timer.at(0, start)
                ngx.say(await started)
            }}
        }}
    }}
}}
"""


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) members of process group PGID."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry))
    return out


def notes(d: Daemon, kind: str) -> list[list[str]]:
    path = d.prefix / "logs" / "pids.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[1:] for line in lines if line.split()[0] == kind]


def test_every_method_from_a_content_handler(daemon) -> None:
    d = daemon(conf())
    status, body = d.get("/methods")
    assert status == 200, body
    assert body.decode().splitlines() == EXPECTED


def test_a_waiting_handler_does_not_delay_other_requests(daemon) -> None:
    d = daemon(conf())
    result: dict[str, object] = {}
    slow = threading.Thread(target=lambda: result.setdefault("slow", d.get("/slow", timeout=30)))
    slow.start()
    try:
        pid = int(wait_until(lambda: notes(d, "slow"), 10, what="the child")[0][0])
        for _ in range(20):  # the only worker answers while its handler waits for the child
            assert d.get("/fast", timeout=2) == (200, b"fast")
        assert slow.is_alive()
        os.kill(pid, signal.SIGTERM)
    finally:
        slow.join(30)
    assert result["slow"] == (200, b"False signal 15\n")


def test_a_hundred_pipes_at_once_while_serving(daemon) -> None:
    d = daemon(conf())
    result: dict[str, object] = {}
    many = threading.Thread(target=lambda: result.setdefault("many", d.get("/many", timeout=60)))
    many.start()
    try:
        for _ in range(10):  # the /slow test proves promptness; here: no stall, no error
            assert d.get("/fast", timeout=10) == (200, b"fast")
    finally:
        many.join(60)
    assert result["many"] == (200, f"{sum(range(100))} True\n".encode())


AGENT_JOB = """
        async def job(premature):
            if premature:
                return
            ok, out, err, reason, status = await shell.run("echo $$", timeout=5)
            note("job", process.type().replace(" ", "_"), ok, out.decode().strip())

        ngx.timer.at(0, job)
"""


def test_pipes_from_timers_in_workers_and_the_agent(daemon) -> None:
    d = daemon(conf(workers=2, init_worker=AGENT_JOB, agent=True))
    jobs = wait_until(lambda: len(notes(d, "job")) >= 3 and notes(d, "job"), 15, what="three timer jobs")
    kinds = sorted(j[0] for j in jobs)
    assert kinds == ["privileged_agent", "worker", "worker"]
    assert all(j[1] == "True" and j[2].isdigit() for j in jobs)


def test_a_sigkilled_worker_takes_its_children_along(daemon) -> None:
    d = daemon(conf())
    d.expect_errors = True  # the master logs the worker's death at [alert], as nginx does
    status, body = d.get("/keep")
    assert status == 200
    pgid = int(body)
    _, worker = map(int, notes(d, "keep")[0])
    wait_until(lambda: len(group_alive(pgid)) >= 3, 10, what="sh, sleep and cat")  # sh forks them
    # the guardian shows in ps under its title, not as a shell script
    titles = {proc_title(pid) for pid in children(worker)}
    assert "pyngx: pipe guard" in titles and not any("trap" in t for t in titles), titles
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(worker)], capture_output=True, text=True).stdout
    assert "pyngx: pipe guard" in out.splitlines()
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not group_alive(pgid), 10, what="the worker's children to die")
    wait_until(lambda: d.get("/fast", timeout=2) == (200, b"fast"), 10, what="a new worker")


@pytest.mark.parametrize("signo", [signal.SIGQUIT, signal.SIGTERM])
def test_stopping_the_daemon_leaves_no_orphans(daemon, signo: int) -> None:
    d = daemon(conf(agent=True))
    groups = [int(d.get("/keep")[1]) for _ in range(3)]
    assert all(group_alive(g) for g in groups)
    master = d.master_pid
    d.signal(signo)
    wait_until(lambda: not pid_alive(master), 15, what="the master to exit")
    wait_until(lambda: not any(group_alive(g) for g in groups), 10, what="every child to die")


def test_a_reload_retires_the_old_workers_children(daemon) -> None:
    d = daemon(conf())
    pgid = int(d.get("/keep")[1])
    _, old_worker = map(int, notes(d, "keep")[0])
    assert group_alive(pgid)
    d.signal(signal.SIGHUP)
    wait_until(lambda: not pid_alive(old_worker), 15, what="the old worker to exit")
    wait_until(lambda: not group_alive(pgid), 10, what="its child to die")
    assert d.get("/fast") == (200, b"fast")


def test_single_process_mode(daemon) -> None:
    d = daemon(conf(main="master_process off;"))
    status, body = d.get("/methods")
    assert status == 200 and body.decode().splitlines() == EXPECTED
    pgid = int(d.get("/keep")[1])
    assert group_alive(pgid)
    d.signal(signal.SIGQUIT)
    wait_until(lambda: not group_alive(pgid), 15, what="the child to die with the single process")


EXEC = """
from pyngx import pipe, shell
ok, out, err, reason, status = await shell.run(["sh", "-c", "echo $((6 * 7))"])
print(ok, out.decode().strip(), reason, status)
p = pipe.spawn("sleep 60 | cat")
KEEP = p
print(p.pid(), flush=True)
"""


def test_pyngx_e_runs_pipes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pyngx", "-e", EXEC], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    assert first == "True 42 exit 0"
    pgid = int(second)
    wait_until(lambda: not group_alive(pgid), 10, what="the -e child to die")
