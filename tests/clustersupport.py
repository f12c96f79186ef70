"""Helpers of the cluster tests: a real redis-server, pyngx nodes joined to it, a cuttable TCP proxy."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from support import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """Debian's redis-server on a free loopback port, its data in DIR (kept across restarts)."""

    def __init__(self, directory: Path, *, tls: bool = False, password: str | None = None) -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        if tls:  # a self-signed certificate for 127.0.0.1
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-keyout", str(self.dir / "key.pem"),
                            "-out", str(self.dir / "cert.pem")], check=True, capture_output=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_cert_reqs=none"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
                "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]
        if self.tls:
            cert, key = str(self.dir / "cert.pem"), str(self.dir / "key.pem")
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", cert, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self.answers, 10, what="redis-server to answer")
        return self

    def answers(self) -> bool:
        if self.tls or self.password:
            try:
                return bool(self.client().ping())
            except Exception:  # noqa: BLE001 - not up yet
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


class Proxy:
    """A TCP proxy in a thread: ``cut()`` closes every connection and refuses new ones;
    ``freeze()`` keeps them open and drops every byte (a partition that sends no reset)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.open = True
        self.frozen = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            if self.frozen:
                with self.lock:
                    self.conns.append(client)  # accepted, never answered
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self.frozen:
                    b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def freeze(self) -> None:
        self.frozen = True

    def close(self) -> None:
        self.cut()
        self.sock.close()


NODE_CONF = """
error_log logs/error.log info;
worker_processes @WORKERS@;
worker_shutdown_timeout 5s;
events { worker_connections 256; }
http {
    python_shared_dict ev @ZONE@;
    python_cluster @URL@ name=t node=@NODE@ lease=@LEASE@ buffer=@BUFFER@;
    @RETENTION@
    init_by_python_block {
        from pyngx import process
        if @AGENT@:
            process.enable_privileged_agent()
    }
    init_worker_by_python_block {
        import os, time
        from pyngx import events, process
        me = os.getpid()
        kind = "agent" if process.type() == "privileged agent" else "worker"

        def append(path, line):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (line + "\\n").encode())
            finally:
                os.close(fd)

        def on_cluster(data, event, source, pid):
            append(ngx.config.prefix() + f"logs/seen-{me}.txt", f"{event} {data}")

        events.register(on_cluster, "c")
        events.configure("ev")
        append(ngx.config.prefix() + f"logs/seen-{me}.txt", f"joined {kind}")

        def job(premature):
            if not premature:
                append("@RUNS@", f"{time.time():.6f} @NODE@ {me} {ngx.timer.fencing_token('job')}")

        if @JOB@:
            ngx.timer.every(0.1, job, unique="job", scope="cluster")
    }
    server {
        listen 127.0.0.1:@PORT@;
        location /post {
            content_by_python_block {
                from pyngx import events
                n = int(ngx.var.arg_n or 1)
                tag = ngx.var.arg_tag or "x"
                for i in range(n):
                    events.post("c", ngx.var.arg_event or "e", f"{tag}{i}", unique=ngx.var.arg_unique, cluster=True)
                ngx.say("ok")
            }
        }
        location /trypost {
            content_by_python_block {
                from pyngx import events
                done = 0
                try:
                    for i in range(int(ngx.var.arg_n)):
                        events.post("c", "e", f"{ngx.var.arg_tag}{i}", cluster=True)
                        done += 1
                except ngx.Error as exc:
                    ngx.say(done, " ", exc)
                else:
                    ngx.say(done)
            }
        }
        location /hello {
            content_by_python_block {
                ngx.say("hello")
            }
        }
        location /status {
            pyngx_status;
        }
    }
}
"""


def node_conf(url: str, node: str, *, workers: int = 2, agent: bool = False, lease: str = "1s",
              retention: int | None = None, job: bool = False, runs: Path | None = None, buffer: int = 10000,
              zone: str = "8m") -> str:
    return (NODE_CONF.replace("@URL@", url).replace("@ZONE@", zone).replace("@NODE@", node)
            .replace("@WORKERS@", str(workers))
            .replace("@BUFFER@", str(buffer))
            .replace("@AGENT@", str(agent)).replace("@LEASE@", lease).replace("@JOB@", str(job))
            .replace("@RUNS@", str(runs or "/dev/null"))
            .replace("@RETENTION@", f"python_cluster_retention {retention};" if retention else ""))


def seen(prefix: Path) -> dict[str, list[str]]:
    """What each process of a node handled: file name -> lines (its 'joined' line first)."""
    out = {}
    for path in sorted((prefix / "logs").glob("seen-*.txt")):
        out[path.name] = path.read_text().splitlines()
    return out


def events_of(lines: list[str], event: str = "e") -> list[str]:
    return [ln.split(" ", 1)[1] for ln in lines if ln.startswith(event + " ")]
