"""Test helpers shared by the unit and end-to-end tests (no mocks of pyngx)."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BAD_LEVELS = ("[error]", "[alert]", "[crit]", "[emerg]")
# the type of the pipe and shell tests' ``run`` fixture (tests/unit/conftest.py)
Run = Callable[[Callable[[], Awaitable[object]]], object]


def ship_tour_files(prefix: Path) -> None:
    """What the default config reads beside itself, as in the repository: mime.types and html/."""
    import shutil

    shutil.copy(REPO / "conf" / "mime.types", prefix / "conf" / "mime.types")
    shutil.copytree(REPO / "html", prefix / "html", dirs_exist_ok=True)


def raw_exchange(port: int, data: bytes, shut: bool = True, timeout: float = 10) -> bytes:
    """Send DATA on a new loopback connection (then half-close when SHUT) and read until EOF or a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> Any:
    """Poll PRED until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def proc_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _stats() -> list[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                out.append((int(entry), f.read().rsplit(")", 1)[1].split()))
        except OSError:
            continue
    return out


def children(pid: int) -> list[int]:
    """Direct children of PID (from /proc), zombies included."""
    return sorted(p for p, fields in _stats() if int(fields[1]) == pid)


def session_pids(sid: int) -> list[int]:
    """Every live process of session SID."""
    return sorted(p for p, fields in _stats() if int(fields[3]) == sid and fields[0] != "Z")


class Daemon:
    """A real pyngx daemon in a temporary prefix, on a free loopback port.

    The config text may use @PORT@ (a free port), @PORT2@ and @PREFIX@.
    """

    def __init__(self, prefix: Path, conf: str, *, args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 daemon_off: bool = True) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.port2 = free_port()
        (prefix / "conf").mkdir(parents=True, exist_ok=True)
        (prefix / "logs").mkdir(exist_ok=True)
        self.conf_path = prefix / "conf" / "pyngx.conf"
        self.write_conf(conf)
        self.args = args
        self.env = env
        self.daemon_off = daemon_off
        self.proc: subprocess.Popen[bytes] | None = None
        self.sid: int | None = None
        self.expect_errors = False

    def render(self, conf: str) -> str:
        return conf.replace("@PORT@", str(self.port)).replace("@PORT2@", str(self.port2)).replace("@PREFIX@", str(self.prefix))

    def write_conf(self, conf: str) -> None:
        self.conf_path.write_text(self.render(conf))

    def command(self, *extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "pyngx", "-p", str(self.prefix), "-c", str(self.conf_path)]
        if self.daemon_off:
            cmd += ["-g", "daemon off;"]
        return cmd + list(self.args) + list(extra)

    def start(self, wait: bool = True) -> Daemon:
        env = dict(os.environ)
        env.update(self.env or {})
        self.stdout = open(self.prefix / "stdout.log", "wb")
        self.stderr = open(self.prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.prefix, stdout=self.stdout, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.sid = self.proc.pid
        if wait:
            self.wait_ready()
        return self

    @property
    def master_pid(self) -> int:
        if self.daemon_off:
            assert self.proc is not None
            return self.proc.pid
        return int(self.pid_file().read_text().strip())

    def pid_file(self) -> Path:
        return self.prefix / "logs" / "pyngx.pid"

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None and self.daemon_off:
                raise AssertionError(f"pyngx exited with {self.proc.returncode}: {self.stderr_text()}")
            return self.pid_file().exists() and self.answers()
        wait_until(ready, timeout, what="the daemon to answer")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                port: int | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> tuple[int, bytes]:
        status, _, body = self.request("GET", path, **kw)
        return status, body

    def signal(self, signo: int) -> None:
        os.kill(self.master_pid, signo)

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr_text(self) -> str:
        path = self.prefix / "stderr.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        return wait_until(lambda: text in self.error_log() and self.error_log(), timeout, what=f"log line {text!r}")

    def workers(self) -> list[int]:
        return [p for p in children(self.master_pid) if "worker process" in proc_title(p)]

    def pyngx(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run another pyngx command (-s, -t) against this prefix and config."""
        cmd = [sys.executable, "-m", "pyngx", "-p", str(self.prefix), "-c", str(self.conf_path), *args]
        return subprocess.run(cmd, cwd=self.prefix, capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        """Stop by pid: TERM to the master, then KILL to the whole session at a deadline."""
        if self.sid is None:
            return
        try:
            pid = self.master_pid
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
        deadline = time.monotonic() + 10
        while session_pids(self.sid) and time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()
            time.sleep(0.02)
        for pid in session_pids(self.sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for f in (getattr(self, "stdout", None), getattr(self, "stderr", None)):
            if f is not None:
                f.close()
        self.sid = None

    def assert_clean_log(self) -> None:
        bad = [ln for ln in self.error_log().splitlines() if any(level in ln for level in BAD_LEVELS)]
        assert not bad, "unexpected error lines:\n" + "\n".join(bad)


@contextlib.contextmanager
def as_runtime(loop: asyncio.AbstractEventLoop | None = None, kind: str = "worker",
               **fields: Any) -> Iterator[Any]:
    """This test process as a serving process: a fresh `core.Runtime` (FIELDS set on it) is
    the current record, and the previous one comes back afterwards (its parts are not started; without LOOP
    it gets a loop of its own, closed afterwards)."""
    from pyngx.runtime import core

    own = loop is None
    rt = core.Runtime(None, kind, loop or asyncio.new_event_loop())
    for name, value in fields.items():
        setattr(rt, name, value)
    previous = core.install(rt)
    try:
        yield rt
    finally:
        core.install(previous)
        if own:
            rt.loop.close()
