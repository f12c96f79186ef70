"""The default config, conf/pyngx.conf, boots as it is and every stop of its tour answers."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from support import REPO, Daemon, free_port, ship_tour_files, wait_until


def _tour(daemon: Callable[..., Daemon]) -> Daemon:
    text = (REPO / "conf" / "pyngx.conf").read_text()
    # loopback only by default: the tour's /shell, /pipe and /status are not for the network
    assert "listen 127.0.0.1:8080;" in text and "listen 8080;" not in text.replace("(listen 8080;)", "")
    # The only change: a free loopback port instead of 8080.
    d = daemon(text.replace("listen 127.0.0.1:8080;", "listen 127.0.0.1:@PORT@;"), start=False)
    _shipped_files(d)
    return d.start()


def _shipped_files(d: Daemon) -> None:
    ship_tour_files(d.prefix)


def test_default_config_passes_t(daemon: Callable[..., Daemon]) -> None:
    text = (REPO / "conf" / "pyngx.conf").read_text()
    d = daemon(text, start=False)
    _shipped_files(d)
    r = d.pyngx("-t")
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr


def test_default_config_tour_answers(daemon: Callable[..., Daemon]) -> None:
    d = _tour(daemon)

    def all_ready() -> bool:
        procs = json.loads(d.get("/status")[1])["processes"]
        return len(procs) == 3 and all(p["ready"] for p in procs)
    wait_until(all_ready, what="two workers and the agent to be ready")

    # print() in init_worker: a notice line per process in the error log, tagged with its line
    assert len(re.findall(r"\[notice\] \d+#0: \[python\] \S+pyngx\.conf:\d+: (?:worker|privileged agent) \d+ starting",
                          d.error_log())) == 3

    status, body = d.get("/hello")
    assert (status, body) == (200, b"hello\n")

    status, body = d.get("/hello/you")
    assert status == 200 and body.startswith(b"hello, you (worker ")

    status, body = d.get("/whoami")
    assert status == 200 and body.startswith(b"worker ") and f"master {d.master_pid}".encode() in body

    hits = [json.loads(d.get("/counter")[1])["hits"] for _ in range(5)]
    assert hits == sorted(hits) and hits[-1] - hits[0] == 4

    status, body = d.get("/ipc")
    assert status == 200
    lines = body.decode().splitlines()
    assert len(lines) == 3, lines  # two workers and the agent replied
    assert sum("privileged agent" in line for line in lines) == 1
    status, body = d.get("/ask")
    assert status == 200 and body.startswith(b"privileged agent ") and body.endswith(b" got a question\n")

    def events_seen() -> list[str]:
        return re.findall(r"handled (\d+) events", d.get("/events")[1].decode())
    assert len(wait_until(lambda: len(events_seen()) == 3 and events_seen(), what="3 processes handling events")) == 3

    status, body = d.get("/pipe")
    assert status == 200 and b"uname says Linux" in body and b"(exit 0)" in body

    assert d.get("/shell") == (200, b"a\nb\nc\n(exit 0)\n")

    status, body = d.get("/offload")
    assert status == 200 and b"sha256 of 1 MiB: 8f990ba0b577b51c" in body
    status, body = d.get("/block")
    assert status == 200 and b"blocked worker" in body
    d.wait_log("ran again after a stall of")
    assert re.search(r"\[warn\] .* blocked for .* in content_by_python of location = /block at .*pyngx.conf:\d+",
                     d.error_log())
    status, body = d.get("/stalls")
    assert status == 200 and re.search(rb"worker \d+: 1 stalls, longest 0\.[23]", body), body

    status, _, body = d.request("POST", "/echo?a=1&b", body=b"xyz")
    assert status == 200 and body == b"POST 3 bytes, args {'a': '1', 'b': True}\n"
    status, _, _ = d.request("POST", "/echo", body=b"x" * 70000)
    assert status == 413

    assert d.get("/private")[0] == 403  # the access phase refuses without the token
    # the log phase ran after the 403 was sent, and runs after each answer: the counts grow (an
    # answer is out before its log phase runs, so a next request on the other worker may see one less)
    counts = []

    def logged() -> bool:
        status, body = d.get("/private?token=letmein")
        assert status == 200 and body.startswith(b"welcome; requests logged here so far: ")
        counts.append(int(body.rsplit(b" ", 1)[1]))
        return counts[-1] >= 3

    wait_until(logged, what="the log phase counting each answer")
    assert counts == sorted(counts)
    status, headers, _ = d.request("GET", "/old")
    assert status == 301 and headers["location"].endswith("/hello")

    # static files: root, alias + try_files with a named location
    page = (REPO / "html" / "index.html").read_bytes()
    status, headers, body = d.request("GET", "/index.html")
    assert (status, body, headers["content-type"]) == (200, page, "text/html") and headers["etag"]
    status, _, _ = d.request("GET", "/index.html", headers={"If-None-Match": headers["etag"]})
    assert status == 304
    assert d.request("GET", "/style.css", headers={"Range": "bytes=0-3"})[2] == b"body"
    assert d.get("/files/") == (200, page)
    assert d.get("/files/nothing") == (404, b"no such file: /files/nothing\n")

    wait_until(lambda: b"loadavg (from the agent): None" not in d.get("/timer")[1], what="the agent's job")
    wait_until(lambda: re.search(rb"ticks: [1-9]", d.get("/timer")[1]), what="the unique timer")

    status, body = d.get("/status")
    assert status == 200
    data = json.loads(body)
    kinds = sorted(p["type"] for p in data["processes"])
    assert kinds == ["privileged agent", "worker", "worker"]
    assert data["http_all"]["requests"] >= data["http"]["requests"]["total"]
    # every worker's requests are in http_all once published (one 0.5 s tick)
    wait_until(lambda: json.loads(d.get("/status")[1])["http_all"]["requests"] >= 10, 5,
               what="the tour's requests in http_all")
    status, body = d.get("/status?format=prometheus")
    assert status == 200 and b"pyngx_" in body

    d.signal(signal.SIGQUIT)
    assert d.proc is not None
    d.proc.wait(timeout=30)
    assert d.proc.returncode == 0
    assert (d.prefix / "logs" / "sessions.zone").exists()  # persist= saved on graceful stop


def test_the_readme_s_first_line_runs_in_a_fresh_clone(tmp_path: Path) -> None:
    """`pyngx -p . -c conf/pyngx.conf -g 'daemon off;'` in a clone: the directories the
    default config writes into ship with the repository (the Daemon helper would make them)."""
    readme = (REPO / "README.md").read_text()
    assert "pyngx -p . -c conf/pyngx.conf -g 'daemon off;'" in readme.split("\n```", 2)[1].splitlines()[1]
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=60)
    conf = clone / "conf" / "pyngx.conf"
    port = free_port()
    conf.write_text(conf.read_text().replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{port};"))
    with open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "pyngx", "-p", ".", "-c", "conf/pyngx.conf",
                                 "-g", "daemon off;"], cwd=clone, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        def answers() -> bytes | None:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=2) as resp:
                    return resp.read()  # type: ignore[no-any-return]
            except OSError:
                return None
        assert wait_until(answers, 15, interval=0.05, what="the daemon in the clone") == b"hello\n"
        assert (clone / "logs" / "pyngx.pid").read_text().strip() == str(proc.pid)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGQUIT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert proc.returncode == 0
    assert "[error]" not in (clone / "logs" / "error.log").read_text()
