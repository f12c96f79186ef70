"""``pyngx -s stop|quit|reload|reopen``: signal the master named by the pid file.

``reload`` then waits for the master's verdict (see `pidfile.write_verdict`):
0 when the new generation serves, 1 with the error when it was refused, 3
(`INIT_WORKER_FAILED`) with the errors when it serves but its
``init_worker_by_python`` raised in some process (OpenResty serves on then too).
nginx only logs a refused reload; a deploy script deserves the answer.
"""
from __future__ import annotations

import os
import signal
import time

from pyngx import log
from pyngx.conf.model import Config
from pyngx.proc import pidfile

SIGNALS = {
    "stop": signal.SIGTERM,
    "quit": signal.SIGQUIT,
    "reload": signal.SIGHUP,
    "reopen": signal.SIGUSR1,
}
VERDICT_TIMEOUT = 60.0
INIT_WORKER_FAILED = 3  # the exit code of -s reload when the new generation serves with init errors


def send(config: Config, signame: str) -> int:
    """Send SIGNAME to the master; returns the exit code (errors go to stderr)."""
    signo = SIGNALS.get(signame)
    if signo is None:
        return _fail(f'invalid option: "-s {signame}"')
    path = config.pid or os.path.join(config.prefix, "logs", "pyngx.pid")
    try:
        pid = pidfile.read(path)
    except pidfile.PidFileError as exc:
        return _fail(str(exc))
    why = pidfile.not_ours(pid, config.prefix)
    if why is not None:
        return _fail(f'{why}: the pid file "{path}" is stale, no signal sent')
    before = pidfile.read_verdict(path) if signame == "reload" else ""
    try:
        os.kill(pid, signo)
    except OSError as exc:
        return _fail(f"kill({pid}, {signo}) failed ({exc.errno}: {exc.strerror})")
    if signame != "reload":
        return 0
    return _wait_verdict(path, pid, before)


def _wait_verdict(path: str, pid: int, before: str) -> int:
    """Poll the verdict file until the master answers (it always does, within its own bound)."""
    deadline = time.monotonic() + VERDICT_TIMEOUT
    delay = 0.005
    while time.monotonic() < deadline:
        line = pidfile.read_verdict(path)
        if line != before:
            verdict = pidfile.parse_verdict(line, pid)
            if verdict is not None:
                status, message = verdict
                if status == pidfile.OK:
                    return 0
                if status == pidfile.INIT_FAILED:
                    _fail(f"reload: the new generation serves, but init_worker_by_python failed in {message}")
                    return INIT_WORKER_FAILED
                return _fail(f"reload failed: {message}", "emerg")
        if not pidfile.alive(pid):
            return _fail(f"master process {pid} exited during the reload")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return _fail(f"no answer from master process {pid} after {VERDICT_TIMEOUT:g}s")


def _fail(message: str, level: str = "error") -> int:
    log.stderr(f"pyngx: [{level}] {message}")
    return 1
