"""Shared harness of the side-by-side benchmarks (scripts/bench_*).

Starts and stops the servers under test in temporary prefixes — pyngx,
Debian's nginx with the lua module (OpenResty-style), uvicorn — each with its
whole process tree found from /proc; drives load with ``wrk``; reads the
servers' CPU time from /proc so that CPU per request can be compared even
though wrk shares the cores; alternates runs and prints medians and ratios.

    import benchlib
    pyngx = benchlib.Pyngx(conf_text, workers=1)        # {port} in the text
    nginx = benchlib.Nginx(http_block, workers=1)       # the inside of http { }
    results = benchlib.alternate([pyngx, nginx], lambda t: benchlib.wrk(t.url("/")), runs=5)
    benchlib.table(results, ["rps", "p99_ms", "cpu_us"], ratio_to="nginx+lua")
"""
from __future__ import annotations

import glob
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
NGINX_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
# what the references need, and the Debian package that brings it
REFERENCE = (
    ("nginx", "nginx"),
    (NGINX_MODULES[1], "libnginx-mod-http-lua"),
    ("/usr/share/lua/5.1/resty/core.lua", "lua-resty-core"),
    ("wrk", "wrk"),
)


# -- the machine --

def missing_reference(extra: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The Debian packages of the reference (nginx + lua module + lua-resty-core, wrk; EXTRA's
    (command or path, package) pairs) that are not installed."""
    return [pkg for what, pkg in (*REFERENCE, *extra)
            if not (glob.glob(what) if what.startswith("/") else shutil.which(what))]


def require_reference(extra: Sequence[tuple[str, str]] = ()) -> None:
    """Exit with what to install when the reference is missing: no benchmark installs anything itself."""
    missing = missing_reference(extra)
    if missing:
        sys.exit(f"the reference is not installed; install it first, e.g. (as root, on Debian or Ubuntu):\n"
                 f"    apt-get install {' '.join(missing)}")


# -- results for scripts/bench_all --

RESULTS_ENV = "PYNGX_BENCH_RESULTS"


def record(bench: str, measure: str, unit: str, pyngx: float, reference: str = "",
           ref_value: float | None = None, *, higher_is_better: bool) -> None:
    """Note one headline figure (pyngx and its reference, from the same run) for bench_all.

    A JSON line appended to the file named by $PYNGX_BENCH_RESULTS; nothing when it is unset.
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    import json
    row = {"bench": bench, "measure": measure, "unit": unit, "pyngx": pyngx, "reference": reference,
           "ref_value": ref_value, "higher_is_better": higher_is_better}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """PID and every live process below it."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                parent[int(entry)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of PIDS and of their reaped children."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- servers under test --

class Target:
    """A server in a temporary prefix: start(), url(), pids(), stop()."""

    name = "?"
    env: dict[str, str] = {}  # added to the environment the server starts with

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.port = free_port()
        self.prefix = Path(tempfile.mkdtemp(prefix=f"bench-{self.name.split('+')[0]}-"))
        (self.prefix / "logs").mkdir()
        (self.prefix / "conf").mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return f"{self.name} w={self.workers}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, path: str = "/") -> Target:
        out = open(self.prefix / "logs" / "stdout.log", "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.prefix, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **self.env} if self.env else None)
        out.close()
        wait_until(lambda: self._exited() or http_get(self.port, path), 20, f"{self.label} to answer")
        # every worker up: the tree stops growing
        wait_until(lambda: len(self.pids()) >= self.processes(), 10, f"{self.label} workers")
        return self

    def processes(self) -> int:
        """How many processes the tree has once every worker is up (master + workers)."""
        return self.workers + 1

    def _exited(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.prefix / "logs" / "stdout.log").read_text(errors="replace")
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{log}")
        return False

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc is not None else []

    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signo: int) -> None:
        os.kill(self.master_pid(), signo)

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = self.pids()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc = None
        shutil.rmtree(self.prefix, ignore_errors=True)


class Pyngx(Target):
    """pyngx from this tree; CONF is a whole config with {port} and {workers} placeholders."""

    name = "pyngx"

    def __init__(self, conf: str, workers: int = 1) -> None:
        super().__init__(workers)
        text = conf.replace("{port}", str(self.port)).replace("{workers}", str(workers))
        (self.prefix / "conf" / "pyngx.conf").write_text(text)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pyngx", "-p", str(self.prefix), "-c", "conf/pyngx.conf", "-g", "daemon off;"]


class PyngxPython(Pyngx):
    """The same pyngx with its C path of plain requests off (PYNGX_HTTP_PURE=1): every request in Python."""

    name = "pyngx-python"
    env = {"PYNGX_HTTP_PURE": "1"}


NGINX_MAIN = """
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes {workers};
error_log logs/error.log warn;
pid logs/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    lua_package_path "/usr/share/lua/5.1/?.lua;;";
    access_log off;
{http}
}}
"""


class Nginx(Target):
    """Debian's nginx with the lua module; HTTP is the inside of ``http {}`` with {port}.

    lua-resty-core is what OpenResty loads by default; the Debian module needs
    it on the package path (it loads ``resty.core`` at start itself).
    """

    name = "nginx+lua"

    def __init__(self, http: str, workers: int = 1) -> None:
        super().__init__(workers)
        body = http.replace("{port}", str(self.port))
        text = NGINX_MAIN.format(workers=workers, http=body)
        (self.prefix / "conf" / "nginx.conf").write_text(text)

    def command(self) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-c", "conf/nginx.conf", "-e", "logs/error.log",
                "-g", "daemon off;"]


UVICORN_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"6")]})
    await send({"type": "http.response.body", "body": b"hello\\n"})
'''


class Uvicorn(Target):
    """uvicorn with a raw ASGI app (httptools + uvloop, no access log)."""

    name = "uvicorn"

    def __init__(self, app: str = UVICORN_APP, workers: int = 1) -> None:
        super().__init__(workers)
        (self.prefix / "benchapp.py").write_text(app)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "uvicorn", "benchapp:app", "--host", "127.0.0.1", "--port", str(self.port),
               "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
        return cmd + (["--workers", str(self.workers)] if self.workers > 1 else [])

    def processes(self) -> int:
        return 1 if self.workers == 1 else self.workers + 1


# -- load --

@dataclass
class Run:
    rps: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    non2xx: int = 0
    cpu_us: float = 0.0  # server CPU per request
    extra: dict[str, float] = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, *, duration: float = 5, connections: int = 50, threads: int = 1,
        target: Target | None = None, during: Callable[[float], None] | None = None,
        extra: Sequence[str] = ()) -> Run:
    """One wrk run against URL; with TARGET, its CPU per request; DURING(elapsed) runs every
    0.1 s while wrk does (e.g. send a HUP every second); EXTRA: more wrk arguments (-H ...)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", *extra, url]
    before = cpu_seconds(target.pids()) if target else 0.0
    pids_before = target.pids() if target else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if during is not None:
        start = time.monotonic()
        while proc.poll() is None:
            during(time.monotonic() - start)
            time.sleep(0.1)
    out, _ = proc.communicate()
    run = parse_wrk(out)
    if target is not None and run.requests:
        # processes that exited during the run (old workers after a HUP) are counted in
        # their parent's cutime/cstime once reaped
        after = cpu_seconds(set(target.pids()) | set(pids_before))
        run.cpu_us = (after - before) / run.requests * 1e6
    return run


def parse_wrk(out: str) -> Run:
    run = Run()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"wrk failed:\n{out}")
    run.rps = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    run.requests = int(m.group(1)) if m else 0
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    if m:
        run.p99_ms = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        run.errors = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    run.non2xx = int(m.group(1)) if m else 0
    return run


def alternate(targets: Sequence[Target], measure: Callable[[Target], Run], runs: int = 5,
              warmup: Callable[[Target], Any] | None = None) -> dict[str, list[Run]]:
    """RUNS rounds; each round measures every target, in an order that alternates between
    rounds, so a noisy neighbour hurts each server alike."""
    results: dict[str, list[Run]] = {t.label: [] for t in targets}
    if warmup is not None:
        for t in targets:
            warmup(t)
    for i in range(runs):
        order = list(targets) if i % 2 == 0 else list(reversed(targets))
        for t in order:
            run = measure(t)
            results[t.label].append(run)
            print(f"  run {i + 1}/{runs} {t.label:<18} {run.rps:>9.0f} req/s  p99 {run.p99_ms:6.2f} ms"
                  f"  cpu {run.cpu_us:5.1f} us/req  errors {run.errors}", file=sys.stderr)
    return results


def median(runs: Sequence[Run], attr: str) -> float:
    values = [getattr(r, attr) if hasattr(r, attr) else r.extra.get(attr, 0.0) for r in runs]
    return statistics.median(values) if values else 0.0


def table(results: dict[str, list[Run]], columns: Sequence[str], ratios: Sequence[tuple[str, str]] = ()) -> str:
    """Medians per target, then for each (a, b) in RATIOS the ratio a/b of every column."""
    lines = [f"{'server':<20}" + "".join(f"{c:>12}" for c in columns)]
    for label, runs in results.items():
        lines.append(f"{label:<20}" + "".join(f"{median(runs, c):>12.2f}" for c in columns))
    for a, b in ratios:
        if a in results and b in results:
            cells = []
            for c in columns:
                den = median(results[b], c)
                cells.append(f"{(median(results[a], c) / den if den else float('nan')):>12.2f}")
            lines.append(f"{(a.split()[0] + '/' + b.split()[0] + ' ' + a.split()[-1]):<20}" + "".join(cells))
    text = "\n".join(lines)
    print(text)
    return text


def stop_all(targets: Iterable[Target]) -> None:
    for t in targets:
        try:
            t.stop()
        except Exception as exc:  # noqa: BLE001 - stop the others anyway
            print(f"stopping {t.label}: {exc}", file=sys.stderr)
