"""process.*, ngx.worker.*, ngx.config.prefix, ngx.log: the process-facing API in one process."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyngx as ngx
from pyngx import log, process
from pyngx.errors import WrongContextError
from pyngx.runtime import phase
from pyngx.runtime.state import STATE


@pytest.fixture(autouse=True)
def saved_state() -> Iterator[None]:
    saved = (STATE.type, STATE.worker_id, STATE.worker_count, STATE.master_pid, STATE.prefix, STATE.want_agent,
             STATE.exiting)
    yield
    (STATE.type, STATE.worker_id, STATE.worker_count, STATE.master_pid, STATE.prefix, STATE.want_agent,
     STATE.exiting) = saved


def test_enable_privileged_agent_only_in_init_by_python() -> None:
    with pytest.raises(WrongContextError, match=r"process.enable_privileged_agent: API disabled in the context of"):
        process.enable_privileged_agent()
    token = phase.set(phase.INIT_WORKER)
    try:
        with pytest.raises(WrongContextError, match="init_worker_by_python"):
            process.enable_privileged_agent()
    finally:
        phase.reset(token)
    STATE.want_agent = False
    token = phase.set(phase.INIT)
    try:
        process.enable_privileged_agent()
    finally:
        phase.reset(token)
    assert STATE.want_agent


def test_who_am_i() -> None:
    STATE.type, STATE.worker_id, STATE.worker_count, STATE.master_pid = "worker", 1, 4, 1234
    STATE.prefix = "/srv/app"
    assert process.type() == "worker" and process.get_master_pid() == 1234
    assert (ngx.worker.id(), ngx.worker.count(), ngx.worker.pid()) == (1, 4, os.getpid())
    assert ngx.config.prefix() == "/srv/app/"
    STATE.exiting = True
    assert ngx.worker.exiting()


def test_ngx_log_and_the_log_module_are_one(tmp_path: Path) -> None:
    assert ngx.log is log and callable(log)
    path = tmp_path / "error.log"
    saved = (log.error_log.path, log.error_log.level, log.error_log.fd)
    log.error_log.open(str(path), log.INFO)
    try:
        ngx.log(ngx.WARN, "a ", 1, " ", None, " ", True, b"x")
        ngx.log(ngx.DEBUG, "not shown at info")
        with pytest.raises(ValueError, match="bad log level"):
            ngx.log(42, "x")
    finally:
        fd = log.error_log.fd
        log.error_log.path, log.error_log.level, log.error_log.fd = saved
        os.close(fd)
    text = path.read_text()
    assert f"[warn] {os.getpid()}#0: [python] {__file__}:" in text
    assert "a 1 None Truex\n" in text and "not shown" not in text
