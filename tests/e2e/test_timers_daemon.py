"""Timers in the real daemon: workers, the agent, single mode, ``pyngx -e``.

Callbacks report by appending ``PID WORD...`` lines to ``logs/out.txt`` (one
``write()`` on an O_APPEND file, so lines from several processes never mix).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support import Daemon, pid_alive, wait_until

NOTE = """
        import os
        def note(*words):
            line = " ".join(str(w) for w in (os.getpid(), *words)) + "\\n"
            fd = os.open(ngx.config.prefix() + "logs/out.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
"""


def conf(init_worker: str, *, main: str = "", http: str = "", init: str = "", workers: int = 1,
         locations: str = "") -> str:
    """A config with NOTE and INIT_WORKER in init_worker_by_python and one hello server."""
    init_block = f"init_by_python_block {{\n{init}\n    }}" if init else ""
    return f"""
error_log logs/error.log info;
worker_processes {workers};
worker_shutdown_timeout 5s;
{main}
events {{ worker_connections 64; }}
http {{
    {http}
    {init_block}
    init_worker_by_python_block {{
{NOTE}
{init_worker}
    }}
    server {{
        listen 127.0.0.1:@PORT@;
        location / {{ return 200 "ok"; }}
        {locations}
    }}
}}
"""


def notes(d: Daemon) -> list[list[str]]:
    path = d.prefix / "logs" / "out.txt"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def words(d: Daemon) -> list[str]:
    """The notes without their pids."""
    return [" ".join(n[1:]) for n in notes(d)]


def wait_notes(d: Daemon, pred: Callable[[list[str]], bool], timeout: float = 10, what: str = "") -> list[str]:
    return wait_until(lambda: pred(words(d)) and words(d), timeout, what=what or "notes")


def master_gone(d: Daemon) -> bool:
    assert d.proc is not None
    return d.proc.poll() is not None


def test_at_every_cancel_counts_and_context(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        def once(premature, what):
            note("at", what, premature, ngx.timer.running_count())
        ngx.timer.at(0, once, "zero")
        ngx.timer.at(0.05, once, "later")
        doomed = ngx.timer.at(0.05, once, "doomed")
        note("cancel", doomed.cancel(), doomed.cancel())
        note("pending", ngx.timer.pending_count())
        runs = []
        def tick(premature):
            runs.append(1)
            note("tick", len(runs), premature)
            if len(runs) == 3:
                note("stop", ticker.cancel())
        ticker = ngx.timer.every(0.05, tick)
        async def slow(premature):
            await ngx.sleep(0.01)
            note("async", premature, ngx.timer.running_count() >= 1)
        ngx.timer.at(0, slow)
        # a callback may use shared dicts and IPC
        from pyngx import ipc
        ipc.receive("ping", lambda data: note("ipc", data, ngx.shared.counts.get("n")))
        def poke(premature):
            ngx.shared.counts.incr("n", 1, 41)
            ipc.send(os.getpid(), "ping", "hello")
        ngx.timer.at(0.02, poke)
    """, http="python_shared_dict counts 1m;", locations="""
        location /t {
            content_by_python_block {
                ngx.ctx["mine"] = 1
                def later(premature):
                    try:
                        ngx.say("leak")
                    except ngx.WrongContextError:
                        note("no_request", ngx.timer.running_count())
                ngx.timer.at(0, later)
                ngx.say("made")
            }
        }"""))
    got = wait_notes(d, lambda w: "stop True" in w and "async False True" in w and "ipc hello 42" in w)
    assert got[0] == "cancel True False" and got[1] == "pending 2"
    assert "at zero False 1" in got and "at later False 1" in got
    assert not any("doomed" in w for w in got)
    assert [w for w in got if w.startswith("tick")] == ["tick 1 False", "tick 2 False", "tick 3 False"]
    # a timer made in a request runs outside it: ngx.say there is refused
    assert d.get("/t") == (200, b"made\n")
    wait_notes(d, lambda w: "no_request 1" in w)
    time.sleep(0.2)  # a cancelled `every` stays quiet (checked once, after three intervals)
    assert sum(w.startswith("tick") for w in words(d)) == 3


def test_300_timers_over_a_running_limit_of_256_all_run(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        async def job(premature, i):
            await ngx.sleep(0.3)
            note("done", i)
        for i in range(300):
            ngx.timer.at(0, job, i)
    """, http="python_max_running_timers 256;"))
    wait_until(lambda: len(notes(d)) == 300, 15, what="300 timers")
    assert sorted(int(n[2]) for n in notes(d)) == list(range(300))  # OpenResty drops 44 here
    log = d.error_log()
    assert log.count("python_max_running_timers (256) are not enough") == 1
    assert "[warn]" in log


def test_pending_limit_and_errors_are_catchable(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        made = 0
        try:
            for _ in range(20):
                ngx.timer.at(60, print)
                made += 1
        except ngx.TooManyTimersError as exc:
            note("limit", made, str(exc).replace(" ", "_"))
        for bad in (lambda: ngx.timer.at(-1, print), lambda: ngx.timer.every(0, print)):
            try:
                bad()
            except ValueError:
                note("valueerror")
    """, http="python_max_pending_timers 10;", locations="location /status { pyngx_status; }"))
    assert wait_notes(d, lambda w: len(w) == 3) == ["limit 10 too_many_pending_timers", "valueerror", "valueerror"]
    status, body = d.get("/status")
    stats = json.loads(body)["timers"]
    assert status == 200 and stats["pending"] == 10 and stats["max_pending"] == 10 and stats["running"] == 0


PREMATURE = """
        async def stop(premature, what):
            note(what, premature, ngx.worker.exiting())
            try:
                ngx.timer.at(0, print)
            except ngx.ProcessExitingError as exc:
                note("refused", str(exc).replace(" ", "_"))
        ngx.timer.at(3600, stop, "at")
        ngx.timer.every(3600, stop, "every")
        note("started")
"""


def test_premature_on_reload(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(PREMATURE))
    wait_notes(d, lambda w: "started" in w)
    old = int(notes(d)[0][0])
    d.signal(signal.SIGHUP)
    wait_until(lambda: not pid_alive(old), 10, what="the old worker to exit")
    mine = [" ".join(n[1:]) for n in notes(d) if int(n[0]) == old]
    assert sorted(mine) == ["at True True", "every True True", "refused process_exiting",
                            "refused process_exiting", "started"]
    wait_until(lambda: sum(w == "started" for w in words(d)) == 2, 10, what="the new worker")


def test_premature_on_quit(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(PREMATURE))
    wait_notes(d, lambda w: "started" in w)
    d.signal(signal.SIGQUIT)
    wait_until(lambda: master_gone(d), 15, what="the master to exit")
    assert sorted(words(d)) == ["at True True", "every True True", "refused process_exiting",
                                "refused process_exiting", "started"]


def test_premature_on_signal_graceful_exit(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(PREMATURE + """
        from pyngx import process
        flag = ngx.config.prefix() + "logs/exited-once"
        if not os.path.exists(flag):  # only the first worker asks to leave
            open(flag, "w").close()
            ngx.timer.at(0.05, lambda premature: process.signal_graceful_exit())
    """))
    wait_until(lambda: "at True True" in words(d), 10, what="the premature run")
    first = int(notes(d)[0][0])
    wait_until(lambda: not pid_alive(first), 10, what="the worker to exit")
    assert sorted(" ".join(n[1:]) for n in notes(d) if int(n[0]) == first) == [
        "at True True", "every True True", "refused process_exiting", "refused process_exiting", "started"]
    wait_until(lambda: sum(w == "started" for w in words(d)) >= 2, 15, what="a new worker")


def test_term_runs_no_timer(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(PREMATURE))
    wait_notes(d, lambda w: "started" in w)
    d.signal(signal.SIGTERM)
    wait_until(lambda: master_gone(d), 15, what="the master to exit")
    assert words(d) == ["started"]


def test_worker_shutdown_timeout_cancels_a_stuck_callback(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        async def stuck(premature):
            note("stuck")
            try:
                await ngx.sleep(3600)
            finally:
                note("cleanup")
        ngx.timer.at(0, stuck)
    """).replace("worker_shutdown_timeout 5s;", "worker_shutdown_timeout 0.3s;"))
    wait_notes(d, lambda w: "stuck" in w)
    t0 = time.monotonic()
    d.signal(signal.SIGQUIT)
    wait_until(lambda: master_gone(d), 10, what="the master to exit")
    assert time.monotonic() - t0 < 5
    assert words(d) == ["stuck", "cleanup"]
    assert "stuck (" in d.error_log() and "still running at worker_shutdown_timeout, cancelled" in d.error_log()


UNIQUE = """
        def job(premature):
            note("job", premature)
        ngx.timer.every(0.2, job, unique="job")
        note("started")
"""


def test_unique_runs_in_one_process_and_fails_over(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(UNIQUE, workers=2))
    wait_until(lambda: sum(n[1:] == ["job", "False"] for n in notes(d)) >= 4, 10, what="4 runs")
    runners = {n[0] for n in notes(d) if n[1] == "job"}
    assert len(runners) == 1  # two workers, one runs the job
    holder = int(runners.pop())
    started = {int(n[0]) for n in notes(d) if n[1] == "started"}
    assert holder in started and len(started) == 2
    os.kill(holder, signal.SIGKILL)
    killed_at = time.monotonic()
    before = len(notes(d))
    taken = wait_until(lambda: [n for n in notes(d)[before:] if n[1] == "job"], 5, what="a fail-over")
    assert int(taken[0][0]) != holder
    assert time.monotonic() - killed_at < 2  # within one interval plus a poll, on a loaded machine
    d.expect_errors = True  # the master logs the killed worker
    ran = [int(n[0]) for n in notes(d)[before:] if n[1] == "job"]
    wait_until(lambda: len([n for n in notes(d)[before:] if n[1] == "job"]) >= 4, 5, what="more runs")
    ran = [int(n[0]) for n in notes(d)[before:] if n[1] == "job"]
    assert len(set(ran)) == 1  # the new holder keeps the job
    bad = [ln for ln in d.error_log().splitlines() if "[error]" in ln or "[crit]" in ln or "[emerg]" in ln]
    assert not bad, bad


def test_unique_moves_to_the_new_generation_on_reload(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(UNIQUE, workers=2))
    wait_until(lambda: any(n[1] == "job" for n in notes(d)), 10, what="a run")
    old = {int(n[0]) for n in notes(d) if n[1] == "started"}
    d.signal(signal.SIGHUP)
    wait_until(lambda: any(n[1] == "job" and int(n[0]) not in old for n in notes(d)), 10,
               what="a new-generation worker to take the job")
    # one run per interval, never two processes at once: runs stay about 0.2 s apart
    d.signal(signal.SIGQUIT)
    wait_until(lambda: master_gone(d), 15, what="the master to exit")
    premature = [n[0] for n in notes(d) if n[1:] == ["job", "True"]]
    holders = {n[0] for n in notes(d) if n[1:] == ["job", "False"]}
    # Only a process holding the job runs its last run, once. (On a busy machine an old
    # worker may take the job over between the old holder's exit and its own QUIT: it
    # then held it, ran it, and runs the last run too.)
    assert premature and set(premature) <= holders
    assert len(premature) == len(set(premature))


def test_callback_exception_is_logged_with_config_file_and_line(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        def broken(premature):
            raise RuntimeError("timer boom")
        ngx.timer.at(0, broken)
        ngx.timer.at(0.1, lambda premature: note("alive"))
    """))
    d.expect_errors = True
    wait_notes(d, lambda w: "alive" in w)
    log = d.error_log()
    assert "[error]" in log and "timer callback broken (" in log and "RuntimeError: timer boom" in log
    assert f'File "{d.conf_path}", line ' in log or 'conf/pyngx.conf", line ' in log


def test_timers_in_the_privileged_agent(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf("""
        from pyngx import process
        if process.type() == "privileged agent":
            ngx.timer.every(0.05, lambda premature: note("agent", process.type().replace(" ", "_")))
    """, init="""
        ngx.process.enable_privileged_agent()
        try:
            ngx.timer.at(0, print)
        except ngx.WrongContextError as exc:  # the master has no event loop
            with open(ngx.config.prefix() + "logs/init.txt", "w") as f:
                f.write(str(exc))
    """))
    wait_until(lambda: words(d).count("agent privileged_agent") >= 2, 10, what="agent timer runs")
    assert (d.prefix / "logs" / "init.txt").read_text() == (
        "ngx.timer.at: API disabled in the context of init_by_python")


def test_timers_with_master_process_off(daemon: Callable[..., Daemon]) -> None:
    d = daemon(conf(PREMATURE + """
        ngx.timer.at(0, lambda premature: note("single", ngx.process.type()))
    """, main="master_process off;"))
    wait_notes(d, lambda w: "single single" in w)
    d.signal(signal.SIGQUIT)
    wait_until(lambda: master_gone(d), 15, what="the process to exit")
    assert "at True True" in words(d) and "every True True" in words(d)


def _exec(code: str, tmp: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyngx", "-e", code], cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)


def test_exec_waits_for_its_timers(tmp_path: Path) -> None:
    out = _exec("""
def later(premature, n):
    print("fired", n, premature, ngx.process.type(), flush=True)
ngx.timer.at(0.2, later, 1)
ngx.timer.at(0, later, 0)
runs = []
def tick(premature):
    runs.append(1)
    if len(runs) == 3:
        t.cancel()
        print("ticked", len(runs), flush=True)
t = ngx.timer.every(0.02, tick)
async def bad(premature):
    raise ValueError("nope")
ngx.timer.at(0, bad)
""", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["fired 0 False single", "ticked 3", "fired 1 False single"]
    assert "ValueError: nope" in out.stderr  # logged; the other timers carried on


def test_exec_interrupted_runs_no_timer(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pyngx", "-e", """
ngx.timer.at(3600, lambda premature: print("ran", premature))
print("ready", flush=True)
"""], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "ran" not in out
