"""The harness of scripts/soak: a pyngx tree in a temporary prefix, its processes measured, clients.

Loopback only. Everything here is bounded: clients have timeouts, loops have
deadlines, the server is stopped by pid (TERM, then KILL to its session).
"""
from __future__ import annotations

import http.client
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import free_port, wait_until
from benchlib import http_get as get  # scripts/: the benchmarks' helpers serve the soak too

REPO = Path(__file__).resolve().parent.parent


# -- processes --

def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return sorted(out)


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class Sample:
    """RSS (bytes) and open fds of each process of the tree, by role (master, worker 0, agent)."""

    rss: dict[str, int] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)


# -- the server --

class Server:
    """pyngx from this tree in a temporary prefix; CONF has @PORT@ and @PREFIX@."""

    def __init__(self, conf: str, *, nofile: int | None = None) -> None:
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix="soak-"))
        for sub in ("conf", "logs", "lib"):
            (self.prefix / sub).mkdir()
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_conf(conf)

    def write_conf(self, conf: str) -> None:
        text = conf.replace("@PORT@", str(self.port)).replace("@PREFIX@", str(self.prefix))
        path = self.prefix / "conf" / "pyngx.conf"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def write_module(self, name: str, text: str) -> None:
        path = self.prefix / "lib" / f"{name}.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "daemon"), env.get("PYTHONPATH")]))
        return env

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "pyngx", "-p", str(self.prefix), "-c", "conf/pyngx.conf", *extra]

    def start(self, processes: int) -> Server:
        limit = self.nofile

        def limits() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        out = open(self.prefix / "logs" / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.command("-g", "daemon off;"), cwd=self.prefix, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env(),
                                     start_new_session=True, preexec_fn=limits)
        out.close()
        wait_until(lambda: self._check() and get(self.port, "/") is not None, 30, "pyngx to answer")
        wait_until(lambda: len(self.kids()) >= processes, 15, f"{processes} children")
        return self

    def _check(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"pyngx exited with {self.proc.returncode}: {self.log()[-2000:]}")
        return True

    @property
    def master(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kids(self) -> dict[int, str]:
        """pid -> role ("w0", "w1", ... by start order is not stable, so by title) of live children."""
        out = {}
        for pid in children(self.master):
            t = title(pid)
            if "shutting down" in t:
                continue
            if "worker process" in t:
                out[pid] = "worker"
            elif "privileged agent" in t:
                out[pid] = "agent"
        return out

    def sample(self) -> Sample:
        s = Sample()
        s.rss["master"], s.fds["master"] = rss(self.master), fds(self.master)
        n = 0
        for pid, role in sorted(self.kids().items(), key=lambda item: (item[1] == "agent", item[0])):
            key = role if role == "agent" else f"w{n}"
            n += role != "agent"
            s.rss[key], s.fds[key] = rss(pid), fds(pid)
        return s

    def pyngx(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), cwd=self.prefix, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def session(self) -> list[int]:
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields is not None and int(fields[3]) == self.master and fields[0] != "Z":
                    out.append(int(entry))
        return out

    def stop(self, keep: bool = False) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while self.session() and time.monotonic() < deadline:
                self.proc.poll()
                time.sleep(0.02)
            for pid in self.session():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        if not keep:
            shutil.rmtree(self.prefix, ignore_errors=True)


# -- clients --

class Load:
    """CLIENTS threads asking PATH over keep-alive connections until stopped; ON_ANSWER sees each body."""

    def __init__(self, port: int, path: str, clients: int, on_answer: Callable[[float, bytes], None] | None = None,
                 pause: float = 0.0) -> None:
        self.port, self.path, self.pause = port, path, pause
        self.on_answer = on_answer
        self.sent = self.ok = self.failed = 0
        self.slowest = 0.0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(10)

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self.done.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            t0 = time.monotonic()
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                good = resp.status == 200
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                # RFC 9112 §9.3.1: a reused connection closed under a GET may be retried once, on a new one
                body, good = b"", False
                if conn is not None:
                    conn.close()
                conn = None
            took = time.monotonic() - t0
            with self.lock:
                self.sent += 1
                self.slowest = max(self.slowest, took)
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
            if good and self.on_answer is not None:
                self.on_answer(t0, body)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


def exchange(port: int, data: bytes, shut: bool, timeout: float = 3.0) -> bytes | None:
    """Send DATA on a new connection (then half-close if SHUT) and read until EOF; None on timeout."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                out += chunk
    except ConnectionResetError:
        return b""
    except (TimeoutError, socket.timeout):
        return None
    except OSError:
        return b""


# -- hostile requests: (bytes, half-close after sending) --

def hostile(rng: random.Random) -> tuple[bytes, bool]:
    kind = rng.randrange(12)
    host = b"Host: soak\r\n"
    if kind == 0:  # a head cut short, then EOF
        full = b"GET /uri HTTP/1.1\r\n" + host + b"X-A: b\r\n\r\n"
        return full[:rng.randrange(1, len(full) - 1)], True
    if kind == 1:  # a body cut short, then EOF
        return b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: 100\r\n\r\n" + b"x" * rng.randrange(99), True
    if kind == 2:  # decoded bytes that are not UTF-8, written back by the handler
        return b"GET /uri%ff%c3?k%fe=v%fd HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", True
    if kind == 3:  # raw bytes >= 0x80 in the target
        return b"GET /uri/\xe9\xc3\xa9?x=\xff HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", True
    if kind == 4:  # random bytes
        return rng.randbytes(rng.randrange(1, 400)) + (b"\r\n\r\n" if rng.random() < 0.5 else b""), True
    if kind == 5:  # broken chunked
        size = rng.choice([b"zz", b"-1", b"ffffffffffffffffffff", b"5;" + b"e" * 300, b"3\r\nabcdef"])
        return b"POST /echo HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n0\r\n\r\n", True
    if kind == 6:  # a header flood: many headers or one huge one
        if rng.random() < 0.5:
            hdrs = b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(rng.randrange(100, 3000)))
        else:
            hdrs = b"X-Big: " + b"b" * rng.randrange(8000, 70000) + b"\r\n"
        return b"GET /uri HTTP/1.1\r\n" + host + hdrs + b"\r\n", True
    if kind == 7:  # request smuggling shapes
        return rng.choice([
            b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
            b"POST /echo HTTP/1.1\r\n" + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST /echo HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            b"POST /echo HTTP/1.1\r\n" + host + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
            b"GET /uri HTTP/1.1\r\n" + host + b"X-Fold: a\r\n b\r\n\r\n",
        ]), True
    if kind == 8:  # a pipelined burst
        one = b"GET /uri HTTP/1.1\r\n" + host + b"\r\n"
        return one * rng.randrange(2, 60) + b"GET /uri HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", True
    if kind == 9:  # bad versions and methods
        return rng.choice([b"GET / HTTP/9.9\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n", b"GET  HTTP/1.1\r\n\r\n",
                           b"GET /../../etc/passwd HTTP/1.1\r\n" + host + b"\r\n"]), True
    if kind == 10:  # a long target
        return b"GET /" + b"a" * rng.randrange(7000, 12000) + b" HTTP/1.1\r\n" + host + b"\r\n", True
    return b"GET /uri?a=1 HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", True  # a plain one among them
