"""The process tree end to end: titles, worker ids, respawn, reload, graceful stop, pid file.

Each worker and the agent leaves a file ``logs/who.PID`` from
init_worker_by_python saying what it is, so these tests need no HTTP.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import Daemon, children, pid_alive, proc_title, wait_until

WHO = """
    init_worker_by_python_block {
        import mymod
        path = f"{ngx.config.prefix()}logs/who.{ngx.worker.pid()}"
        with open(path + ".tmp", "w") as f:
            f.write(f"{ngx.process.type()}|{ngx.worker.id()}|{ngx.worker.count()}|{mymod.VERSION}|{ngx.process.get_master_pid()}")
        import os
        os.replace(path + ".tmp", path)
    }
"""

CONF = """
worker_processes 2;
error_log logs/error.log info;
worker_shutdown_timeout 5s;
events { worker_connections 64; }
http {
    python_path @PREFIX@/lib;
    init_by_python_block {
        import mymod
        if mymod.AGENT:
            ngx.process.enable_privileged_agent()
    }
""" + WHO + """
    server {
        listen 127.0.0.1:@PORT@;
        location / { return 200 "ok"; }
    }
}
"""


def write_module(d: Daemon, version: int, agent: bool = True, extra: str = "") -> None:
    lib = d.prefix / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "mymod.py").write_text(f"VERSION = {version}\nAGENT = {agent}\n{extra}")


def make(daemon: object, conf: str = CONF, version: int = 1, agent: bool = True, **kw: object) -> Daemon:
    d: Daemon = daemon(conf, start=False, **kw)  # type: ignore[operator]
    write_module(d, version, agent)
    return d.start()


def who(d: Daemon) -> dict[int, list[str]]:
    """pid -> [type, worker id, count, module version, master pid] of live children that wrote a file."""
    out = {}
    for path in (d.prefix / "logs").glob("who.*"):
        if path.suffix == ".tmp":
            continue
        pid = int(path.name.split(".")[1])
        if pid_alive(pid):
            out[pid] = path.read_text().split("|")
    return out


def wait_tree(d: Daemon, workers: int = 2, agent: bool = True, version: int = 1) -> dict[int, list[str]]:
    def ready() -> dict[int, list[str]] | None:
        live = {pid: w for pid, w in who(d).items() if w[3] == str(version)}
        kids = set(children(d.master_pid))
        live = {pid: w for pid, w in live.items() if pid in kids}
        n_workers = sum(1 for w in live.values() if w[0] == "worker")
        n_agents = sum(1 for w in live.values() if w[0] == "privileged agent")
        return live if n_workers == workers and n_agents == int(agent) else None
    return wait_until(ready, 15, what=f"{workers} workers of version {version}")


def test_titles_types_and_worker_ids(daemon: object) -> None:
    d = make(daemon)
    tree = wait_tree(d)
    assert proc_title(d.master_pid).startswith("pyngx: master process ")
    assert "-p " + str(d.prefix) in proc_title(d.master_pid)
    titles = {pid: proc_title(pid) for pid in tree}
    workers = sorted(w[1] for pid, w in tree.items() if w[0] == "worker")
    assert workers == ["0", "1"]
    for pid, (kind, wid, count, _, master) in tree.items():
        assert count == "2" and master == str(d.master_pid)
        if kind == "worker":
            assert titles[pid] == "pyngx: worker process"
        else:
            assert (kind, wid, titles[pid]) == ("privileged agent", "None", "pyngx: privileged agent process")
    assert set(children(d.master_pid)) == set(tree)  # the master's only children


def test_killed_worker_is_respawned_with_the_same_id(daemon: object) -> None:
    d = make(daemon, agent=False)
    tree = wait_tree(d, agent=False)
    victim = next(pid for pid, w in tree.items() if w[1] == "1")
    os.kill(victim, signal.SIGKILL)
    d.wait_log(f"worker process {victim} exited on signal 9")
    d.expect_errors = True  # the exit is logged at [alert], as nginx does
    after = wait_until(lambda: (t := wait_tree(d, agent=False)) and victim not in t and t, 10)
    assert sorted(w[1] for w in after.values()) == ["0", "1"]
    assert [pid for pid in after if pid not in tree] == [
        next(pid for pid, w in after.items() if w[1] == "1")]
    assert "start worker process" in d.error_log().split("exited on signal 9")[1]


def test_killed_agent_is_respawned(daemon: object) -> None:
    d = make(daemon)
    tree = wait_tree(d)
    agent = next(pid for pid, w in tree.items() if w[0] == "privileged agent")
    os.kill(agent, signal.SIGKILL)
    d.expect_errors = True
    d.wait_log(f"privileged agent process {agent} exited on signal 9")
    wait_until(lambda: agent not in wait_tree(d), 10)


def test_crash_loop_is_throttled(daemon: object) -> None:
    conf = CONF.replace("import mymod\n        path", "import mymod, os\n        os._exit(3)\n        path")
    d = daemon(conf, start=False)
    write_module(d, 1, agent=False)
    d.start()
    d.expect_errors = True
    d.wait_log("respawning in 0.8s")  # the delay doubles: 0.1, 0.2, 0.4, 0.8 ...
    log = d.error_log()
    starts = log.count("start worker process")
    # two worker slots, each: one at start, one at once, then one per back-off step
    assert starts <= 12, f"{starts} starts: the crash loop is not throttled"
    assert "respawning in 0.1s" in log and "respawning in 0.4s" in log
    assert pid_alive(d.master_pid)


def test_reload_picks_up_new_module_code(daemon: object) -> None:
    d = make(daemon)
    old = wait_tree(d)
    master = d.master_pid
    write_module(d, 2)
    d.signal(signal.SIGHUP)
    new = wait_tree(d, version=2)
    assert not set(new) & set(old)
    wait_until(lambda: not any(pid_alive(p) for p in old), 10, what="old workers to exit")
    assert d.master_pid == master
    log = d.error_log()
    assert "signal 1 (SIGHUP) received, reconfiguring" in log
    assert "reload: generation 2 is serving" in log


def test_back_to_back_reloads_settle_on_the_last_config(daemon: object) -> None:
    d = make(daemon, agent=False)
    first = wait_tree(d, agent=False)
    d.write_conf(CONF.replace("worker_processes 2;", "worker_processes 3;"))
    write_module(d, 2, agent=False)
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGHUP)  # arrives while the first reload is starting its workers
    wait_until(lambda: not any(pid_alive(p) for p in first), 10, what="the first workers to exit")

    def settled() -> dict[int, list[str]] | None:
        tree = wait_tree(d, workers=3, agent=False, version=2)
        return tree if set(children(d.master_pid)) == set(tree) else None
    last = wait_until(settled, 10, what="only the last generation to be left")
    assert sorted(w[1] for w in last.values()) == ["0", "1", "2"]
    assert all(w[2] == "3" for w in last.values())


def test_reload_with_broken_config_keeps_the_old_workers(daemon: object) -> None:
    d = make(daemon)
    old = wait_tree(d)
    d.write_conf(CONF.replace("worker_processes 2;", "worker_processes 2;\nno_such_directive on;"))
    d.expect_errors = True
    d.signal(signal.SIGHUP)  # `-s reload` would refuse to parse it before signalling, as nginx does
    d.wait_log('unknown directive "no_such_directive"')
    assert "[emerg]" in d.error_log()
    assert wait_tree(d) == old  # untouched: the same pids, the same code
    assert proc_title(d.master_pid).startswith("pyngx: master process")
    d.write_conf(CONF)
    write_module(d, 3)
    result = d.pyngx("-s", "reload")
    assert result.returncode == 0, result.stderr
    wait_tree(d, version=3)


def test_reload_verdict_reports_a_bind_failure(daemon: object) -> None:
    d = make(daemon, agent=False)
    old = wait_tree(d, agent=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d.write_conf(CONF.replace("listen 127.0.0.1:@PORT@;", f"listen 127.0.0.1:@PORT@;\n        listen 127.0.0.1:{port};"))
        result = d.pyngx("-s", "reload")
    d.expect_errors = True
    assert result.returncode == 1
    assert f"bind() to 127.0.0.1:{port} failed (98: Address already in use)" in result.stderr
    assert wait_tree(d, agent=False) == old
    assert d.answers()


def test_reload_with_failing_init_by_python_is_refused(daemon: object) -> None:
    d = make(daemon)
    old = wait_tree(d)
    write_module(d, 2, extra="raise RuntimeError('bad deploy')\n")
    result = d.pyngx("-s", "reload")
    d.expect_errors = True
    assert result.returncode == 1
    assert "init_by_python error: RuntimeError: bad deploy" in result.stderr
    assert wait_tree(d) == old


def test_graceful_quit_waits_for_in_flight_work(daemon: object) -> None:
    conf = CONF.replace(
        'os.replace(path + ".tmp", path)',
        """os.replace(path + ".tmp", path)
        from pyngx.runtime import lifecycle
        import asyncio
        async def in_flight():
            await asyncio.sleep(1.0)
            with open(f"{ngx.config.prefix()}logs/done.{ngx.worker.pid()}", "w") as f:
                f.write(str(ngx.worker.exiting()))
        lifecycle.on_wait(in_flight)""")
    d = daemon(conf, start=False)
    write_module(d, 1, agent=False)
    d.start()
    tree = wait_tree(d, agent=False)
    master = d.master_pid
    d.signal(signal.SIGQUIT)
    # each worker is busy for 1 s more: its title says so meanwhile
    wait_until(lambda: all(proc_title(p) == "pyngx: worker process is shutting down" for p in tree), 5,
               what="the shutting-down titles")
    assert d.proc is not None
    assert d.proc.wait(timeout=15) == 0
    for pid in tree:
        assert (d.prefix / "logs" / f"done.{pid}").read_text() == "True"
    assert not d.pid_file().exists()
    assert not pid_alive(master)
    assert "signal 3 (SIGQUIT) received, shutting down" in d.error_log()


def test_pid_file_lifecycle_in_daemon_mode(daemon: object) -> None:
    d = daemon(CONF, start=False, daemon_off=False)
    write_module(d, 1, agent=False)
    d.start()
    assert d.proc is not None and d.proc.wait(timeout=10) == 0  # the foreground process returns at once
    master = d.master_pid
    assert master != d.proc.pid and pid_alive(master)
    assert os.getsid(master) not in (d.proc.pid, os.getsid(0))  # detached into a session of its own
    tree = wait_tree(d, agent=False)
    assert all(w[4] == str(master) for w in tree.values())
    result = d.pyngx("-s", "quit")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not pid_alive(master) and not d.pid_file().exists(), 15, what="the master to exit")
    assert not any(pid_alive(p) for p in tree)
    result = d.pyngx("-s", "quit")
    assert result.returncode == 1
    assert 'pyngx.pid" failed (2: No such file or directory)' in result.stderr


def test_signaller_reports_a_stale_pid_file(daemon: object) -> None:
    d = daemon(CONF, start=False)
    d.pid_file().write_text("4194000\n")
    result = d.pyngx("-s", "reload")
    assert result.returncode == 1
    assert "kill(4194000, 1) failed (3: No such process)" in result.stderr


def test_reopen_follows_logrotate(daemon: object) -> None:
    d = make(daemon, agent=False)
    wait_tree(d, agent=False)
    log = d.prefix / "logs" / "error.log"
    log.rename(d.prefix / "logs" / "error.log.1")
    assert d.pyngx("-s", "reopen").returncode == 0
    wait_until(log.exists, 5, what="a new error.log")
    assert d.pyngx("-s", "reload").returncode == 0
    assert "reconfiguring" in log.read_text()
    assert "reconfiguring" not in (d.prefix / "logs" / "error.log.1").read_text()


def test_workers_exit_when_the_master_is_killed(daemon: object) -> None:
    d = make(daemon)
    tree = wait_tree(d)
    master = d.master_pid
    os.kill(master, signal.SIGKILL)
    d.expect_errors = True
    wait_until(lambda: not any(pid_alive(p) for p in tree), 5, what="orphaned workers to exit")
    assert f"master process {master} is gone, exiting" in d.error_log()


def test_single_process_mode(daemon: object) -> None:
    d = make(daemon, conf=CONF.replace("worker_processes 2;", "worker_processes 2;\nmaster_process off;"),
             agent=False)
    def mine() -> list[str] | None:
        return who(d).get(d.master_pid)
    info = wait_until(mine, 10, what="the single process to run init_worker")
    assert info[:3] == ["single", "0", "1"]
    assert children(d.master_pid) == []
    d.signal(signal.SIGQUIT)
    assert d.proc is not None and d.proc.wait(timeout=10) == 0
    assert not d.pid_file().exists()


def test_exec_runs_code_once_as_single(tmp_path: Path) -> None:
    code = "print(ngx.process.type(), ngx.worker.id(), ngx.worker.count())\nawait ngx.sleep(0.01)\nprint('done')"
    result = subprocess.run([sys.executable, "-m", "pyngx", "-p", str(tmp_path), "-e", code],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "single 0 1\ndone\n"
    bad = subprocess.run([sys.executable, "-m", "pyngx", "-p", str(tmp_path), "-e", "1/0"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert "ZeroDivisionError" in bad.stderr and "(command line -e)" in bad.stderr


HTTP_CONF = """
worker_processes 2;
error_log logs/error.log info;
worker_shutdown_timeout 10s;
events { worker_connections 64; }
http {
    server {
        listen 127.0.0.1:@PORT@;
        location /slow {
            content_by_python_block {
                await ngx.sleep(1.0)
                ngx.say("slow done by ", ngx.worker.pid())
            }
        }
        location / {
            content_by_python_block {
                ngx.say("gen @GEN@ ", ngx.worker.id())
            }
        }
    }
}
"""


def test_graceful_quit_finishes_an_in_flight_request(daemon: object) -> None:
    d = daemon(HTTP_CONF.replace("@GEN@", "1"))  # type: ignore[operator]
    wait_until(lambda: d.get("/")[0] == 200, 10)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(d.get, "/slow")
        wait_until(lambda: _busy(d), 5, what="the slow request to be in flight")
        d.signal(signal.SIGQUIT)
        status, body = slow.result(timeout=15)
    assert status == 200 and body.startswith(b"slow done by ")
    assert d.proc is not None and d.proc.wait(timeout=15) == 0
    assert not d.pid_file().exists()


def _busy(d: Daemon) -> bool:
    """The server side of a connection to our port is established (the slow request is in)."""
    port = f":{d.port:04X}"
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(row[1].endswith(port) and row[3] == "01" for row in rows)  # 01: ESTABLISHED


def test_no_request_fails_during_reloads(daemon: object) -> None:
    d = daemon(HTTP_CONF.replace("@GEN@", "1"))  # type: ignore[operator]
    wait_until(lambda: d.get("/")[0] == 200, 10)
    stop = threading.Event()
    answers: list[tuple[int, bytes]] = []

    def hammer() -> None:
        while not stop.is_set():
            answers.append(d.get("/"))

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(hammer) for _ in range(2)]
        for gen in (2, 3, 4):
            d.write_conf(HTTP_CONF.replace("@GEN@", str(gen)))
            result = d.pyngx("-s", "reload")
            assert result.returncode == 0, result.stderr
            wait_until(lambda: d.get("/")[1].startswith(f"gen {gen} ".encode()), 10)
        stop.set()
        for f in futures:
            f.result(timeout=30)
    assert answers and all(status == 200 for status, _ in answers)
    assert {body.split()[1] for _, body in answers} >= {b"1", b"4"}


def test_exec_with_shared_dicts_and_timers(tmp_path: Path) -> None:
    code = """
d = ngx.shared.d
d.set("n", 0)
def tick(premature, step):
    d.incr("n", step)
ngx.timer.at(0.05, tick, 2)
ngx.timer.at(0.02, tick, 1)
await ngx.sleep(0.1)
print(d.get("n"), sorted(ngx.shared))
"""
    result = subprocess.run([sys.executable, "-m", "pyngx", "-p", str(tmp_path), "--shdict", "d 1m", "--shdict", "e 64k",
                             "-e", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "3 ['d', 'e']\n"


def test_signal_graceful_exit_is_replaced_with_the_same_id(daemon: object) -> None:
    conf = HTTP_CONF.replace("@GEN@", "1").replace("location /slow {", """location /bye {
            content_by_python_block {
                from pyngx import process
                process.signal_graceful_exit()
                ngx.say(ngx.worker.pid(), " ", ngx.worker.id())
            }
        }
        location /slow {""")
    d = daemon(conf)  # type: ignore[operator]
    wait_until(lambda: d.get("/")[0] == 200, 10)
    before = set(d.workers())
    status, body = d.get("/bye")
    assert status == 200
    pid, wid = body.split()
    d.wait_log(f"worker process {int(pid)} exited with code 0")

    def replaced() -> bool:
        now = set(d.workers())
        return len(now) == 2 and int(pid) not in now and bool(now - before)
    wait_until(replaced, 10, what="the worker to be replaced")
    wait_until(lambda: f"gen 1 {wid.decode()}".encode() in b"".join(d.get("/")[1] for _ in range(20)), 10,
               what="the same worker id to answer again")
