"""pyngx as a service: sd_notify over a real socket, privilege drop, socket activation, the unit file."""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import REPO, children, free_port, pid_alive, proc_title, wait_until

CONF = """
worker_processes 2;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    init_by_python_block {
        ngx.process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        import os
        path = f"{ngx.config.prefix()}logs/who.{ngx.worker.pid()}"
        with open(path + ".tmp", "w") as f:
            f.write(f"{ngx.process.type()}|{os.getuid()}|{os.getgid()}")
        os.replace(path + ".tmp", path)
    }
    server {
        listen 127.0.0.1:@PORT@;
        location / { return 200 "ok"; }
    }
}
"""


def read_fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if "=" in line)


def who(prefix: Path, pids: list[int], where: str = "logs") -> dict[int, list[str]]:
    out = {}
    for pid in pids:
        path = prefix / where / f"who.{pid}"
        if path.exists():
            out[pid] = path.read_text().split("|")
    return out


def test_sd_notify_ready_reloading_stopping(daemon: object, tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(15)
        d = daemon(CONF, env={"NOTIFY_SOCKET": path})  # type: ignore[operator]
        ready = read_fields(sock)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(d.master_pid)
        # READY=1 comes once the workers serve: each has run init_worker by now
        assert len(who(d.prefix, children(d.master_pid))) == 3
        d.signal(signal.SIGHUP)
        reloading = read_fields(sock)
        assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
        assert read_fields(sock)["READY"] == "1"
        d.signal(signal.SIGQUIT)
        assert read_fields(sock)["STOPPING"] == "1"
        assert d.proc.wait(timeout=15) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_workers_drop_to_user_and_the_agent_stays_root(daemon: object) -> None:
    nobody = pwd.getpwnam("nobody")
    # pytest's tmp_path sits under a 0700 directory that `nobody` cannot cross
    base = Path(tempfile.mkdtemp(prefix="pyngx-user-"))
    os.chmod(base, 0o755)
    prefix = base / "p"
    (prefix / "logs").mkdir(parents=True)  # root's: the master must hand the log files over
    (prefix / "run").mkdir()
    os.chmod(prefix, 0o755)
    os.chown(prefix / "run", nobody.pw_uid, nobody.pw_gid)  # workers write their who file here
    conf = (CONF.replace("worker_processes 2;", "worker_processes 2;\nuser nobody;")
            .replace("logs/who.", "run/who.").replace("http {", "http {\n    access_log logs/access.log;"))
    try:
        d = daemon(conf, prefix=prefix)  # type: ignore[operator]

        def tree() -> dict[int, list[str]] | None:
            found = who(d.prefix, children(d.master_pid), "run")
            return found if len(found) == 3 else None
        found = wait_until(tree, 10, what="workers and agent")
        for pid, (kind, uid, gid) in found.items():
            if kind == "worker":
                assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
            else:
                assert (kind, uid) == ("privileged agent", "0")
        assert _status_uid(d.master_pid) == 0
        access = prefix / "logs" / "access.log"
        assert d.get("/")[0] == 200
        wait_until(lambda: access.exists() and access.stat().st_size > 0, 5, what="an access log line")
        # logrotate: rename, USR1, and the workers (not root) write to a new file
        access.rename(prefix / "logs" / "access.log.1")
        d.signal(signal.SIGUSR1)
        d.wait_log("reopening logs")
        wait_until(lambda: d.get("/")[0] == 200 and access.exists() and access.stat().st_size > 0, 5,
                   what="a line in the new access log")
        assert access.stat().st_uid == nobody.pw_uid
        d.stop()
        d.assert_clean_log()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_socket_activation_uses_the_passed_listener(tmp_path: Path) -> None:
    port = free_port()
    prefix = tmp_path
    (prefix / "logs").mkdir()
    (prefix / "conf").mkdir()
    conf = prefix / "conf" / "pyngx.conf"
    conf.write_text(CONF.replace("@PORT@", str(port)).replace("ngx.process.enable_privileged_agent()", "pass"))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    # LISTEN_PID must be the pyngx process itself: a tiny exec wrapper sets it (as systemd does)
    wrapper = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
               "os.environ['LISTEN_FDS'] = '1'; os.execv(sys.executable, [sys.executable, '-m', 'pyngx', *sys.argv[2:]])")
    cmd = [sys.executable, "-c", wrapper, str(listener.fileno()), "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
    with open(prefix / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, pass_fds=[listener.fileno()], stderr=err, cwd=prefix, start_new_session=True)
    try:
        listener.close()  # pyngx holds the only copy now; a bind() of its own would fail with EADDRINUSE
        wait_until(lambda: len(who(prefix, children(proc.pid))) == 2, 10, what="workers")
        log = (prefix / "logs" / "error.log").read_text()
        assert "bind()" not in log
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    """Not one complaint from systemd-analyze, on the systemd installed here (252 on Debian 12:
    older than 253, which is where Type=notify-reload would be read as Type=simple)."""
    unit = (REPO / "systemd" / "pyngx.service").read_text()
    pyngx = shutil.which("pyngx") or sys.executable
    unit = unit.replace("/usr/local/bin/pyngx", pyngx)
    (tmp_path / "pyngx.service").write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "pyngx.service")],
                            capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (result.stdout + result.stderr).splitlines() if "pyngx.service" in ln]
    assert result.returncode == 0 and not problems, "\n".join(problems)
    settings = _unit_settings(unit)
    assert settings["Type"] == "notify" and settings["KillSignal"] == "SIGQUIT"
    assert settings["ExecReload"].endswith("-s reload") and settings["PIDFile"]


def _unit_settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_the_unit_s_commands_run_as_systemd_runs_them(tmp_path: Path) -> None:
    """What systemd would do with the unit, step by step, over a real notify socket: the
    ExecStartPre check, ExecStart until READY=1, ExecReload (its exit code is the reload's
    verdict), KillSignal until the master exits 0."""
    settings = _unit_settings((REPO / "systemd" / "pyngx.service").read_text())
    prefix, run = tmp_path / "etc", tmp_path / "run"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "logs").mkdir()
    run.mkdir()  # RuntimeDirectory=
    port = free_port()
    (prefix / "conf" / "pyngx.conf").write_text(CONF.replace("@PORT@", str(port)))
    env = {**os.environ, "PYNGX_PREFIX": str(prefix)}

    def command(key: str) -> list[str]:
        line = settings[key].replace("${PYNGX_PREFIX}", str(prefix)).replace("/run/pyngx/", f"{run}/")
        words = shlex.split(line)
        assert words[0] == "/usr/local/bin/pyngx"
        return [sys.executable, "-m", "pyngx", *words[1:]]

    check = subprocess.run(command("ExecStartPre"), capture_output=True, text=True, env=env, timeout=60)
    assert check.returncode == 0 and check.stderr == "", check.stderr  # -q: silent when all is well
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify.sock"))
        sock.settimeout(20)
        with open(tmp_path / "stderr.log", "wb") as err:
            proc = subprocess.Popen(command("ExecStart"), env={**env, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True)
        try:
            assert read_fields(sock)["READY"] == "1"
            assert (run / "pyngx.pid").read_text().strip() == str(proc.pid)  # PIDFile=
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            reload = subprocess.run(command("ExecReload"), capture_output=True, text=True, env=env, timeout=60)
            assert reload.returncode == 0, reload.stderr
            assert read_fields(sock)["RELOADING"] == "1" and read_fields(sock)["READY"] == "1"
            os.kill(proc.pid, getattr(signal, settings["KillSignal"]))
            assert read_fields(sock)["STOPPING"] == "1"
            assert proc.wait(timeout=int(settings["TimeoutStopSec"])) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert (tmp_path / "stderr.log").read_text() == ""  # under systemd: nothing but the notify socket


def _status_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_titles_visible_in_ps(daemon: object) -> None:
    d = daemon(CONF)  # type: ignore[operator]
    wait_until(lambda: len(who(d.prefix, children(d.master_pid))) == 3, 10)
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(d.master_pid)], capture_output=True, text=True).stdout
    titles = sorted(line.split(None, 1)[1].strip() for line in out.splitlines())
    assert titles == ["pyngx: privileged agent process", "pyngx: worker process", "pyngx: worker process"]
    assert proc_title(d.master_pid).startswith("pyngx: master process")
    assert pid_alive(d.master_pid)


def test_the_agent_listens_on_nothing(daemon: object) -> None:
    d = daemon(CONF)  # type: ignore[operator]
    found = wait_until(lambda: (w := who(d.prefix, children(d.master_pid))) and len(w) == 3 and w, 10)
    agent = next(pid for pid, (kind, _, _) in found.items() if kind == "privileged agent")
    worker = next(pid for pid, (kind, _, _) in found.items() if kind == "worker")
    assert _listening_fds(worker) and not _listening_fds(agent)


def _listening_fds(pid: int) -> list[str]:
    """Socket inodes of PID that are TCP listeners (state 0A in /proc/net/tcp)."""
    listeners = set()
    with open("/proc/net/tcp") as f:
        for row in (line.split() for line in f.readlines()[1:]):
            if row[3] == "0A":
                listeners.add(row[9])
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listeners:
            out.append(target)
    return out
