"""What an operator meets day to day: logs and their rotation, print(), the terminal,
signals, ``-t`` and the reload verdict, each against the real daemon."""
from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support import Daemon, children, free_port, pid_alive, proc_title, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log notice;
events { worker_connections 64; }
http {
    init_by_python_block {
        import os, sys
        ngx.process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        print("init_worker says hi from", ngx.process.type())
    }
    server {
        listen 127.0.0.1:@PORT@;
        server_name example.test;
        location = /print {
            content_by_python_block {
                print("hello from print", 42)
                print("to stderr", file=sys.stderr)
                os.write(2, b"raw bytes on fd 2\\n")
                ngx.log(ngx.WARN, "values: ", None, " ", True, " ", [1, "a"])
                ngx.say("printed")
            }
        }
        location = /gen {
            content_by_python_block {
                ngx.say("generation 1")
            }
        }
    }
}
"""


def fd_target(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


def tree_pids(d: Daemon, count: int = 3) -> list[int]:
    master = d.master_pid
    found = wait_until(lambda: len(kids := [p for p in children(master) if "pyngx:" in proc_title(p)]) == count
                       and all("shutting down" not in proc_title(p) for p in kids) and kids, 15, what="the children")
    return [master, *found]


def wait_master_gone(d: Daemon, master: int) -> None:
    wait_until(lambda: not pid_alive(master), 20, what="the master to exit")


# -- logs --

def test_reopen_moves_stdout_and_stderr_of_every_process(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF, start=False, daemon_off=False)
    d.start()
    log = d.prefix / "logs" / "error.log"
    pids = tree_pids(d)
    assert all(fd_target(p, 2) == str(log) and fd_target(p, 1) == str(log) for p in pids)
    # logrotate: rename, then -s reopen (its postrotate)
    log.rename(d.prefix / "logs" / "error.log.1")
    assert d.pyngx("-s", "reopen").returncode == 0
    wait_until(lambda: all(fd_target(p, 2) == str(log) and fd_target(p, 1) == str(log) for p in pids), 10,
               what="fds 1 and 2 of the master, the workers and the agent on the new error.log")
    assert d.get("/print") == (200, b"printed\n")
    text = wait_until(lambda: "raw bytes on fd 2" in log.read_text() and log.read_text(), 10)
    assert "hello from print 42" in text and "to stderr" in text
    old = (d.prefix / "logs" / "error.log.1").read_text()
    assert "hello from print" not in old and "raw bytes" not in old
    # workers started after the rotation inherit the new file
    assert d.pyngx("-s", "reload").returncode == 0
    new = tree_pids(d)
    assert set(new[1:]).isdisjoint(pids[1:])
    assert all(fd_target(p, 2) == str(log) for p in new)
    master = d.master_pid
    assert d.pyngx("-s", "quit").returncode == 0
    wait_master_gone(d, master)


def test_print_and_log_lines_in_a_request(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF)
    assert d.get("/print", headers={"Referer": "http://r.test/"}) == (200, b"printed\n")
    text = wait_until(lambda: "[python]" in d.error_log() and "values:" in d.error_log() and d.error_log(), 10)
    conf = str(d.conf_path)
    context = (f', client: 127.0.0.1, server: example.test, request: "GET /print HTTP/1.1", '
               f'host: "127.0.0.1:{d.port}", referrer: "http://r.test/"')
    lines = text.splitlines()
    printed = next(ln for ln in lines if "hello from print" in ln)
    assert "[notice]" in printed and f"[python] {conf}:" in printed
    assert printed.endswith("hello from print 42" + context)
    assert any(ln.endswith("to stderr" + context) and "[notice]" in ln for ln in lines)
    warn = next(ln for ln in lines if "values:" in ln)  # ngx.log renders Python's words
    assert "[warn]" in warn and warn.endswith("values: None True [1, 'a']" + context)
    # outside a request: no context; and the daemon printed nothing to its own stdout
    init = wait_until(lambda: len(found := [ln for ln in d.error_log().splitlines() if "init_worker says hi" in ln])
                      == 3 and found, 10, what="a line from each worker and the agent")
    assert not any("client:" in ln for ln in init)
    assert (d.prefix / "stdout.log").read_bytes() == b""
    assert "press Ctrl-C" not in d.stderr_text()  # no terminal: no banner


# -- the terminal --

def _read_until(fd: int, buf: bytearray, text: bytes, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while text not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {text!r} in {bytes(buf)!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return bytes(buf)


def test_foreground_in_a_terminal(tmp_path: Path) -> None:
    """One line saying where it serves and how to stop; print() still shows; Ctrl-C is SIGINT."""
    port = free_port()
    (tmp_path / "conf").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "conf" / "pyngx.conf").write_text(CONF.replace("@PORT@", str(port)))
    main, term = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pyngx", "-p", str(tmp_path), "-g", "daemon off;"],
                            stdin=term, stdout=term, stderr=term, start_new_session=True)
    os.close(term)
    buf = bytearray()
    try:
        out = _read_until(main, buf, b"press Ctrl-C to stop\r\n")
        banner = [ln for ln in out.decode().splitlines() if "press Ctrl-C" in ln]
        assert banner == [f"pyngx: serving http://127.0.0.1:{port}/ (pid {proc.pid}); press Ctrl-C to stop"]
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/print", timeout=5) as resp:
            assert resp.read() == b"printed\n"
        _read_until(main, buf, b"hello from print 42\r\n")  # the terminal shows it as printed
        log = tmp_path / "logs" / "error.log"
        assert "hello from print 42" in log.read_text()  # and the error log has it too
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.close(main)
    text = log.read_text()
    assert "signal 2 (SIGINT) received, exiting" in text and "SIGTERM" not in text
    assert not any(level in text for level in ("[alert]", "[error]", "[crit]")), text
    assert buf.count(b"press Ctrl-C") == 1


@pytest.mark.parametrize("mode", ["master_process on", "master_process off"])
@pytest.mark.parametrize("signo, words", [(signal.SIGTERM, "signal 15 (SIGTERM) received, exiting"),
                                          (signal.SIGINT, "signal 2 (SIGINT) received, exiting"),
                                          (signal.SIGQUIT, "signal 3 (SIGQUIT) received, shutting down")])
def test_the_log_names_the_signal_that_came(daemon: Callable[..., Daemon], mode: str, signo: int,
                                            words: str) -> None:
    d = daemon(CONF.replace("worker_processes 2;", f"worker_processes 2;\n{mode};"))
    if mode == "master_process on":
        tree_pids(d)
    d.signal(signo)
    assert d.proc is not None and d.proc.wait(timeout=20) == 0
    text = d.error_log()
    assert words in text and text.count("received, ") == 1, text


# -- -t opens what the start will open --

def test_t_fails_when_the_logs_directory_is_missing(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF, start=False)
    shutil.rmtree(d.prefix / "logs")
    r = d.pyngx("-t")
    assert r.returncode == 1
    assert f'pyngx: [emerg] open() "{d.prefix}/logs/error.log" failed (2: No such file or directory)' in r.stderr
    assert "test failed" in r.stderr


def test_t_fails_when_the_pid_file_cannot_be_written(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF, start=False)
    (d.prefix / "run").write_text("a file, not a directory")
    r = d.pyngx("-t", "-g", f"pid {d.prefix}/run/pyngx.pid;")
    assert r.returncode == 1
    assert f'open() "{d.prefix}/run/pyngx.pid" failed (20: Not a directory)' in r.stderr, r.stderr
    r = d.pyngx("-t")
    assert r.returncode == 0 and "test is successful" in r.stderr
    assert not d.pid_file().exists() and not list((d.prefix / "logs").glob("*.tmp"))  # -t leaves no pid file


def test_t_fails_when_the_access_log_cannot_be_opened(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF.replace("http {", "http {\n    access_log logs/nowhere/access.log;"), start=False)
    r = d.pyngx("-t")
    assert r.returncode == 1
    assert f'open() "{d.prefix}/logs/nowhere/access.log" failed (2: No such file or directory)' in r.stderr


# -- the reload verdict --

def test_reload_reports_init_worker_errors_and_serves_on(daemon: Callable[..., Daemon]) -> None:
    d = daemon(CONF)
    d.expect_errors = True
    tree_pids(d)
    d.write_conf(CONF.replace('print("init_worker says hi from", ngx.process.type())',
                              'if ngx.worker.id() == 1:\n            1 / 0')
                 .replace('ngx.say("generation 1")', 'ngx.say("generation 2")'))
    r = d.pyngx("-s", "reload")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert line.startswith("pyngx: [error] reload: the new generation serves, but init_worker_by_python failed in "
                           "worker process ")
    assert line.endswith(f"ZeroDivisionError: division by zero in {d.conf_path}:12") and "\n" not in line
    # the new generation serves, the one that raised included (as OpenResty does)
    wait_until(lambda: all(d.get("/gen") == (200, b"generation 2\n") for _ in range(6)), 10, what="generation 2")
    text = d.error_log()
    tb = text[text.index("init_worker_by_python error: Traceback"):]
    tb = tb[:tb.index("ZeroDivisionError")]
    assert f'File "{d.conf_path}", line 12' in tb and "pyngx/" not in tb  # the user's frames only
    # a clean reload after that says 0 again
    d.write_conf(CONF)
    assert d.pyngx("-s", "reload").returncode == 0
