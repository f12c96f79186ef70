"""The master's words for a child's end, and its tables (no daemon needed)."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyngx import log
from pyngx.proc import master, spawn
from pyngx.proc.master import ChildInfo


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "error.log"
    saved = (log.error_log.path, log.error_log.level, log.error_log.fd)
    log.error_log.open(str(path), log.DEBUG)
    yield path
    fd = log.error_log.fd
    log.error_log.path, log.error_log.level, log.error_log.fd = saved
    os.close(fd)


def status_of(script: str) -> tuple[int, int]:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", script], dict(os.environ))
    return os.waitpid(pid, 0)


def test_killed_child_is_an_alert_with_the_signal(logfile: Path) -> None:
    pid, status = status_of("kill -9 $$")
    assert master.log_exit(ChildInfo(pid, "worker", 0, 1, 0.0), status) == -9
    assert f"[alert] {os.getpid()}#0: worker process {pid} exited on signal 9\n" in logfile.read_text()


def test_exit_codes(logfile: Path) -> None:
    pid, status = status_of("exit 0")
    assert master.log_exit(ChildInfo(pid, "privileged agent", None, 1, 0.0), status) == 0
    pid2, status2 = status_of(f"exit {spawn.FATAL}")
    assert master.log_exit(ChildInfo(pid2, "worker", 1, 1, 0.0), status2) == spawn.FATAL
    text = logfile.read_text()
    assert f"[notice] {os.getpid()}#0: privileged agent process {pid} exited with code 0" in text
    assert f"worker process {pid2} exited with fatal code 2 and cannot be respawned" in text


def test_every_handled_signal_has_an_action_in_the_fixed_order() -> None:
    assert set(master.SIGNALS.values()) == set(master.ORDER)
    assert master.ORDER.index("reap") < master.ORDER.index("terminate") < master.ORDER.index("quit")
    assert master.ORDER.index("quit") < master.ORDER.index("reload") < master.ORDER.index("reopen")
    assert master.SIGNALS[signal.SIGHUP] == "reload" and master.SIGNALS[signal.SIGUSR1] == "reopen"
