"""process.*, ngx.worker.*, ngx.config.prefix, ngx.log: the process-facing API in one process."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyngx as ngx
from pyngx import log, process
from pyngx.errors import WrongContextError
from pyngx.runtime import core, phase


@pytest.fixture(autouse=True)
def record() -> Iterator[core.Process]:
    """A record of its own for each test; the previous one comes back afterwards."""
    previous = core.install(core.Process(core.state.MASTER))
    yield core.RT
    core.install(previous)


def test_enable_privileged_agent_only_in_init_by_python(record: core.Process) -> None:
    with pytest.raises(WrongContextError, match=r"process.enable_privileged_agent: API disabled in the context of"):
        process.enable_privileged_agent()
    token = phase.set(phase.INIT_WORKER)
    try:
        with pytest.raises(WrongContextError, match="init_worker_by_python"):
            process.enable_privileged_agent()
    finally:
        phase.reset(token)
    assert not record.want_agent
    token = phase.set(phase.INIT)
    try:
        process.enable_privileged_agent()
    finally:
        phase.reset(token)
    assert record.want_agent


def test_who_am_i() -> None:
    core.install(core.Process("worker", worker_id=1, worker_count=4, master_pid=1234, prefix="/srv/app"))
    assert process.type() == "worker" and process.get_master_pid() == 1234
    assert (ngx.worker.id(), ngx.worker.count(), ngx.worker.pid()) == (1, 4, os.getpid())
    assert ngx.config.prefix() == "/srv/app/"
    assert not ngx.worker.exiting()
    core.RT.exiting = True
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
